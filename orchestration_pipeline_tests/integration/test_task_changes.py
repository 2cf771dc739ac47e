"""The change feed: each projection and reconciliation run records what it changed, and why."""

import json
import os

import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli import main
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.projection.changes import list_changes, runs_summary
from orchestration_pipeline.lib.projection.drift import ReconcileSettings, reconcile
from orchestration_pipeline.lib.projection.projector import project_events
from orchestration_pipeline_tests.conftest import make_event
from orchestration_pipeline_tests.integration.test_drift import (
    AUDIT,
    OLD,
    drifted_world,
    finished,
    set_updated,
)
from orchestration_pipeline_tests.integration.test_projection import add_tasks, ingest

pytestmark = pytest.mark.db


@pytest.fixture
def tasks_conn(tasks_dsn):
    with connection(tasks_dsn) as conn:
        yield conn


def _changes(conn, **filters):
    rows, _total = list_changes(conn, **filters)
    return {
        (r["task_id"], r["field"], json.dumps(r["before"]), json.dumps(r["after"]), r["cause"]) for r in rows
    }


def test_the_projector_records_each_field_it_changes_under_its_run(
    orch_conn, tasks_conn, tasks_dsn, tmp_path
):
    add_tasks(tasks_dsn, ("t1", "Build wheels", "in_progress", 2, '["ci"]'))
    ingest(orch_conn, tmp_path / "a.jsonl", [make_event("task_start", task_id="t1", minutes_ago=30)])
    first = project_events(orch_conn, tasks_conn)
    ingest(orch_conn, tmp_path / "b.jsonl",
           [make_event("task_end", task_id="t1", minutes_ago=5, payload={"success": False, "duration_ms": 9})])  # fmt: skip
    second = project_events(orch_conn, tasks_conn)
    created = _changes(orch_conn, run_id=str(first.run_id))
    ended = _changes(orch_conn, run_id=str(second.run_id))
    assert created == {
        ("t1", "status", "null", '"running"', "event"),
        ("t1", "title", "null", '"Build wheels"', "event"),
        ("t1", "priority", "null", "2", "event"),
        ("t1", "tags", "null", '["ci"]', "event"),
    }
    assert ended == {("t1", "status", '"running"', '"failed"', "event")}  # last_event_ts moves, unrecorded


def test_a_repair_and_a_rebuild_record_their_changes_with_the_report(
    orch_conn, tasks_conn, tasks_dsn, tmp_path
):
    drifted_world(orch_conn, tasks_conn, tasks_dsn, tmp_path)
    repaired = reconcile(orch_conn, tasks_conn, AUDIT, ReconcileSettings(grace_minutes=15))
    assert repaired.action == "repair" and repaired.change_run
    changes = _changes(orch_conn, run_id=repaired.change_run)
    assert ("flipped", "status", '"succeeded"', '"failed"', "repair") in changes
    assert ("only_proj", "status", '"succeeded"', "null", "repair") in changes  # gone from the Tasks DB
    assert any(c[0] == "only_tasks" and c[1] == "status" and c[2] == "null" for c in changes)

    add_tasks(tasks_dsn, ("late", "Late", "done", 1, "[]"))
    set_updated(tasks_dsn, OLD, "late")
    rebuilt = reconcile(orch_conn, tasks_conn, AUDIT, ReconcileSettings(grace_minutes=15), force_rebuild=True)
    assert rebuilt.action == "rebuild"
    rebuild_changes = _changes(orch_conn, run_id=rebuilt.change_run)
    assert ("late", "status", "null", '"succeeded"', "rebuild") in rebuild_changes
    assert {r["cause"] for r in runs_summary(orch_conn)} == {"event", "repair", "rebuild"}


def test_projection_changes_from_the_cli(orch_conn, tasks_conn, tasks_dsn, orch_dsn, tmp_path):
    add_tasks(tasks_dsn, ("t9", "Deploy", "todo", 1, "[]"))
    ingest(orch_conn, tmp_path / "a.jsonl", finished("t9", ok=True, hours_ago=1))
    run = project_events(orch_conn, tasks_conn)
    env = {k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))}
    env.update(ORCH_HOME=str(tmp_path / "home"), ORCH_DATABASE_URL=orch_dsn, TASKS_DATABASE_URL=tasks_dsn)
    runner = CliRunner()
    shown = runner.invoke(main, ["projection", "changes", "--since", "1h"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "event" in shown.output and "t9" in shown.output and 'status: null -> "succeeded"' in shown.output
    by_run = runner.invoke(main, ["projection", "changes", "--run", str(run.run_id), "--json"], env=env)
    rows = [json.loads(line) for line in by_run.output.splitlines()]
    assert rows and {r["run_id"] for r in rows} == {str(run.run_id)}
    bad = runner.invoke(main, ["projection", "changes", "--run", "last-night"], env=env)
    assert bad.exit_code == 2 and "--run" in bad.output
