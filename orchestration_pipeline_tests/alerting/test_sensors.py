"""The alerting sensors, ticked for real against a Dagster instance and the orchestration DB: a
check driven to fail and pass, a webhook that fails twice, the threshold, failed runs, blocking
checks, the freshness of the daily archives, retried ticks and the first start."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg
import pytest

from orchestration_pipeline.definitions import DEFS_FOLDER
from orchestration_pipeline.defs.alerting.resources import AlertSettings
from orchestration_pipeline.defs.alerting.sensors import (
    asset_check_alert_sensor,
    asset_freshness_alert_sensor,
    run_failure_alert_sensor,
)
from orchestration_pipeline.defs.checks_support import check_metadata
from orchestration_pipeline.defs.resources import (
    IndexSettings,
    IngestionSettings,
    OrchestrationDatabase,
    PipelineHome,
    ProjectionSettings,
    TasksDatabase,
    VectorIndexResource,
)
from orchestration_pipeline.defs.retention.assets import ARCHIVE_FRESHNESS, event_archives
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline_tests.alerting._support import (
    alerts_of,
    notices_of,
    report_freshness_change,
    webhook_receiver,
)

pytestmark = pytest.mark.db

RUNBOOK = "docs/runbooks/ingestion.md#core_event_coverage"


@dataclass
class World:
    """What the checks and assets of this module report: set by a test, read when they run."""

    passed: bool = False
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR
    explode: bool = False


WORLD = World()


@dg.asset
def landing():
    return 1


@dg.asset_check(asset=landing, metadata=check_metadata("ERROR", RUNBOOK))
def landing_complete() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=WORLD.passed,
        severity=WORLD.severity,
        description="all sessions complete" if WORLD.passed else "2 sessions have gaps",
        metadata={
            "sessions_with_gaps": 0 if WORLD.passed else 2,
            "samples": dg.MetadataValue.json(["s-1", "s-7"]),
        },
    )


@dg.asset
def flaky():
    if WORLD.explode:
        raise RuntimeError("the landing directory is not readable")
    return 1


@dg.asset_check(asset=flaky, blocking=True, metadata=check_metadata("ERROR", RUNBOOK))
def flaky_blocking() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=WORLD.passed, description="blocking check")


flaky_job = dg.define_asset_job("flaky_job", selection=dg.AssetSelection.assets(flaky))
#: The daily archives as the sensor sees them: their key and their freshness policy.
ARCHIVES = dg.AssetSpec(event_archives.key, freshness_policy=ARCHIVE_FRESHNESS)
DEFS = dg.Definitions(assets=[landing, flaky, ARCHIVES], asset_checks=[landing_complete], jobs=[flaky_job])


class Harness:
    """A Dagster instance, the orchestration DB and one cursor per sensor, as the daemon keeps them."""

    def __init__(self, dsn: str, instance: dg.DagsterInstance, **settings):
        self.dsn = dsn
        self.instance = instance
        self.settings = AlertSettings(**{"webhook_url": "", **settings})
        self.cursors: dict[str, str | None] = {}

    def tick(self, sensor: dg.SensorDefinition, cursor: str | None = ...) -> str:
        resources = {"orchestration_db": OrchestrationDatabase(dsn=self.dsn), "alert_settings": self.settings}
        start = self.cursors.get(sensor.name) if cursor is ... else cursor
        with dg.build_sensor_context(
            instance=self.instance, cursor=start, definitions=DEFS, resources=resources
        ) as context:
            data = sensor.evaluate_tick(context)
        assert not data.run_requests  # alerting never launches a run
        self.cursors[sensor.name] = data.cursor
        return data.skip_message or ""

    def check(self, passed: bool, severity=dg.AssetCheckSeverity.ERROR) -> None:
        WORLD.passed, WORLD.severity = passed, severity
        dg.materialize([landing, landing_complete], instance=self.instance)

    def run_job(self, explode: bool, checks_pass: bool = True) -> dg.ExecuteInProcessResult:
        WORLD.explode, WORLD.passed = explode, checks_pass
        job = dg.Definitions(assets=[flaky], asset_checks=[flaky_blocking], jobs=[flaky_job]).resolve_job_def(
            "flaky_job"
        )
        return job.execute_in_process(instance=self.instance, raise_on_error=False)


@pytest.fixture(params=["in-memory", "sqlite-run-sharded"])
def harness(request, orch_dsn, tmp_path):
    """Each test twice: on an in-memory event log ordered by storage id (as PostgreSQL's is), and on
    Dagster's default SQLite storage, one database per run."""
    WORLD.__init__()
    if request.param == "in-memory":
        instance = dg.DagsterInstance.ephemeral()
    else:
        (tmp_path / "dagster_home").mkdir()
        instance = dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home"))
        assert instance.event_log_storage.is_run_sharded
    with instance:
        yield Harness(orch_dsn, instance)


def test_a_check_driven_to_fail_then_pass_gives_exactly_one_alert_and_one_resolve(harness):
    harness.check(passed=False)
    assert "1 raised" in harness.tick(asset_check_alert_sensor)
    harness.check(passed=False)
    harness.check(passed=False)
    assert "2 repeated" in harness.tick(asset_check_alert_sensor)
    harness.check(passed=True)
    assert "1 resolved" in harness.tick(asset_check_alert_sensor)
    quiet = harness.tick(asset_check_alert_sensor)  # SQLite reads recent runs again: "replayed"
    assert not any(word in quiet for word in ("raised", "repeated", "resolved")), quiet

    [alert] = alerts_of(harness.dsn)
    assert alert["source"] == "check:landing:landing_complete" and alert["severity"] == "error"
    assert alert["message"] == "landing_complete on landing failed (ERROR): 2 sessions have gaps"
    assert alert["details"]["metadata"] == {"sessions_with_gaps": 2, "samples": ["s-1", "s-7"]}
    assert alert["runbook"] == RUNBOOK
    assert alert["link_path"] == "/assets/landing?view=checks&checkDetail=landing_complete"
    assert alert["occurrences"] == 3 and alert["resolved_at"] is not None and alert["raised_at"] is not None
    assert [(kind, state) for _, kind, state in notices_of(harness.dsn)] == [
        ("raised", "unsent"),
        ("resolved", "unsent"),
    ]


def test_a_tick_retried_from_an_old_cursor_raises_nothing_twice(harness):
    harness.check(passed=False)
    harness.tick(asset_check_alert_sensor)
    harness.check(passed=True)
    harness.tick(asset_check_alert_sensor)
    assert "2 replayed" in harness.tick(asset_check_alert_sensor, cursor=None)  # the cursor was lost
    assert len(alerts_of(harness.dsn)) == 1 and len(notices_of(harness.dsn)) == 2


def test_a_webhook_that_fails_twice_then_accepts_gets_the_alert_once_through_the_sensor(harness):
    with webhook_receiver(fail_first=2) as receiver:
        harness.settings = AlertSettings(webhook_url=receiver.url, webhook_backoff_s=0.01)
        harness.check(passed=False)
        message = harness.tick(asset_check_alert_sensor)
        assert "1 delivered" in message and "3 webhook attempts" in message
        harness.check(passed=False)
        harness.tick(asset_check_alert_sensor)
        harness.check(passed=True)
        harness.tick(asset_check_alert_sensor)
        accepted = [body["text"] for body in receiver.accepted]
        assert len(receiver.requests) == 4
    assert len(accepted) == 2
    assert "Alert #1 [ERROR] landing_complete on landing failed (ERROR): 2 sessions have gaps" in accepted[0]
    assert "Resolved #1" in accepted[1] and "passes again" in accepted[1]


def test_a_warn_failure_below_an_error_threshold_raises_nothing(harness):
    harness.settings = AlertSettings(webhook_url="", min_severity="ERROR")
    harness.check(passed=False, severity=dg.AssetCheckSeverity.WARN)
    assert "1 below_threshold" in harness.tick(asset_check_alert_sensor)
    assert alerts_of(harness.dsn) == []
    harness.settings = AlertSettings(webhook_url="", min_severity="WARN")
    harness.check(passed=False, severity=dg.AssetCheckSeverity.WARN)
    harness.tick(asset_check_alert_sensor)
    [alert] = alerts_of(harness.dsn)
    assert alert["severity"] == "warning"


def test_failed_runs_of_a_job_are_one_alert_until_a_run_succeeds(harness):
    first = harness.run_job(explode=True)
    harness.run_job(explode=True)
    assert "2 run failures read" in harness.tick(run_failure_alert_sensor)
    [alert] = alerts_of(harness.dsn)
    assert alert["source"] == "run:flaky_job" and alert["occurrences"] == 2
    assert alert["link_path"] == f"/runs/{first.run_id}" and alert["run_id"] == first.run_id
    assert "failed at step flaky: RuntimeError: the landing directory is not readable" in alert["message"]
    assert alert["runbook"] == "docs/runbooks/alerting.md#a-run-failed"
    harness.run_job(explode=False)
    assert "1 resolved" in harness.tick(run_failure_alert_sensor)
    assert alerts_of(harness.dsn)[0]["resolved_at"] is not None
    assert [kind for _, kind, _ in notices_of(harness.dsn)] == ["raised", "resolved"]


def test_a_run_failed_by_a_blocking_check_alerts_once_as_that_check(harness):
    result = harness.run_job(explode=False, checks_pass=False)
    assert not result.success
    assert "1 left to check alerts" in harness.tick(run_failure_alert_sensor)
    harness.tick(asset_check_alert_sensor)
    [alert] = alerts_of(harness.dsn)
    assert alert["source"] == "check:flaky:flaky_blocking" and alert["details"]["blocking"] is True


def _freshness(instance: dg.DagsterInstance, new: str, previous: str) -> None:
    report_freshness_change(instance, event_archives.key, new, previous, time.time())


def test_stale_daily_archives_alert_once_escalate_once_and_resolve(harness):
    _freshness(harness.instance, "WARN", "PASS")
    assert "1 raised" in harness.tick(asset_freshness_alert_sensor)
    _freshness(harness.instance, "FAIL", "WARN")
    assert "1 escalated" in harness.tick(asset_freshness_alert_sensor)
    _freshness(harness.instance, "PASS", "FAIL")
    assert "1 resolved" in harness.tick(asset_freshness_alert_sensor)
    [alert] = alerts_of(harness.dsn)
    assert alert["source"] == "freshness:event_archives" and alert["severity"] == "error"
    assert "event_archives is stale: freshness WARN, last materialized never" in alert["message"]
    assert "warn after 26h, fail after 50h" in alert["message"]
    assert alert["link_path"] == "/assets/event_archives"
    assert [kind for _, kind, _ in notices_of(harness.dsn)] == ["raised", "escalated", "resolved"]


def test_on_its_first_start_a_sensor_reads_only_the_lookback_window(harness):
    harness.check(passed=False)
    harness.settings = AlertSettings(webhook_url="", initial_lookback_hours=0.0)
    assert "0 check evaluations read" in harness.tick(asset_check_alert_sensor)
    assert harness.cursors[asset_check_alert_sensor.name] is None  # still reading from "now - lookback"
    harness.settings = AlertSettings(webhook_url="")
    assert "1 raised" in harness.tick(asset_check_alert_sensor)


# --- a check of the pipeline, through the whole code location ------------------------------------


def _drift_report(dsn: str, hours_ago: float) -> None:
    with connection(dsn) as conn, conn.transaction():
        conn.execute(
            """INSERT INTO drift_reports (started_at, finished_at, grace_minutes, tasks_compared,
                   projection_compared, skipped_in_grace, missing_in_projection, missing_in_tasks,
                   status_mismatch, action)
               VALUES (now() - %(age)s, now() - %(age)s, 15, 0, 0, 0, 0, 0, 0, 'none')""",
            {"age": timedelta(hours=hours_ago)},
        )


def test_a_pipeline_check_alerts_with_its_declared_runbook_through_the_code_location(
    orch_dsn, tasks_dsn, tmp_path
):
    """drift_report_fresh, evaluated by freshness_job of the real code location, fails on a stale
    report and passes on a fresh one: one alert naming the check's own runbook section, one resolve."""
    resources = {
        "orchestration_db": OrchestrationDatabase(dsn=orch_dsn),
        "tasks_db": TasksDatabase(dsn=tasks_dsn),
        "pipeline_home": PipelineHome(orch_home=str(tmp_path)),
        "ingestion_settings": IngestionSettings(),
        "projection_settings": ProjectionSettings(),
        "vector_index": VectorIndexResource(orch_home=str(tmp_path), embedder="hashing"),
        "index_settings": IndexSettings(),
    }
    loaded = dg.load_from_defs_folder(path_within_project=DEFS_FOLDER)
    definitions = dg.Definitions.merge(loaded, dg.Definitions(resources=resources))
    sensor_resources = {
        "orchestration_db": resources["orchestration_db"],
        "alert_settings": AlertSettings(webhook_url=""),
    }
    cursor = None
    with dg.DagsterInstance.ephemeral() as instance:

        def evaluate_and_tick() -> str:
            nonlocal cursor
            job = definitions.resolve_job_def("freshness_job")
            job.execute_in_process(instance=instance, raise_on_error=False)
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, definitions=definitions, resources=sensor_resources
            ) as context:
                data = asset_check_alert_sensor.evaluate_tick(context)
            cursor = data.cursor
            return data.skip_message

        _drift_report(orch_dsn, hours_ago=27)
        assert "1 raised" in evaluate_and_tick()
        _drift_report(orch_dsn, hours_ago=0)
        assert "1 resolved" in evaluate_and_tick()
    [alert] = alerts_of(orch_dsn)
    assert alert["source"] == "check:projection_drift_report:drift_report_fresh"
    assert alert["runbook"] == "docs/runbooks/reconciliation.md#drift_report_fresh"
    assert alert["details"]["declared_severity"] == "ERROR" and alert["details"]["metadata"]["age_hours"] > 26
    assert alert["resolved_at"] is not None
