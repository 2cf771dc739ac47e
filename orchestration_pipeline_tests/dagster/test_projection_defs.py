"""task_projection, projection_drift_report, their checks (each made to fail), sensor and schedule."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.projection.assets import projection_drift_report, task_projection
from orchestration_pipeline.defs.projection.checks import (
    drift_not_persistent,
    projection_columns_present,
    projection_sync_latency,
    zero_drift_after_reconcile,
)
from orchestration_pipeline.defs.projection.sensors import projection_lag_sensor
from orchestration_pipeline.defs.resources import (
    IngestionSettings,
    OrchestrationDatabase,
    PipelineHome,
    ProjectionSettings,
    TasksDatabase,
)
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.demo import demo_tasks, generate_demo, seed_tasks

pytestmark = pytest.mark.db

CHECKS = [
    zero_drift_after_reconcile,
    drift_not_persistent,
    projection_columns_present,
    projection_sync_latency,
]


def _resources(orch_dsn, tasks_dsn, home, **settings):
    return {
        "orchestration_db": OrchestrationDatabase(dsn=orch_dsn),
        "tasks_db": TasksDatabase(dsn=tasks_dsn),
        "pipeline_home": PipelineHome(orch_home=str(home)),
        "ingestion_settings": IngestionSettings(),
        "projection_settings": ProjectionSettings(**settings),
    }


def _materialize(orch_dsn, tasks_dsn, home, selection=None, tasks_timeout_s=10.0, **settings):
    resources = _resources(orch_dsn, tasks_dsn, home, **settings)
    resources["tasks_db"] = TasksDatabase(dsn=tasks_dsn, connect_timeout_s=tasks_timeout_s)
    return dg.materialize(
        [raw_events, task_projection, projection_drift_report, *CHECKS],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        selection=selection,
        raise_on_error=False,
    )


def _checks_only(orch_dsn, tasks_dsn, home, **settings):
    result = _materialize(orch_dsn, tasks_dsn, home, selection=dg.AssetSelection.checks(*CHECKS), **settings)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture
def demo_world(orch_dsn, tasks_dsn, tmp_path):
    written = generate_demo(tmp_path / "landing", sessions=4, seed=11)
    with connection(tasks_dsn) as conn:
        seed_tasks(conn, demo_tasks(written))
    return orch_dsn, tasks_dsn, tmp_path


def test_demo_reconciles_its_deliberate_drift_and_every_check_passes(demo_world):
    orch_dsn, tasks_dsn, home = demo_world
    result = _materialize(orch_dsn, tasks_dsn, home)
    assert result.success
    projected = result.asset_materializations_for_node("task_projection")[0].metadata
    assert projected["events_applied"].value > 0 and projected["lag_events"].value == 0
    assert projected["projection_sync_latency_p95_ms"].value >= 0
    report = result.asset_materializations_for_node("projection_drift_report")[0].metadata
    counts = {k: report[k].value for k in ("missing_in_projection", "missing_in_tasks", "status_mismatch")}
    assert counts == {"missing_in_projection": 1, "missing_in_tasks": 1, "status_mismatch": 1}
    assert report["projection_drift_count"].value == 3 and report["action"].value == "repair"
    assert "| status_mismatch | 1 |" in report["samples"].value
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evals == {next(iter(c.check_specs)).name: True for c in CHECKS}


def test_zero_drift_after_reconcile_fails_when_drift_remains(demo_world):
    orch_dsn, tasks_dsn, home = demo_world
    assert _materialize(orch_dsn, tasks_dsn, home).success
    with connection(tasks_dsn) as conn, conn.transaction():  # the authority changes, long ago
        conn.execute(
            "UPDATE tasks SET status = 'cancelled', updated_at = now() - interval '1 day' "
            "WHERE task_id = (SELECT min(task_id) FROM tasks)"
        )
    evaluation = _checks_only(orch_dsn, tasks_dsn, home)["zero_drift_after_reconcile"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["status_mismatch"].value == 1


def test_drift_not_persistent_fails_on_two_drifted_reports(demo_world):
    orch_dsn, tasks_dsn, home = demo_world
    assert _materialize(orch_dsn, tasks_dsn, home).success  # report 1: the demo drift
    assert _checks_only(orch_dsn, tasks_dsn, home)["drift_not_persistent"].passed
    with connection(tasks_dsn) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO tasks (task_id, title, updated_at) VALUES ('T-again', 'again', now() - interval '1 day')"
        )
    _materialize(orch_dsn, tasks_dsn, home)  # report 2: drift again
    evaluation = _checks_only(orch_dsn, tasks_dsn, home)["drift_not_persistent"]
    assert not evaluation.passed
    assert "drift in 2 consecutive reports (3, then 1" in evaluation.description


def test_projection_columns_present_fails_on_a_missing_column_or_guard(orch_dsn, tasks_dsn, tmp_path):
    assert _checks_only(orch_dsn, tasks_dsn, tmp_path)["projection_columns_present"].passed
    with connection(orch_dsn) as conn, conn.transaction():
        conn.execute("ALTER TABLE task_projection DISABLE TRIGGER task_projection_read_only")
    evaluation = _checks_only(orch_dsn, tasks_dsn, tmp_path)["projection_columns_present"]
    assert not evaluation.passed and "guard triggers are missing or disabled" in evaluation.description
    with connection(orch_dsn) as conn, conn.transaction():  # fires only in replica sessions: as good as off
        conn.execute("ALTER TABLE task_projection ENABLE REPLICA TRIGGER task_projection_read_only")
    evaluation = _checks_only(orch_dsn, tasks_dsn, tmp_path)["projection_columns_present"]
    assert not evaluation.passed and "guard triggers are missing or disabled" in evaluation.description
    with connection(orch_dsn) as conn, conn.transaction():
        conn.execute("ALTER TABLE task_projection DROP COLUMN tags_json")
    evaluation = _checks_only(orch_dsn, tasks_dsn, tmp_path)["projection_columns_present"]
    assert not evaluation.passed and evaluation.metadata["missing"].value == ["tags_json"]


def test_projection_sync_latency_warns_above_the_limit(demo_world):
    orch_dsn, tasks_dsn, home = demo_world
    assert _materialize(orch_dsn, tasks_dsn, home).success
    evaluation = _checks_only(orch_dsn, tasks_dsn, home, sync_latency_p95_warn_ms=0.0)[
        "projection_sync_latency"
    ]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "exceeds" in evaluation.description


def test_unreachable_tasks_db_fails_the_run_with_the_cause(orch_dsn, tmp_path):
    # the pool gives up after 1 s instead of its default 10 s: the same failure, sooner
    down = "postgresql://postgres@127.0.0.1:1/tasks?connect_timeout=1"
    result = _materialize(orch_dsn, down, tmp_path, tasks_timeout_s=1.0)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "is the server running?" in failure.event_specific_data.error.to_string()


def test_lag_sensor_fires_on_lag_and_on_new_drift(demo_world):
    orch_dsn, tasks_dsn, home = demo_world
    resources = _resources(orch_dsn, tasks_dsn, home, lag_threshold_events=5)

    def tick():
        with dg.build_sensor_context(resources=resources) as context:
            return projection_lag_sensor(context)

    assert isinstance(tick(), dg.SkipReason)  # nothing ingested yet
    _materialize(orch_dsn, tasks_dsn, home, selection=dg.AssetSelection.assets(raw_events))
    lagging = tick()
    assert isinstance(lagging, dg.RunRequest) and lagging.run_key.startswith("lag-")
    assert _materialize(orch_dsn, tasks_dsn, home).success  # reconcile: the demo drift is reported
    drifted = tick()
    assert isinstance(drifted, dg.RunRequest) and drifted.run_key.startswith("drift-")
    assert _materialize(orch_dsn, tasks_dsn, home).success  # the follow-up finds no drift
    assert isinstance(tick(), dg.SkipReason)


def test_schedule_runs_nightly_in_utc():
    from orchestration_pipeline.defs.projection.sensors import nightly_reconciliation

    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 1, 2, 30, tzinfo=UTC))
    request = nightly_reconciliation.evaluate_tick(context).run_requests[0]
    assert request.job_name in (None, "reconciliation_job")
    assert (nightly_reconciliation.execution_timezone, nightly_reconciliation.cron_schedule) == (
        "UTC",
        "30 2 * * *",
    )
