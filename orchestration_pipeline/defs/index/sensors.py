"""The index jobs: a sensor syncs the outbox when it has pending rows; a nightly schedule reconciles."""

import dagster as dg

from orchestration_pipeline.defs.index.assets import decision_index_sync, qdrant_index_state
from orchestration_pipeline.defs.resources import IndexSettings, OrchestrationDatabase
from orchestration_pipeline.lib.index.outbox import backlog

index_sync_job = dg.define_asset_job(
    "index_sync_job",
    selection=dg.AssetSelection.assets(decision_index_sync),
    description="Carry the pending search outbox rows into the vector index.",
)

index_reconcile_job = dg.define_asset_job(
    "index_reconcile_job",
    selection=dg.AssetSelection.assets(decision_index_sync, qdrant_index_state),
    description="Sync the outbox, then reconcile the vector index against the decisions and repair drift.",
)

# The sensor syncs within 30 s of a pending row; this backstop covers a sensor that was off.
quarter_hourly_index_sync = dg.ScheduleDefinition(
    name="quarter_hourly_index_sync",
    job=index_sync_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Carry pending outbox rows into the index every 15 minutes (the sensor's backstop).",
)

nightly_index_reconcile = dg.ScheduleDefinition(
    name="nightly_index_reconcile",
    job=index_reconcile_job,
    cron_schedule="45 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Reconcile the vector index against the decisions every night at 02:45 UTC.",
)


@dg.sensor(job=index_sync_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def index_outbox_sensor(
    orchestration_db: OrchestrationDatabase, index_settings: IndexSettings
) -> dg.RunRequest | dg.SkipReason:
    """Sync when the outbox has pending rows (due or not): one run at a time per backlog state."""
    with orchestration_db.connection() as conn:
        pending = backlog(conn)
    if pending.pending < index_settings.sync_sensor_min_pending:
        return dg.SkipReason("the search outbox has no pending rows")
    if pending.leased >= pending.pending:
        return dg.SkipReason(f"all {pending.pending} pending rows are leased by a running sync")
    return dg.RunRequest(
        run_key=f"outbox-{pending.pending}-{round(pending.oldest_age_s)}",
        tags={"outbox_pending": str(pending.pending)},
    )
