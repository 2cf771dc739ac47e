"""Shared helpers of the retention tests: days of rows in the partitioned tables, and a policy."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from orchestration_pipeline.lib.retention.partitions import ensure_partitions
from orchestration_pipeline.lib.retention.run import Identity, RetentionPolicy, today_utc

WHO = Identity("test:retention", "req-retention")


def old_day(days_ago: int = 40) -> date:
    """A day well past the default 30-day archive window."""
    return today_utc() - timedelta(days=days_ago)


def midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


def seed_events(
    conn: psycopg.Connection, day: date, n: int = 200, *, files: int = 3, partition: bool = True
) -> None:
    """``n`` events of ``day`` spread over its hours, from ``files`` landing files, with NULLs, jsonb
    and text that needs quoting; the day gets its partition (rows in the default move into it)."""
    conn.execute(
        """INSERT INTO events (event_id, event_type, occurred_at, session_id, task_id, source, stage, severity,
                               status, duration_ms, payload, source_file, source_line)
           SELECT gen_random_uuid(), (ARRAY['decision','task_start','task_end','agent.progress'])[1 + i %% 4],
                  %s::timestamptz + i * (interval '86399 seconds' / greatest(%s, 1)),
                  's-' || (i %% 7), CASE WHEN i %% 3 = 0 THEN NULL ELSE 'T-' || i END, 'test',
                  CASE WHEN i %% 5 = 0 THEN 'db' END, 'info', NULL,
                  CASE WHEN i %% 2 = 0 THEN i END,
                  jsonb_build_object('rationale', 'line, "quoted"' || chr(10) || 'next ' || i, 'n', i, 'f', i / 3.0),
                  CASE WHEN i %% 11 = 0 THEN NULL ELSE '/landing/file-' || (i %% %s) || '.jsonl' END, i + 1
           FROM generate_series(0, %s - 1) AS i""",
        (midnight(day), n, files, n),
    )
    if partition:
        ensure_partitions(conn, "events", day, day)
    conn.commit()


def seed_metrics(conn: psycopg.Connection, day: date, n: int = 50) -> None:
    conn.execute(
        """INSERT INTO metrics (name, value, unit, tags, session_id, recorded_at)
           SELECT 'm' || (i %% 3), i / 7.0, 'ms', jsonb_build_object('i', i), NULL, %s::timestamptz + i * interval '1 minute'
           FROM generate_series(0, %s - 1) AS i""",
        (midnight(day), n),
    )
    ensure_partitions(conn, "metrics", day, day)
    conn.commit()


def policy(tmp_path: Path, **overrides) -> RetentionPolicy:
    return RetentionPolicy(archive_root=str(tmp_path / "archive"), **overrides)


def partition_exists(conn: psycopg.Connection, name: str) -> bool:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]
    conn.rollback()
    return exists


def statuses(conn: psycopg.Connection, table: str, day: date) -> list[str]:
    rows = conn.execute(
        "SELECT status FROM archive_manifests WHERE table_name = %s AND day = %s ORDER BY manifest_id",
        (table, day),
    ).fetchall()
    conn.rollback()
    return [r[0] for r in rows]
