"""``retention_job``, started nightly for the day that just became due, and by ``retention_sensor``
for any due day still waiting (a backlog, a failed night, purging just turned on)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.defs.retention.assets import RETENTION_PARTITIONS, event_archives, event_purge
from orchestration_pipeline.defs.retention.resources import RetentionSettings
from orchestration_pipeline.lib.retention.run import today_utc
from orchestration_pipeline.lib.retention.schedule import days_waiting

retention_job = dg.define_asset_job(
    "retention_job",
    selection=dg.AssetSelection.assets(event_archives, event_purge),
    description="Archive and verify one day of events and metrics, then purge it when enabled.",
)


@dg.schedule(
    job=retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 03:30 UTC: archive (and, when enabled, purge) the day that just "
    "passed the archive window.",
)
def nightly_retention(context: dg.ScheduleEvaluationContext, retention_settings: RetentionSettings):
    """The day that passed the archive window at this tick (older ones are the sensor's)."""
    policy = retention_settings.policy()
    tick = (context.scheduled_execution_time or datetime.now(UTC)).date()
    day = policy.due_before(tick) - timedelta(days=1)
    if day < RETENTION_PARTITIONS.start.date():
        return dg.SkipReason(f"{day} is before the first retention partition")
    return dg.RunRequest(run_key=f"nightly-{day.isoformat()}", partition_key=day.isoformat())


_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(job=retention_job, minimum_interval_seconds=3600, default_status=dg.DefaultSensorStatus.RUNNING)
def retention_sensor(
    context: dg.SensorEvaluationContext,
    orchestration_db: OrchestrationDatabase,
    retention_settings: RetentionSettings,
) -> dg.SensorResult | dg.SkipReason:
    """Request a run for each day past the window that still waits — a partition without a verified
    archive, or a verified one while ORCH_RETENTION_PURGE is on — oldest first, a few at a time,
    each day at most once a day (so a day that keeps failing is retried daily, not hourly)."""
    policy = retention_settings.policy()
    today = today_utc()
    with orchestration_db.connection() as conn:
        waiting = days_waiting(conn, policy, today)
    running = {
        record.dagster_run.tags.get("dagster/partition")
        for record in context.instance.get_run_records(
            filters=dg.RunsFilter(job_name=retention_job.name, statuses=_IN_FLIGHT)
        )
    }
    first = RETENTION_PARTITIONS.start.date()
    waiting = [w for w in waiting if w.day >= first and w.day.isoformat() not in running]
    if not waiting:
        return dg.SkipReason("no day past the archive window is waiting")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"retention-{w.day.isoformat()}-{w.state}-{today.isoformat()}",
                partition_key=w.day.isoformat(),
                tags={"retention_state": w.state},
            )
            for w in waiting[: retention_settings.sensor_max_days]
        ]
    )
