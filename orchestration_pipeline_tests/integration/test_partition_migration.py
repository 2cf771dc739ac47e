"""0019: a populated events table becomes daily partitions without losing a row."""

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from orchestration_pipeline.lib.db import connection, migrate
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline.lib.retention.partitions import (
    default_partition_rows,
    ensure_partitions,
    layout,
    list_partitions,
)
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db


def _old_writer(conn, events: list[dict]) -> None:
    """Rows as the writer before 0019 stored them (no event_ids), one id twice at two times among them."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO events (event_id, event_type, occurred_at, session_id, task_id, source, payload) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)",
            [(e["event_id"], e["event_type"], e["occurred_at"], e.get("session_id"), e.get("task_id"),
              e.get("source"), json.dumps(e["payload"])) for e in events],
        )  # fmt: skip
        cur.executemany(
            "INSERT INTO metrics (name, value, recorded_at) VALUES (%s, %s, %s)",
            [("rows_read", i, e["occurred_at"]) for i, e in enumerate(events[:50])],
        )
    conn.commit()


def test_a_populated_events_table_is_partitioned_row_for_row(databases, tmp_path):
    dsn = databases.migrated("orchestration", "part", upto=18)
    now = datetime.now(UTC)
    events = [
        make_event(
            "task_start" if i % 3 else "decision", minutes_ago=i * 97, session_id=f"s{i % 7}", task_id=f"t{i}"
        )
        for i in range(300)
    ] + [make_event("metric", minutes_ago=60 * 24 * 500, payload={"name": "old", "value": 1})]  # 500 days ago
    events.append(
        {**events[1], "occurred_at": (now - timedelta(minutes=90)).isoformat()}
    )  # the same id, later
    with connection(dsn) as conn:
        _old_writer(conn, events)
        before = conn.execute(
            "SELECT md5(string_agg(to_jsonb(e)::text, '|' ORDER BY event_id, occurred_at)), count(*) FROM events e"
        ).fetchone()
        metrics_before = conn.execute("SELECT count(*), max(metric_id) FROM metrics").fetchone()
        assert layout(conn, "events") == "plain"
        conn.rollback()
        applied = [m.version for m in migrate(conn, "orchestration")]
        after = conn.execute(
            "SELECT md5(string_agg(to_jsonb(e)::text, '|' ORDER BY event_id, occurred_at)), count(*) FROM events e"
        ).fetchone()
        metrics_after = conn.execute("SELECT count(*), max(metric_id) FROM metrics").fetchone()
        parts = list_partitions(conn, "events")
        ids = conn.execute("SELECT count(*) FROM event_ids").fetchone()[0]
        kept = conn.execute(
            "SELECT occurred_at FROM event_ids WHERE event_id = %s", (events[1]["event_id"],)
        ).fetchone()[0]
        # identities keep counting after the copy
        conn.execute("INSERT INTO metrics (name, value) VALUES ('after', 1)")
        new_id = conn.execute("SELECT max(metric_id) FROM metrics").fetchone()[0]
        assert layout(conn, "events") == "native" and layout(conn, "metrics") == "native"
        conn.commit()
        # a day with no partition (nothing was stored that day) waits in the default partition
        Ingestor(conn).ingest_paths(
            [write_jsonl(tmp_path / "b.jsonl", [make_event("task_start", minutes_ago=60 * 24 * 45)])]
        )
        stray = default_partition_rows(conn, "events")
    assert 19 in applied
    assert after == before and metrics_after == metrics_before
    assert ids == before[1] - 1  # one identity per event_id: the id stored twice keeps its first time
    assert kept == datetime.fromisoformat(events[1]["occurred_at"])
    assert new_id > metrics_before[1]
    days = {p.day for p in parts if p.day}
    assert (now - timedelta(minutes=299 * 97)).date() in days and now.date() in days
    assert (now + timedelta(days=7)).date() in days  # created ahead
    assert (now - timedelta(days=500)).date() in days  # every day holding rows got its partition
    assert stray == 1


def test_every_partition_refuses_delete_and_truncate(orch_dsn):
    with connection(orch_dsn) as conn:
        name = list_partitions(conn, "events")[0].name
        for statement in (f"DELETE FROM {name}", f"TRUNCATE {name}", "DELETE FROM events_default"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


def test_ensure_partitions_gives_stray_rows_their_day(orch_dsn, tmp_path):
    old = datetime.now(UTC) - timedelta(days=90)
    event = make_event("task_start", minutes_ago=60 * 24 * 90)
    with connection(orch_dsn) as conn:
        Ingestor(conn).ingest_paths([write_jsonl(tmp_path / "old.jsonl", [event])])
        assert default_partition_rows(conn, "events") == 1
        created = ensure_partitions(
            conn, "events", old.date() - timedelta(days=1), old.date() + timedelta(days=1)
        )
        conn.commit()
        where = conn.execute(
            "SELECT tableoid::regclass::text FROM events WHERE event_id = %s", (event["event_id"],)
        ).fetchone()[0]
        assert default_partition_rows(conn, "events") == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"DELETE FROM {where}")
    assert (
        len(created) == 3
        and where == f"events_p{datetime.fromisoformat(event['occurred_at']).astimezone(UTC):%Y%m%d}"
    )
    json.dumps(created)


def test_a_partition_whose_guard_is_off_fails_the_accounting_check(orch_dsn):
    from orchestration_pipeline.lib.ingestion.checks import events_accounted_for

    with connection(orch_dsn) as conn:
        name = list_partitions(conn, "events")[0].name
        assert events_accounted_for(conn).passed
        conn.execute(f"ALTER TABLE {name} DISABLE TRIGGER {name}_refuse_delete")
        conn.commit()
        verdict = events_accounted_for(conn)
    assert not verdict.passed
    assert f"events partition {name}: the BEFORE DELETE guard" in verdict.description
    assert f"SELECT retention_guard_partition('{name}')" in verdict.description
