"""Reconciliation of task_projection against the Tasks DB: comparison, repair, rebuild, refusal."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.projection.drift import (
    AuditContext,
    ReconcileRefused,
    ReconcileSettings,
    compare,
    rebuild,
    reconcile,
)
from orchestration_pipeline.lib.projection.projector import project_events, projection_lag
from orchestration_pipeline_tests.conftest import make_event
from orchestration_pipeline_tests.integration.test_projection import add_tasks, ingest, projection

pytestmark = pytest.mark.db

NOW = datetime.now(UTC)
OLD = NOW - timedelta(hours=3)
AUDIT = AuditContext(actor="test", request_id="req-1")


def ts(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat()


def set_updated(tasks_dsn, when, *task_ids):
    with connection(tasks_dsn) as conn, conn.transaction():
        conn.execute("UPDATE tasks SET updated_at = %s WHERE task_id = ANY(%s)", (when, list(task_ids)))


@pytest.fixture
def tasks_conn(tasks_dsn):
    with connection(tasks_dsn) as conn:
        yield conn


def finished(task_id, ok=True, hours_ago=4):
    return [
        make_event("task_start", task_id=task_id, occurred_at=ts(hours_ago + 0.5)),
        make_event(
            "task_end", task_id=task_id, occurred_at=ts(hours_ago), payload={"success": ok, "duration_ms": 1}
        ),
    ]


def drifted_world(orch_conn, tasks_conn, tasks_dsn, tmp_path):
    """ok: agrees; only_tasks: not projected; only_proj: unknown to Tasks; flipped: status differs;
    fresh: differs but inside the grace window."""
    add_tasks(
        tasks_dsn,
        ("ok", "OK", "done", 1, "[]"),
        ("only_tasks", "Only in tasks", "todo", 2, '["x"]'),
        ("flipped", "Flipped", "failed", 3, "[]"),
        ("fresh", "Fresh", "blocked", 3, "[]"),
    )
    set_updated(tasks_dsn, OLD, "ok", "only_tasks", "flipped")
    events = [*finished("ok"), *finished("only_proj"), *finished("flipped", ok=True), *finished("fresh")]
    ingest(orch_conn, tmp_path / "w.jsonl", events)
    project_events(orch_conn, tasks_conn)


def test_compare_classifies_each_kind_and_skips_the_grace_window(orch_conn, tasks_conn, tasks_dsn, tmp_path):
    drifted_world(orch_conn, tasks_conn, tasks_dsn, tmp_path)
    result = compare(orch_conn, tasks_conn, grace_minutes=15, now=NOW)
    assert result.counts == {"missing_in_projection": 1, "missing_in_tasks": 1, "status_mismatch": 1}
    assert (result.tasks_compared, result.projection_compared, result.skipped_in_grace) == (4, 4, 1)
    assert result.samples["status_mismatch"] == [
        {"task_id": "flipped", "tasks_status": "failed", "projection_status": "succeeded"}
    ]
    assert sorted(result.drifted) == [
        ("flipped", "status_mismatch"),
        ("only_proj", "missing_in_tasks"),
        ("only_tasks", "missing_in_projection"),
    ]
    # with no grace window, the freshly changed task is judged too
    assert compare(orch_conn, tasks_conn, grace_minutes=0, now=datetime.now(UTC)).drift_count == 4


def test_awkward_task_ids_do_not_fake_drift(orch_conn, tasks_conn, tasks_dsn, tmp_path):
    ids = ["a\tb", "a!", "a\\z", 'q"uote', "{x,y}", "a", "é", "e", "Z", "z", "a b", "日本", "a\nb"]
    add_tasks(tasks_dsn, *[(i, "t", "done", 1, "[]") for i in ids])
    set_updated(tasks_dsn, OLD, *ids)
    ingest(orch_conn, tmp_path / "w.jsonl", [e for i in ids for e in finished(i)])
    project_events(orch_conn, tasks_conn)
    assert {task_id: row[0] for task_id, row in projection(orch_conn).items()} == dict.fromkeys(
        ids, "t"
    )  # hydrated
    result = compare(orch_conn, tasks_conn, now=NOW)
    assert (result.drift_count, result.tasks_compared, result.projection_compared) == (0, len(ids), len(ids))


def test_reconcile_repairs_only_drifted_rows_and_records_everything(
    orch_conn, tasks_conn, tasks_dsn, tmp_path
):
    drifted_world(orch_conn, tasks_conn, tasks_dsn, tmp_path)
    before = projection(orch_conn)
    report = reconcile(orch_conn, tasks_conn, AUDIT, ReconcileSettings(grace_minutes=15), now=NOW)
    assert (report.action, report.drift_count, report.rows_changed) == ("repair", 3, 3)
    after = projection(orch_conn)
    assert "only_proj" not in after
    assert after["only_tasks"][:2] == ("Only in tasks", "pending") and after["only_tasks"][4] == ["x"]
    assert after["flipped"][1] == "failed"
    assert after["ok"] == before["ok"] and after["fresh"] == before["fresh"]  # untouched
    assert compare(orch_conn, tasks_conn, now=NOW).drift_count == 0

    row = orch_conn.execute(
        "SELECT drift_count, missing_in_tasks, action, samples->'missing_in_tasks'->0->>'task_id', request_id "
        "FROM drift_reports WHERE report_id = %s",
        (report.report_id,),
    ).fetchone()
    assert row == (3, 1, "repair", "only_proj", "req-1")
    decision = orch_conn.execute(
        "SELECT payload->>'drift_count', payload->'samples'->'status_mismatch'->0->>'task_id' "
        "FROM events WHERE event_id = %s",
        (report.decision_event_id,),
    ).fetchone()
    assert decision == ("3", "flipped")
    metrics = dict(
        orch_conn.execute(
            "SELECT name, value FROM metrics WHERE name IN ('projection_drift_count', 'last_reconcile_ts')"
        ).fetchall()
    )
    assert metrics["projection_drift_count"] == 3 and metrics["last_reconcile_ts"] > NOW.timestamp() - 60
    audit = orch_conn.execute(
        "SELECT operation, actor, request_id, entity_type, "
        "jsonb_path_query_array(before_data, '$.rows[*].task_id'), "
        "jsonb_path_query_array(after_data, '$.rows[*].task_id') FROM audit_ledger"
    ).fetchall()
    assert audit == [
        ("repair", "test", "req-1", "task_projection", ["flipped", "only_proj"], ["flipped", "only_tasks"])
    ]
    orch_conn.rollback()
    # a second reconciliation finds nothing left to do
    again = reconcile(orch_conn, tasks_conn, AUDIT, now=NOW)
    assert (again.action, again.drift_count) == ("none", 0)


def test_two_reconciliations_at_once_repair_the_drift_once(
    orch_dsn, orch_conn, tasks_conn, tasks_dsn, tmp_path
):
    from orchestration_pipeline.lib.projection.drift import _RECONCILE_LOCK

    drifted_world(orch_conn, tasks_conn, tasks_dsn, tmp_path)
    reports = []

    def run():
        with connection(orch_dsn) as orch, connection(tasks_dsn) as tasks:
            reports.append(reconcile(orch, tasks, AUDIT, now=NOW))

    with connection(orch_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (_RECONCILE_LOCK,))  # both start, both wait
        workers = [threading.Thread(target=run) for _ in range(2)]
        for worker in workers:
            worker.start()
        waiting = 0
        for _ in range(200):
            waiting = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()[0]
            if waiting == 2:
                break
            threading.Event().wait(0.05)
        assert waiting == 2
        holder.execute("SELECT pg_advisory_unlock(%s)", (_RECONCILE_LOCK,))
        for worker in workers:
            worker.join(60)
    assert sorted((r.action, r.drift_count) for r in reports) == [("none", 0), ("repair", 3)]
    repairs = orch_conn.execute("SELECT count(*) FROM audit_ledger WHERE operation = 'repair'").fetchone()[0]
    assert repairs == 1


def test_repaired_status_is_not_undone_by_a_replayed_old_event(orch_conn, tasks_conn, tasks_dsn, tmp_path):
    drifted_world(orch_conn, tasks_conn, tasks_dsn, tmp_path)
    reconcile(orch_conn, tasks_conn, AUDIT, now=NOW)
    # an old task_start for the repaired task arrives late
    ingest(
        orch_conn, tmp_path / "late.jsonl", [make_event("task_start", task_id="flipped", occurred_at=ts(5))]
    )
    project_events(orch_conn, tasks_conn)
    assert projection(orch_conn)["flipped"][1] == "failed"


def test_drift_above_the_limit_rebuilds_and_the_projector_resumes(orch_conn, tasks_conn, tasks_dsn, tmp_path):
    drifted_world(orch_conn, tasks_conn, tasks_dsn, tmp_path)
    settings = ReconcileSettings(repair_max_rows=2)
    report = reconcile(orch_conn, tasks_conn, AUDIT, settings, now=NOW)
    assert (report.action, report.drift_count, report.rows_changed) == ("rebuild", 3, 4)
    rows = projection(orch_conn)
    assert sorted(rows) == ["flipped", "fresh", "ok", "only_tasks"]
    assert rows["fresh"][1] == "blocked"  # a rebuild takes every status from the Tasks DB
    assert compare(orch_conn, tasks_conn, now=NOW).drift_count == 0
    shadow = orch_conn.execute("SELECT count(*) FROM task_projection_shadow").fetchone()[0]
    assert shadow == 0
    orch_conn.rollback()
    assert projection_lag(orch_conn) == 0  # every event before the rebuild is in it
    # events after the rebuild are applied as usual; a second rebuild swaps back cleanly
    ingest(orch_conn, tmp_path / "next.jsonl", [make_event("task_start", task_id="ok", occurred_at=ts(0.1))])
    assert project_events(orch_conn, tasks_conn).events_applied == 1
    assert projection(orch_conn)["ok"][1] == "running"
    report = reconcile(orch_conn, tasks_conn, AUDIT, force_rebuild=True, now=NOW)
    assert report.action == "rebuild" and len(projection(orch_conn)) == 4
    audited = orch_conn.execute(
        "SELECT operation, after_data->>'rows' FROM audit_ledger ORDER BY occurred_at"
    ).fetchall()
    assert audited == [("rebuild", "4"), ("rebuild", "4")]


def test_readers_never_see_a_half_built_projection(orch_dsn, orch_conn, tasks_conn, tasks_dsn, tmp_path):
    drifted_world(orch_conn, tasks_conn, tasks_dsn, tmp_path)
    ids = "SELECT task_id FROM task_projection"
    before = {r[0] for r in orch_conn.execute(ids)}
    orch_conn.rollback()
    seen = []
    with connection(orch_dsn) as reader:

        def read():
            seen.append({r[0] for r in reader.execute(ids)})
            reader.rollback()

        with orch_conn.transaction():
            rebuild(orch_conn, tasks_conn, AUDIT, reason="test")
            thread = threading.Thread(target=read)
            thread.start()
            thread.join(timeout=1)
            assert thread.is_alive()  # the swap holds its lock until commit: no partial read
        thread.join(timeout=30)
    after = {r[0] for r in orch_conn.execute(ids)}
    orch_conn.rollback()
    assert after != before and seen == [after]  # the whole new projection, not the old one or a part


def test_rebuild_is_refused_when_the_tasks_db_looks_empty(orch_conn, tasks_conn, tasks_dsn, tmp_path):
    drifted_world(orch_conn, tasks_conn, tasks_dsn, tmp_path)
    before = projection(orch_conn)
    with connection(tasks_dsn) as conn, conn.transaction():
        conn.execute("DELETE FROM tasks")
    with pytest.raises(
        ReconcileRefused,
        match="Tasks DB returned 0 tasks but the projection holds 4 — check TASKS_DATABASE_URL",
    ):
        reconcile(orch_conn, tasks_conn, AUDIT, now=NOW)
    with pytest.raises(ReconcileRefused, match="returned 0 tasks"):
        reconcile(orch_conn, tasks_conn, AUDIT, force_rebuild=True, now=NOW)
    with pytest.raises(ReconcileRefused, match="returned 0 tasks"), orch_conn.transaction():
        rebuild(orch_conn, tasks_conn, AUDIT, reason="called directly")  # its own guard, too
    assert projection(orch_conn) == before
    action = orch_conn.execute("SELECT action FROM drift_reports ORDER BY report_id DESC LIMIT 1").fetchone()
    assert action == ("refused",)
    assert orch_conn.execute("SELECT count(*) FROM audit_ledger").fetchone()[0] == 0  # nothing was changed
