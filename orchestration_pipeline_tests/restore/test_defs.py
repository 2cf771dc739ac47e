"""restore_drill through Dagster, its three checks (each made to fail), and the weekly schedule."""

from __future__ import annotations

import dagster as dg
import pytest

from orchestration_pipeline.defs.resources import OrchestrationDatabase, TasksDatabase, VectorIndexResource
from orchestration_pipeline.defs.restore.assets import restore_drill
from orchestration_pipeline.defs.restore.checks import backup_fresh, restore_drill_passed, rto_within_target
from orchestration_pipeline.defs.restore.resources import RestoreSettings
from orchestration_pipeline.defs.restore.schedules import weekly_restore_drill
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.embedded import with_database
from orchestration_pipeline.lib.index.host_client import stop_host
from orchestration_pipeline.lib.restore import checks as lib_checks
from orchestration_pipeline_tests.restore._support import seed

pytestmark = [pytest.mark.db, pytest.mark.slow]

CHECKS = [restore_drill_passed, rto_within_target, backup_fresh]


@pytest.fixture
def home(tmp_path):
    yield tmp_path / "home"
    stop_host(tmp_path / "home" / "qdrant")


def _materialize(orch_dsn, tasks_dsn, home, selection=None, **settings):
    resources = {
        "orchestration_db": OrchestrationDatabase(dsn=orch_dsn),
        "tasks_db": TasksDatabase(dsn=tasks_dsn),
        "vector_index": VectorIndexResource(orch_home=str(home), embedder="hashing"),
        "restore_settings": RestoreSettings(**{"backup_dir": str(home / "backups"), **settings}),
    }
    return dg.materialize(
        [restore_drill, *CHECKS],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        selection=selection,
        raise_on_error=False,
    )


def _evaluations(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_drill_materializes_its_verdict_and_passes_every_check(orch_dsn, tasks_dsn, tmp_path, home):
    seed(orch_dsn, tasks_dsn, tmp_path, sessions=2)
    result = _materialize(orch_dsn, tasks_dsn, home)
    assert result.success
    meta = result.asset_materializations_for_node("restore_drill")[0].metadata
    assert meta["pass"].value is True and meta["rto_s"].value > 0
    assert {c["name"] for c in meta["checks"].value} >= {
        "content_hashes",
        "audit_chain",
        "outbox_repopulated",
    }
    evaluations = _evaluations(result)
    assert {name: e.passed for name, e in evaluations.items()} == dict.fromkeys(
        ["restore_drill_passed", "rto_within_target", "backup_fresh"], True
    )
    assert 0 < evaluations["rto_within_target"].metadata["ratio_to_target"].value < 1

    # the same drill judged against a target it cannot meet, and an age it has passed
    strict = _materialize(
        orch_dsn, tasks_dsn, home, selection=dg.AssetSelection.checks(*CHECKS),
        rto_target_minutes=0.0001, backup_max_age_hours=0.00001,
    )  # fmt: skip
    evaluations = _evaluations(strict)
    rto = evaluations["rto_within_target"]
    assert not rto.passed and rto.severity == dg.AssetCheckSeverity.ERROR
    assert rto.metadata["ratio_to_target"].value > 1 and "of the 0.0001-minute target" in rto.description
    fresh = evaluations["backup_fresh"]
    assert (
        not fresh.passed
        and fresh.severity == dg.AssetCheckSeverity.WARN
        and "old (limit" in fresh.description
    )
    assert evaluations["restore_drill_passed"].passed


def test_a_failed_drill_fails_its_check_and_proves_no_backup(orch_dsn, tasks_dsn, tmp_path, home):
    seed(orch_dsn, tasks_dsn, tmp_path, sessions=2)
    unreachable = with_database(tasks_dsn, "no_such_tasks_db")
    result = _materialize(orch_dsn, unreachable, home)
    assert result.success  # the drill ran; its verdict is the failure
    assert result.asset_materializations_for_node("restore_drill")[0].metadata["pass"].value is False
    evaluations = _evaluations(result)
    passed = evaluations["restore_drill_passed"]
    assert not passed.passed and passed.severity == dg.AssetCheckSeverity.ERROR
    assert "projection_drift" in passed.description
    fresh = evaluations["backup_fresh"]
    assert not fresh.passed and fresh.severity == dg.AssetCheckSeverity.WARN
    assert "no backup has been shown to restore yet" in fresh.description
    assert evaluations["rto_within_target"].passed  # it restored and verified quickly, if not cleanly


def test_a_drill_that_cannot_run_fails_the_materialization(orch_dsn, tasks_dsn, tmp_path, home):
    empty = tmp_path / "no-binaries"
    empty.mkdir()
    result = _materialize(orch_dsn, tasks_dsn, home, pg_bin=str(empty))
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "drill could not run: pg_dump is not in" in failure.event_specific_data.error.message
    with connection(orch_dsn) as conn:
        assert lib_checks.restore_drill_passed(conn).description.startswith(
            "the latest drill did not finish (error)"
        )


def test_without_any_drill_every_check_fails_saying_what_to_run(orch_dsn):
    with connection(orch_dsn) as conn:
        for verdict in (
            lib_checks.restore_drill_passed(conn),
            lib_checks.rto_within_target(conn),
            lib_checks.backup_fresh(conn),
        ):
            assert not verdict.passed and "'orchestration-pipeline drill'" in verdict.description


def test_the_drill_runs_weekly_in_utc():
    assert weekly_restore_drill.execution_timezone == "UTC"
    assert weekly_restore_drill.cron_schedule == "15 4 * * 0"
    assert weekly_restore_drill.job_name == "restore_drill_job"
