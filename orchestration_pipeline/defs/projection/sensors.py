"""The reconciliation job, its nightly schedule, and ``projection_lag_sensor``."""

import dagster as dg

from orchestration_pipeline.defs.projection.assets import projection_drift_report, task_projection
from orchestration_pipeline.defs.resources import OrchestrationDatabase, ProjectionSettings
from orchestration_pipeline.lib.projection.drift import reconciliation_due

reconciliation_job = dg.define_asset_job(
    "reconciliation_job",
    selection=dg.AssetSelection.assets(task_projection, projection_drift_report),
    description="Catch the task projection up with events, then reconcile it against the Tasks DB.",
)

nightly_reconciliation = dg.ScheduleDefinition(
    name="nightly_reconciliation",
    job=reconciliation_job,
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Reconcile task_projection against the Tasks DB every night at 02:30 UTC.",
)


@dg.sensor(job=reconciliation_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def projection_lag_sensor(
    orchestration_db: OrchestrationDatabase, projection_settings: ProjectionSettings
) -> dg.RunRequest | dg.SkipReason:
    """Reconcile when the projection lags behind ingestion, or when the last report showed drift."""
    with orchestration_db.connection() as orch:
        due = reconciliation_due(orch, lag_threshold=projection_settings.lag_threshold_events)
    if due is None:
        return dg.SkipReason("projection within its lag threshold and the last report showed no drift")
    return dg.RunRequest(run_key=due.run_key, tags={"reconcile_reason": due.reason[:200]})
