"""The manifest's content hashes: independent of row order and of the session, sensitive to any change."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.restore.manifest import database_state, prepare_session, table_hash
from orchestration_pipeline.lib.restore.verify import check_content_hashes, check_row_counts
from orchestration_pipeline_tests.conftest import make_event
from orchestration_pipeline_tests.restore._support import seed

pytestmark = pytest.mark.db

COLUMNS = "event_id, event_type, occurred_at, session_id, task_id, payload, received_at"


def _insert(dsn: str, events: list[dict]) -> None:
    with connection(dsn) as conn:
        for e in events:
            conn.execute(
                f"INSERT INTO events ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, '{{}}', '2026-01-02T03:04:05Z')",
                (e["event_id"], e["event_type"], e["occurred_at"], e["session_id"], e.get("task_id")),
            )
        conn.commit()


def test_the_same_rows_in_another_order_hash_alike_and_one_change_does_not(databases):
    events = [make_event("task_start", minutes_ago=i, task_id=f"T-{i}") for i in range(1, 30)]
    a = databases.migrated("orchestration")
    _insert(a, events)
    b = databases.create("copy", template=conninfo_to_dict(a)["dbname"])  # the same rows, byte for byte
    first = events[0]["event_id"]
    with connection(b) as cb:
        cb.execute("SET session_replication_role = replica")  # past the guard triggers: a tampered copy
        cb.execute("UPDATE events SET payload = payload WHERE occurred_at > now() - interval '10 minutes'")
        cb.commit()
        order = [str(r[0]) for r in cb.execute("SELECT event_id FROM events")]
    assert order[0] != first, "the rows were meant to be stored in another order"
    assert database_state(a).content_hashes["events"] == database_state(b).content_hashes["events"]
    with connection(b) as cb:
        cb.execute("SET session_replication_role = replica")
        cb.execute("UPDATE events SET session_id = 's-2' WHERE event_id = %s", (events[5]["event_id"],))
        cb.commit()
    expected, found = database_state(a), database_state(b)
    assert expected.row_counts == found.row_counts
    assert check_row_counts(expected, found).passed
    changed = check_content_hashes(expected, found)
    assert not changed.passed and changed.detail.endswith("1 table: events")


def test_the_hash_does_not_depend_on_the_sessions_time_zone(orch_dsn):
    _insert(orch_dsn, [make_event("task_start", task_id="T-1")])
    with connection(orch_dsn) as conn:
        prepare_session(conn)
        utc = table_hash(conn, "events")
        conn.execute("SET TimeZone = 'Asia/Kolkata'")
        kolkata = table_hash(conn, "events")
    assert utc[0] == 1 and utc != kolkata  # the row's text changes with the zone ...
    assert database_state(orch_dsn).content_hashes["events"]["hash"] == utc[1]  # ... so the manifest fixes it


def test_the_state_records_the_schema_head_the_checkpoint_and_the_newest_event(orch_dsn, tasks_dsn, tmp_path):
    seeded = seed(orch_dsn, tasks_dsn, tmp_path, sessions=2)
    state = database_state(orch_dsn, workers=3)
    with connection(orch_dsn) as conn:
        head = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        newest = conn.execute("SELECT max(received_at) FROM events").fetchone()[0]
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN "
            "(SELECT inhrelid::regclass::text FROM pg_inherits)"
        ).fetchone()[0]
    assert state.migration_head == head and state.max_received_at == newest
    assert state.audit_checkpoint_head.startswith(f"{seeded['checkpoint']}:")
    assert state.row_counts["events"] == seeded["events"] and len(state.row_counts) >= tables - 1
    assert set(state.content_hashes) == {
        "events",
        "decisions",
        "audit_ledger",
        "task_projection",
        "decision_executions",
    }
    assert database_state(orch_dsn, workers=1).content_hashes == state.content_hashes
