"""The task projector: statuses, hydration, ordering, checkpoint and the read-only guard."""

import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline.lib.projection.projector import project_events, projection_lag
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def ingest(conn, path, events):
    return Ingestor(conn, parse_workers=0).ingest_paths([write_jsonl(path, events)])


def add_tasks(tasks_dsn, *rows):
    """rows: (task_id, title, status, priority, tags)."""
    with connection(tasks_dsn) as conn, conn.transaction():
        for task_id, title, status, priority, tags in rows:
            conn.execute(
                "INSERT INTO tasks (task_id, title, status, priority, tags) VALUES (%s, %s, %s, %s, %s::jsonb)",
                (task_id, title, status, priority, tags),
            )


def projection(conn):
    rows = conn.execute(
        "SELECT task_id, title, status, last_status_ts, priority, tags_json, last_event_ts "
        "FROM task_projection ORDER BY task_id"
    ).fetchall()
    conn.rollback()
    return {r[0]: r[1:] for r in rows}


@pytest.fixture
def tasks_conn(tasks_dsn):
    with connection(tasks_dsn) as conn:
        yield conn


def test_statuses_hydration_and_last_event(orch_conn, tasks_conn, tasks_dsn, tmp_path):
    add_tasks(tasks_dsn, ("t1", "Build", "in_progress", 1, '["ci"]'), ("t2", "Test", "done", 2, "[]"))
    events = [
        make_event("task_start", task_id="t1", occurred_at=at(0)),
        make_event("decision", task_id="t1", occurred_at=at(5)),
        make_event("task_start", task_id="t2", occurred_at=at(1)),
        make_event("task_end", task_id="t2", occurred_at=at(2), payload={"success": False, "duration_ms": 3}),
        make_event("agent.progress", task_id="t3", occurred_at=at(7)),
        make_event("metric", task_id="t1", occurred_at=at(9)),  # not a task event: no bump
    ]
    ingest(orch_conn, tmp_path / "a.jsonl", events)
    run = project_events(orch_conn, tasks_conn)
    assert (run.events_applied, run.tasks_updated, run.batches) == (5, 3, 1)
    rows = projection(orch_conn)
    assert rows["t1"][:2] == ("Build", "running")
    assert rows["t1"][3:] == (1, ["ci"], T0 + timedelta(minutes=5))
    assert rows["t2"][1:3] == ("failed", T0 + timedelta(minutes=2))
    # a task the Tasks DB does not know: no title, no status observation yet
    assert rows["t3"][:4] == (None, "pending", None, None)
    assert projection_lag(orch_conn) == 0
    # nothing new: a second run applies nothing and changes nothing
    again = project_events(orch_conn, tasks_conn)
    assert again.events_applied == 0
    assert projection(orch_conn) == rows


def test_a_new_task_without_a_status_event_takes_the_tasks_db_status(
    orch_conn, tasks_conn, tasks_dsn, tmp_path
):
    # it used to start as 'pending', which the next reconciliation always reported as drift
    add_tasks(tasks_dsn, ("t1", "Plan", "in_progress", 1, "[]"), ("t2", "Known", "done", 1, "[]"))
    ingest(orch_conn, tmp_path / "a.jsonl", [make_event("task_start", task_id="t2", occurred_at=at(0))])
    project_events(orch_conn, tasks_conn)
    events = [
        make_event("decision", task_id="t1", occurred_at=at(5)),
        make_event("decision", task_id="t2", occurred_at=at(6)),  # known already: its status stays
    ]
    ingest(orch_conn, tmp_path / "b.jsonl", events)
    project_events(orch_conn, tasks_conn)
    rows = projection(orch_conn)
    assert rows["t1"][1] == "running" and rows["t1"][2] is not None
    assert rows["t2"][1:3] == ("running", T0)


def test_later_status_wins_across_batches(orch_conn, tasks_conn, tmp_path):
    end = make_event("task_end", task_id="t1", occurred_at=at(10))
    start = make_event("task_start", task_id="t1", occurred_at=at(0))
    ingest(orch_conn, tmp_path / "a.jsonl", [end])
    project_events(orch_conn, tasks_conn)
    ingest(orch_conn, tmp_path / "b.jsonl", [start])  # a late, older start must not win
    project_events(orch_conn, tasks_conn)
    row = projection(orch_conn)["t1"]
    assert row[1:3] == ("succeeded", T0 + timedelta(minutes=10))
    assert row[5] == T0 + timedelta(minutes=10)


def test_batches_and_checkpoint(orch_conn, tasks_conn, tmp_path):
    events = [make_event("task_start", task_id=f"t{i}", occurred_at=at(i)) for i in range(25)]
    ingest(orch_conn, tmp_path / "a.jsonl", events)
    seen = []
    run = project_events(
        orch_conn, tasks_conn, batch_events=10, progress=lambda r: seen.append(r.events_applied)
    )
    assert seen == [10, 20, 25]
    assert run.events_applied == 25 and len(projection(orch_conn)) == 25
    applied = orch_conn.execute("SELECT events_applied FROM projection_checkpoints").fetchone()[0]
    assert applied == 25
    latency = orch_conn.execute(
        "SELECT tags->>'stat', value FROM metrics WHERE name = 'projection_sync_latency_ms' ORDER BY 1"
    ).fetchall()
    assert [stat for stat, _ in latency] == ["avg", "p95"] and all(v >= 0 for _, v in latency)


def test_projection_is_read_only_outside_the_projector(orch_conn, tasks_conn, tmp_path):
    ingest(orch_conn, tmp_path / "a.jsonl", [make_event("task_start", task_id="t1")])
    project_events(orch_conn, tasks_conn)
    for statement in (
        "UPDATE task_projection SET status = 'failed'",
        "DELETE FROM task_projection",
        "INSERT INTO task_projection (task_id) VALUES ('x')",
        "TRUNCATE task_projection",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="read-only and rebuildable"):
            orch_conn.execute(statement)
        orch_conn.rollback()
    assert list(projection(orch_conn)) == ["t1"]


def test_uncommitted_insert_is_never_skipped(orch_dsn, orch_conn, tasks_conn, tmp_path):
    """The high-water-mark bug: an event committed after newer ones must still be applied."""
    ingest(orch_conn, tmp_path / "a.jsonl", [make_event("task_start", task_id="slow", occurred_at=at(0))])
    project_events(orch_conn, tasks_conn)
    with connection(orch_dsn) as slow:
        # a long ingest transaction: its task_end is inserted but not committed yet
        slow.execute(
            "INSERT INTO events (event_id, event_type, occurred_at, task_id, payload) "
            "VALUES (gen_random_uuid(), 'task_end', %s, 'slow', '{\"success\": true, \"duration_ms\": 1}')",
            (T0 + timedelta(minutes=3),),
        )
        # meanwhile later transactions commit events, and the projector runs
        ingest(orch_conn, tmp_path / "b.jsonl", [make_event("task_start", task_id="fast", occurred_at=at(4))])
        run = project_events(orch_conn, tasks_conn)
        assert run.events_applied == 0  # 'fast' waits behind the open transaction: lag, not a skip
        slow.commit()
    run = project_events(orch_conn, tasks_conn)
    assert run.events_applied == 2
    rows = projection(orch_conn)
    assert rows["slow"][1] == "succeeded" and rows["fast"][1] == "running"


def test_concurrent_ingestion_and_projector_lose_nothing(orch_dsn, tasks_dsn, tmp_path):
    files = 12
    per_file = 200
    stop = threading.Event()
    errors = []

    def ingest_all():
        try:
            with connection(orch_dsn) as conn:
                for f in range(files):
                    events = []
                    for i in range(per_file):
                        task = f"t{f}-{i}"
                        events.append(make_event("task_start", task_id=task, occurred_at=at(i)))
                        events.append(make_event("task_end", task_id=task, occurred_at=at(i + 1)))
                    ingest(conn, tmp_path / f"f{f}.jsonl", events)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            stop.set()

    def project_loop():
        try:
            with connection(orch_dsn) as conn, connection(tasks_dsn) as tasks:
                while not stop.is_set():
                    project_events(conn, tasks, batch_events=97)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ingest_all), threading.Thread(target=project_loop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    with connection(orch_dsn) as conn, connection(tasks_dsn) as tasks:
        project_events(conn, tasks)
        rows = projection(conn)
        applied = conn.execute("SELECT events_applied FROM projection_checkpoints").fetchone()[0]
    assert len(rows) == files * per_file
    assert {r[1] for r in rows.values()} == {"succeeded"}
    assert applied == 2 * files * per_file


_STATUS_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["task_start", "task_end_ok", "task_end_fail", "decision", "agent.progress"]),
        st.integers(min_value=0, max_value=6),  # few distinct minutes: plenty of ties
    ),
    min_size=1,
    max_size=14,
)


def _events(spec):
    out = []
    for task, kind, minute in spec:
        if kind.startswith("task_end"):
            payload = {"success": kind == "task_end_ok", "duration_ms": 1}
            out.append(make_event("task_end", task_id=task, occurred_at=at(minute), payload=payload))
        else:
            out.append(make_event(kind, task_id=task, occurred_at=at(minute)))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=_STATUS_EVENTS, data=st.data())
def test_result_is_independent_of_ingestion_order(databases, tasks_dsn, tmp_path_factory, spec, data):
    events = _events(spec)
    order = data.draw(st.permutations(range(len(events))))
    cut = data.draw(st.integers(min_value=0, max_value=len(events)))
    results = []
    for sequence in (list(range(len(events))), list(order)):
        dsn = databases.migrated("orchestration", "perm")
        tmp = tmp_path_factory.mktemp("perm")
        with connection(dsn) as conn, connection(tasks_dsn) as tasks:
            # two ingestion runs, with the projector between them, in this order
            first = [events[i] for i in sequence[:cut]]
            second = [events[i] for i in sequence[cut:]]
            for n, chunk in enumerate((first, second)):
                if chunk:
                    ingest(conn, tmp / f"{n}-{uuid.uuid4().hex}.jsonl", chunk)
                project_events(conn, tasks, batch_events=3)
            results.append(projection(conn))
        databases.drop(dsn)  # one example's databases at a time, not every example's at teardown
    assert results[0] == results[1]
