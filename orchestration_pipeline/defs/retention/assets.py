"""``event_archives`` and ``event_purge``: one UTC day of events and metrics per partition."""

from datetime import date, timedelta

import dagster as dg

from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.defs.retention.resources import RetentionSettings
from orchestration_pipeline.lib.retention.run import Identity, RunReport, run_retention, today_utc

#: One partition per UTC day; days before the first partitions of events (2025) hold nothing.
RETENTION_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC")
#: The nightly run archives one more day; a day without a fresh archive warns, two fail.
ARCHIVE_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=50), warn_window=timedelta(hours=26)
)


class PurgeConfig(dg.Config):
    dry_run: bool = False  # re-check the day against its archive and report, dropping nothing


def _days(context: dg.AssetExecutionContext, settings: RetentionSettings) -> list[date] | None:
    """The run's day (it must be past the window), or None in a run without a partition (the
    implicit asset job executed in process): then every due day."""
    if not context.has_partition_key:
        return None
    day = date.fromisoformat(context.partition_key)
    policy = settings.policy()
    if not policy.is_due(day, today_utc()):
        raise dg.Failure(
            description=f"{day} is inside the {policy.archive_days}-day archive window (days before "
            f"{policy.due_before(today_utc())} are due): it is archived once it is past it"
        )
    return [day]


def _identity(context: dg.AssetExecutionContext) -> Identity:
    return Identity("automation:dagster", context.run.run_id)


def _metadata(report: RunReport) -> dict:
    """Counts by outcome, and per day (the first 100) its outcome and steps."""
    body = report.as_dict()
    days = body["days"][:100]
    return {
        "outcome_counts": dg.MetadataValue.json(body["outcomes"]),
        "outcomes": dg.MetadataValue.json({f"{d['table']} {d['day']}": d["outcome"] for d in days}),
        "rows": dg.MetadataValue.int(sum(d["rows"] or 0 for d in body["days"])),
        "manifests": dg.MetadataValue.json([d["manifest_id"] for d in days if d["manifest_id"]]),
        "steps": dg.MetadataValue.json({f"{d['table']} {d['day']}": d["steps"] for d in days}),
        "notes": dg.MetadataValue.json(report.notes),
    }


@dg.asset(
    group_name="retention",
    kinds={"postgres", "parquet"},
    deps=[raw_events],
    partitions_def=RETENTION_PARTITIONS,
    freshness_policy=ARCHIVE_FRESHNESS,
    description="One UTC day of events and metrics, past the archive window, exported to zstd Parquet "
    "under $ORCH_HOME/archive/<table>/<date>.parquet, read back and verified (row count, content "
    "hash, file sha256) against its manifest in archive_manifests.",
)
def event_archives(
    context: dg.AssetExecutionContext,
    orchestration_db: OrchestrationDatabase,
    retention_settings: RetentionSettings,
) -> dg.MaterializeResult:
    days = _days(context, retention_settings)
    with orchestration_db.connection() as conn:
        report = run_retention(
            conn, retention_settings.policy(), _identity(context), days=days, archive_only=True
        )
    for entry in report.days:
        context.log.info(f"{entry.table} {entry.day}: {entry.outcome} — {'; '.join(entry.steps)}")
    return dg.MaterializeResult(metadata=_metadata(report))


@dg.asset(
    group_name="retention",
    kinds={"postgres"},
    deps=[event_archives],
    partitions_def=RETENTION_PARTITIONS,
    description="The day's partitions of events and metrics dropped after their verified archive, "
    "re-checked against the live rows first (audited). Only with ORCH_RETENTION_PURGE=on; otherwise "
    "the day is reported as one that would be purged.",
)
def event_purge(
    context: dg.AssetExecutionContext,
    config: PurgeConfig,
    orchestration_db: OrchestrationDatabase,
    retention_settings: RetentionSettings,
) -> dg.MaterializeResult:
    days = _days(context, retention_settings)
    with orchestration_db.connection() as conn:
        report = run_retention(
            conn, retention_settings.policy(), _identity(context), days=days, dry_run=config.dry_run
        )
    for entry in report.days:
        context.log.info(f"{entry.table} {entry.day}: {entry.outcome} — {'; '.join(entry.steps)}")
    if report.failed:
        shown = "; ".join(f"{d.table}: {d.error}" for d in report.failed)
        raise dg.Failure(description=f"not purged: {shown}", metadata=_metadata(report))
    return dg.MaterializeResult(metadata={**_metadata(report), "purge_enabled": report.purge_enabled})
