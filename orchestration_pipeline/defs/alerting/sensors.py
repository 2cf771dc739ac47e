"""The alerting sensors: failed asset checks, stale assets and failed runs, each told once.

In open-source Dagster a failed non-blocking check leaves its run green, so a run-failure sensor
never sees it; these sensors read the event log instead. Each keeps a cursor (the last storage id
it read), turns what it read into observations (lib.alerting.sources), folds them into one streak
per source in the orchestration DB (lib.alerting.streaks: one alert per failure streak, one
"resolved" notice when it passes again), then delivers the pending notices to the webhook and
stderr (lib.alerting.delivery). None of them launches a run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg

from orchestration_pipeline.defs.alerting.events import (
    check_evaluation,
    freshness_change,
    read_event_log,
    run_failure,
    run_selection,
)
from orchestration_pipeline.defs.alerting.resources import AlertSettings
from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.alerting.delivery import deliver_pending
from orchestration_pipeline.lib.alerting.model import DEFAULT_THRESHOLD, Observation
from orchestration_pipeline.lib.alerting.sources import (
    check_observation,
    covered_by_checks,
    freshness_observation,
    run_failure_observation,
    run_source,
    run_success_observation,
)
from orchestration_pipeline.lib.alerting.streaks import apply_observations, open_sources

#: On a run-sharded event log (Dagster's default SQLite), the runs updated this long before the
#: previous tick are read again, so that no event written while that tick ran is missed.
RESCAN_S = 300.0


def read_cursor(cursor: str | None) -> dict | None:
    """Where the last tick stopped: the storage id of the last event read, and when that tick ran
    (``runs_updated_after``, what a run-sharded storage reads from); None before the first event."""
    if not cursor:
        return None
    try:
        body = json.loads(cursor)
        return {
            "after_storage_id": int(body["after"]),
            "runs_updated_after": float(body["runs_updated_after"]),
        }
    except (ValueError, KeyError, TypeError):
        return None  # a cursor from another version: start again from the lookback window


def _where_to_start(cursor: str | None, settings: AlertSettings) -> dict:
    after = read_cursor(cursor)
    if after is not None:
        return {**after, "after_timestamp": None}
    since = datetime.now(UTC) - timedelta(hours=settings.initial_lookback_hours)
    return {"after_storage_id": None, "runs_updated_after": None, "after_timestamp": since.timestamp()}


def _next_cursor(
    context: dg.SensorEvaluationContext, last_storage_id: int | None, started: float
) -> str | None:
    """The cursor past what was read: the newest storage id, and this tick's time less RESCAN_S."""
    previous = read_cursor(context.cursor)
    if last_storage_id is None and previous is None:
        return context.cursor  # nothing read yet: the next tick reads the lookback window again
    after = last_storage_id if last_storage_id is not None else previous["after_storage_id"]
    return json.dumps({"after": after, "runs_updated_after": started - RESCAN_S})


def _threshold(context: dg.SensorEvaluationContext, settings: AlertSettings) -> str:
    """The minimum severity; a bad setting alerts on everything (WARN) and says so, rather than nothing."""
    try:
        return settings.threshold()
    except OrchError as exc:
        context.log.error(f"{exc} (alerting on {DEFAULT_THRESHOLD} and above meanwhile)")
        return DEFAULT_THRESHOLD


def _deliver(context: dg.SensorEvaluationContext, conn, settings: AlertSettings) -> str:
    """Deliver pending notices; a broken webhook setting leaves them pending and is logged."""
    try:
        webhook = settings.webhook()
    except OrchError as exc:
        context.log.error(f"notices left pending: {exc}")
        return f"not delivered ({exc})"
    report = deliver_pending(conn, webhook, deadline_s=settings.delivery_deadline_s, ui_url=settings.ui_url)
    for error in report.errors[-5:]:
        context.log.warning(f"webhook: {error}")
    return report.summary()


def _conclude(
    context: dg.SensorEvaluationContext,
    database: OrchestrationDatabase,
    settings: AlertSettings,
    observations: list[Observation],
    cursor: str | None,
    read: str,
) -> dg.SensorResult:
    """Apply (oldest first), deliver, and move the cursor past what was read."""
    observations = sorted(observations, key=lambda o: o.observed_at)
    threshold = _threshold(context, settings)
    with database.connection() as conn:
        applied = apply_observations(conn, observations, min_severity=threshold)
        delivered = _deliver(context, conn, settings)
    message = f"{read}: {applied.summary()} (minimum severity {threshold}); notices: {delivered}"
    context.log.info(message)
    return dg.SensorResult(skip_reason=dg.SkipReason(message), cursor=cursor)


def _event_log_sensor(
    context: dg.SensorEvaluationContext,
    database: OrchestrationDatabase,
    settings: AlertSettings,
    event_type: dg.DagsterEventType,
    observe: Callable[[dg.EventLogRecord], Observation | None],
    what: str,
) -> dg.SensorResult:
    started = time.time()
    records = read_event_log(
        context.instance, event_type, limit=settings.batch_size, **_where_to_start(context.cursor, settings)
    )
    observations = [o for o in (observe(r) for r in records) if o is not None]
    last = max((r.storage_id for r in records), default=None)
    cursor = _next_cursor(context, last, started)
    return _conclude(context, database, settings, observations, cursor, f"{len(records)} {what} read")


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def asset_check_alert_sensor(
    context: dg.SensorEvaluationContext,
    orchestration_db: OrchestrationDatabase,
    alert_settings: AlertSettings,
) -> dg.SensorResult:
    """Alert once per failure streak of any asset check (blocking or not, in any run), and send a
    "resolved" notice when it passes again; the alert carries the check's metadata, its runbook
    section and a link to the check in the UI."""
    repository = context.repository_def
    return _event_log_sensor(
        context,
        orchestration_db,
        alert_settings,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        lambda record: check_observation(check_evaluation(record, repository)),
        "check evaluations",
    )


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def asset_freshness_alert_sensor(
    context: dg.SensorEvaluationContext,
    orchestration_db: OrchestrationDatabase,
    alert_settings: AlertSettings,
) -> dg.SensorResult:
    """Alert once when an asset with a freshness policy turns WARN or FAIL (the daily archives of
    ``event_archives``, or any other), escalate WARN to FAIL, and resolve when it is PASS again."""
    repository = context.repository_def
    return _event_log_sensor(
        context,
        orchestration_db,
        alert_settings,
        dg.DagsterEventType.FRESHNESS_STATE_CHANGE,
        lambda record: freshness_observation(freshness_change(record, repository, context.instance)),
        "freshness changes",
    )


def _successes(instance: dg.DagsterInstance, failing: list[dict]) -> list[Observation]:
    """For each failing run streak, the first successful run of its job (and asset selection) since
    its last failure: the pass that resolves it."""
    found = []
    for streak in failing:
        source = streak["source"]
        job = source.removeprefix("run:").split("[", 1)[0]
        records = instance.get_run_records(
            dg.RunsFilter(
                job_name=job, statuses=[dg.DagsterRunStatus.SUCCESS], updated_after=streak["last_observed_at"]
            ),
            limit=50,
        )
        matching = [r for r in records if run_source(job, run_selection(r.dagster_run)) == source]
        if matching:
            first = min(matching, key=lambda r: r.end_time or r.update_timestamp.timestamp())
            ended = (
                datetime.fromtimestamp(first.end_time, tz=UTC) if first.end_time else first.update_timestamp
            )
            found.append(
                run_success_observation(
                    job, run_selection(first.dagster_run), first.dagster_run.run_id, ended
                )
            )
    return found


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def run_failure_alert_sensor(
    context: dg.SensorEvaluationContext,
    orchestration_db: OrchestrationDatabase,
    alert_settings: AlertSettings,
) -> dg.SensorResult:
    """Alert once per failure streak of a job (the failed step and its error, a link to the run),
    and resolve it when a run of the job succeeds again. A run that failed only because blocking
    checks failed is left to asset_check_alert_sensor, which alerts on those checks."""
    started = time.time()
    start = _where_to_start(context.cursor, alert_settings)
    result = context.instance.fetch_run_status_changes(
        dg.RunStatusChangeRecordsFilter(
            event_type=dg.DagsterEventType.RUN_FAILURE,
            after_storage_id=start["after_storage_id"],
            after_timestamp=start["after_timestamp"],
        ),
        limit=alert_settings.batch_size,
        ascending=True,
    )
    observations, covered = [], []
    for record in result.records:
        failure = run_failure(record, context.instance)
        if covered_by_checks(failure):
            covered.append(failure.run_id[:8])
        else:
            observations.append(run_failure_observation(failure))
    if covered:
        context.log.info(f"runs failed by blocking checks, alerted as those checks: {', '.join(covered)}")
    with orchestration_db.connection() as conn:
        failing = open_sources(conn, "run")
    observations += _successes(context.instance, failing)
    last = max((r.storage_id for r in result.records), default=None)
    cursor = _next_cursor(context, last, started)
    read = f"{len(result.records)} run failures read ({len(covered)} left to check alerts)"
    return _conclude(context, orchestration_db, alert_settings, observations, cursor, read)


# --- once, outside the daemon --------------------------------------------------------------------


def scan_once(
    instance: dg.DagsterInstance,
    definitions: dg.Definitions,
    orchestration_db: OrchestrationDatabase,
    alert_settings: AlertSettings,
) -> dict[str, str]:
    """Evaluate every alerting sensor once against ``instance``; returns each one's summary line.

    Under ``orchestration-pipeline dev`` the daemon ticks the sensors; without it (a first run that
    materializes once and stops, a cron job, a daemon that is down) nothing reads the event log.
    Without a cursor each sensor reads the lookback window of ``alert_settings``; applying an event
    twice changes nothing, so a scan and the daemon never raise one alert twice. ``definitions`` is
    the code location the events came from (its declared runbooks and freshness policies).
    """
    resources = {"orchestration_db": orchestration_db, "alert_settings": alert_settings}
    summaries = {}
    for sensor in (asset_check_alert_sensor, asset_freshness_alert_sensor, run_failure_alert_sensor):
        with dg.build_sensor_context(
            instance=instance, definitions=definitions, resources=resources
        ) as context:
            data = sensor.evaluate_tick(context)
        summaries[sensor.name] = data.skip_message or ""
    return summaries
