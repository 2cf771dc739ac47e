"""``restore_drill``: a thin wrapper over lib.restore.drill."""

import dagster as dg

from orchestration_pipeline.defs.audit.assets import audit_ledger_integrity, decision_execution_summary
from orchestration_pipeline.defs.index.assets import qdrant_index_state
from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.projection.assets import projection_drift_report
from orchestration_pipeline.defs.resources import OrchestrationDatabase, TasksDatabase, VectorIndexResource
from orchestration_pipeline.defs.restore.resources import RestoreSettings
from orchestration_pipeline.lib.restore.drill import DrillOptions, DrillResult, run_drill
from orchestration_pipeline.lib.restore.tools import tool_origin_for
from orchestration_pipeline.settings import load_settings


def _metadata(result: DrillResult) -> dict:
    """The verdict as materialization metadata: the headline values typed, the whole verdict as JSON."""
    body = result.as_dict()
    return {
        "pass": body["pass"],
        "state": body["state"],
        "backup_id": body["backup_id"] or "",
        "rto_s": dg.MetadataValue.float(float(body["rto_s"] or 0.0)),
        "rpo_s": dg.MetadataValue.float(float(body["rpo_s"] or 0.0)),
        "phases": dg.MetadataValue.json(body["phases"]),
        "checks": dg.MetadataValue.json(
            [{k: c[k] for k in ("name", "passed", "blocking", "detail")} for c in body["checks"]]
        ),
        "verdict": dg.MetadataValue.json(body),
    }


@dg.asset(
    group_name="durability",
    kinds={"postgres"},
    # what the backup holds, and its checks hash: after these when they run together
    deps=[
        raw_events,
        projection_drift_report,
        audit_ledger_integrity,
        decision_execution_summary,
        qdrant_index_state,
    ],
    description="A fresh pg_dump of the orchestration DB with its manifest, restored into a scratch "
    "database the drill creates, verified against the manifest (migrations, row counts, content "
    "hashes, audit chains, projection vs the Tasks DB, the outbox, a health query), then dropped. "
    "The verdict, with the RTO and RPO, goes to restore_drills and this materialization.",
)
def restore_drill(
    context: dg.AssetExecutionContext,
    orchestration_db: OrchestrationDatabase,
    tasks_db: TasksDatabase,
    vector_index: VectorIndexResource,
    restore_settings: RestoreSettings,
) -> dg.MaterializeResult:
    dsn = orchestration_db.dsn
    opts = DrillOptions(
        source_dsn=dsn,
        tasks_dsn=tasks_db.dsn,
        backup_dir=restore_settings.backups_path(),
        tool_origin=tool_origin_for(dsn, embedded=load_settings().points_at_embedded(dsn)),
        pg_bin=restore_settings.pg_bin,
        keep=restore_settings.keep_scratch,
        jobs=restore_settings.restore_jobs,
        grace_minutes=restore_settings.grace_minutes,
        health_timeout_s=restore_settings.health_timeout_s,
        open_index=vector_index.runtime().open,
        created_by=f"automation:dagster:{context.run.run_id}",
        progress=lambda phase: context.log.info(f"restore drill: {phase}"),
    )
    result = run_drill(opts)
    context.log.info(result.summary())
    if result.state == "error":
        raise dg.Failure(description=result.summary(), metadata=_metadata(result))
    return dg.MaterializeResult(metadata=_metadata(result))
