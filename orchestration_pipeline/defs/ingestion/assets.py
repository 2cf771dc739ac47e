"""``raw_events``: ingest whatever is new in the landing directory, exactly once."""

import dagster as dg

from orchestration_pipeline.defs.resources import IngestionSettings, OrchestrationDatabase, PipelineHome
from orchestration_pipeline.defs.schema.assets import orchestration_schema
from orchestration_pipeline.lib.ingestion.ingest import Ingestor, describe_progress


class RawEventsConfig(dg.Config):
    paths: list[str] = []  # default: the landing directory


@dg.asset(
    group_name="ingestion",
    kinds={"postgres"},
    deps=[orchestration_schema],
    description="Events from JSON-lines files in $ORCH_HOME/landing, ingested exactly once; bad lines quarantined.",
)
def raw_events(
    context: dg.AssetExecutionContext,
    config: RawEventsConfig,
    orchestration_db: OrchestrationDatabase,
    pipeline_home: PipelineHome,
    ingestion_settings: IngestionSettings,
) -> dg.MaterializeResult:
    landing = pipeline_home.landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    paths = config.paths or [str(landing)]

    with orchestration_db.connection() as conn:
        summary = Ingestor(
            conn,
            batch_rows=ingestion_settings.batch_rows,
            progress=lambda info: context.log.info(describe_progress(info)),
            source="dagster.raw_events",
        ).ingest_paths(paths)
    body = summary.as_dict()
    for item in body["unreadable_files"]:
        context.log.warning(f"not ingested, cannot be read: {item['path']}: {item['error']}")
    for source, words in body["unknown_status_words"].items():
        shown = ", ".join(f"{word!r} ({n})" for word, n in words.items())
        context.log.info(
            f"status words of {source} without a meaning: {shown} — map them in ORCH_STATUS_SYNONYMS"
        )
    telemetry = body["telemetry"]
    return dg.MaterializeResult(
        metadata={
            "run_id": body["run_id"],
            "files": dg.MetadataValue.int(body["files"]),
            "skipped_files": dg.MetadataValue.int(body["skipped_files"]),
            "unreadable_files": dg.MetadataValue.json(body["unreadable_files"]),
            "lines": dg.MetadataValue.int(body["lines"]),
            "accepted": dg.MetadataValue.int(body["accepted"]),
            "quarantined": dg.MetadataValue.int(body["quarantined"]),
            "duplicates": dg.MetadataValue.int(body["duplicates"]),
            "collapsed": dg.MetadataValue.int(body["collapsed"]),
            "redactions": dg.MetadataValue.int(body["redactions"]),
            # {rule id: redactions}: which secrets the producers leak (lib/redaction/rules.toml)
            "redactions_by_rule": dg.MetadataValue.json(body["redactions_by_rule"]),
            "quarantine_by_type": dg.MetadataValue.json(body["quarantine_by_type"]),
            # {source: {word: lines}}: status words the synonym map does not know, to extend it with
            "unknown_status_words": dg.MetadataValue.json(body["unknown_status_words"]),
            "ParseDuration_ms": dg.MetadataValue.float(float(telemetry["ParseDuration_ms"]["total"])),
            "RowsWritten": dg.MetadataValue.int(telemetry["RowsWritten"]),
            "SkippedDuplicate": dg.MetadataValue.int(telemetry["SkippedDuplicate"]),
            "DatabaseWriteLatency_p95_ms": dg.MetadataValue.float(
                float(telemetry["DatabaseWriteLatency_p95_ms"])
            ),
            "lines_per_s": dg.MetadataValue.int(body["lines_per_s"] or 0),
        }
    )
