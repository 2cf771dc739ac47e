"""Helpers shared by the fault-injection tests: event lines, table counts, deadlines."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import sql

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import INGEST_TABLES

SECRET = "hunter2"


def valid_event(i: int, now: datetime | None = None) -> dict[str, Any]:
    """A valid, distinct event (explicit uuid4 id, occurred_at within the last day)."""
    now = now or datetime.now(UTC)
    kind = ("task_start", "task_end", "metric", "decision")[i % 4]
    payload: dict[str, Any] = {
        "task_start": {"attempt": 1},
        "task_end": {"success": i % 3 != 0, "duration_ms": i},
        "metric": {"name": "rows_read", "value": i, "unit": "rows"},
        "decision": {"rationale": f"picked plan {i}"},
    }[kind]
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": kind,
        # spread over the last ~22 hours, always in the past
        "occurred_at": (now - timedelta(seconds=60 + (i * 7919) % 79_000)).isoformat(),
        "session_id": f"session-{i % 97}",
        "task_id": f"task-{i}",
        "source": "faults-test",
        "stage": "ingest",
        "severity": "info",
        "status": "completed",
        "payload": payload,
    }


def line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def bad_line(i: int, now: datetime) -> tuple[bytes, str]:
    """A line that must be quarantined, and its failure type (cycles through four kinds)."""
    ev = valid_event(i, now)
    match i % 4:
        case 0:
            return b'{"event_type":"task_start","occurred_at":' + str(i).encode() + b",", "malformed_json"
        case 1:
            del ev["occurred_at"]
            return line(ev), "missing_field"
        case 2:
            ev["event_type"] = "task_end"
            ev["payload"] = {"success": True, "duration_ms": str(i)}
            return line(ev), "wrong_type"
        case _:
            ev["event_type"] = "task_teleport"
            return line(ev), "unknown_event_type"


def table_counts(dsn: str, tables: tuple[str, ...] = INGEST_TABLES) -> dict[str, int]:
    with connection(dsn, autocommit=True) as conn:
        return {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
            for t in tables
        }


def rows_mentioning(dsn: str, needle: str, tables: tuple[str, ...] = INGEST_TABLES) -> dict[str, int]:
    """Per table, how many rows contain ``needle`` in any column (the whole row cast to text)."""
    with connection(dsn, autocommit=True) as conn:
        return {
            t: conn.execute(
                sql.SQL("SELECT count(*) FROM {} AS r WHERE r::text LIKE %s").format(sql.Identifier(t)),
                (f"%{needle}%",),
            ).fetchone()[0]
            for t in tables
        }


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def counts_of(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("files", "skipped_files", "lines", "accepted", "quarantined", "duplicates", "collapsed")
    return {k: summary[k] for k in keys}


def write_lines(path: Path, lines: list[bytes], *, newline: bytes = b"\n") -> Path:
    path.write_bytes(b"".join(raw + newline for raw in lines))
    return path
