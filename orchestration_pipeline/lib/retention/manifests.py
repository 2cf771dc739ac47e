"""The archive manifests (``archive_manifests``): one row per Parquet archive of a day of a table.

A manifest records what was archived (table, partition or chunk, range, row count, the content
hash Postgres computed, the column list), where (file URI, sha256, size), under which schema
version, and its status. Statuses move forward only (the table's trigger enforces it):
exported -> verified -> purged -> restored, or to failed / superseded (a late row: the day is
archived again under a new manifest, the old one stays as a record).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from orchestration_pipeline.lib.retention.canonical import Column, ContentHash, columns_from_dicts

#: Statuses under which a day's archive is in force: the rows are live (exported, verified) or purged.
IN_FORCE = ("exported", "verified", "purged")
#: Statuses whose rows exist nowhere but in the archive file.
PURGED = ("purged",)

_COLUMNS = (
    "manifest_id, table_name, partition_name, layout, day, part, range_start, range_end, row_count, "
    "content_hash, columns, source_file_counts, file_uri, file_sha256, file_bytes, schema_version, status, "
    "error, export_ms, verify_ms, exported_at, verified_at, purged_at, status_changed_at, superseded_by"
)


@dataclass(frozen=True)
class Manifest:
    manifest_id: int
    table_name: str
    partition_name: str
    layout: str
    day: date
    part: int
    range_start: datetime
    range_end: datetime
    row_count: int | None
    content_hash: int | None
    columns: list[dict]
    source_file_counts: dict[str, int] | None
    file_uri: str
    file_sha256: str | None
    file_bytes: int | None
    schema_version: int
    status: str
    error: str | None
    export_ms: int | None
    verify_ms: int | None
    exported_at: datetime
    verified_at: datetime | None
    purged_at: datetime | None
    status_changed_at: datetime
    superseded_by: int | None

    @property
    def content(self) -> ContentHash:
        return ContentHash(int(self.row_count or 0), int(self.content_hash or 0))

    @property
    def column_list(self) -> list[Column]:
        return columns_from_dicts(self.columns)

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        for key, value in body.items():
            if isinstance(value, datetime | date):
                body[key] = value.isoformat()
        return body


@contextmanager
def autocommit(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """Run with ``conn`` in autocommit, so every ``conn.transaction()`` below is a real transaction
    that commits on exit (never a savepoint inside a caller's open one). Refuses a connection with
    a transaction in progress: its owner must commit or roll back first."""
    if conn.autocommit:
        yield conn
        return
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError(
            "retention needs a connection with no transaction in progress — commit or roll back first"
        )
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.autocommit = False


def schema_version(conn: psycopg.Connection) -> int:
    """The head of ``schema_migrations`` (the schema the archived rows were written under)."""
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])


def _fetch(conn: psycopg.Connection, where: str, params: tuple | dict) -> list[Manifest]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_COLUMNS} FROM archive_manifests WHERE {where}", params).fetchall()
    return [Manifest(**row) for row in rows]


def get(conn: psycopg.Connection, manifest_id: int, *, for_update: bool = False) -> Manifest:
    lock = " FOR UPDATE" if for_update else ""
    found = _fetch(conn, f"manifest_id = %s{lock}", (manifest_id,))
    if not found:
        raise LookupError(f"no archive manifest {manifest_id} — see 'orchestration-pipeline archive list'")
    return found[0]


def for_day(conn: psycopg.Connection, table: str, day: date) -> list[Manifest]:
    """Every manifest of ``table``'s ``day``, oldest first."""
    return _fetch(conn, "table_name = %s AND day = %s ORDER BY manifest_id", (table, day))


def live(conn: psycopg.Connection, table: str, day: date) -> Manifest | None:
    """The exported or verified manifest of the day's rows still in the table, if any."""
    found = _fetch(
        conn,
        "table_name = %s AND day = %s AND status IN ('exported', 'verified') ORDER BY part DESC",
        (table, day),
    )
    return found[0] if found else None


def latest(conn: psycopg.Connection, table: str, day: date) -> Manifest | None:
    found = _fetch(conn, "table_name = %s AND day = %s ORDER BY manifest_id DESC LIMIT 1", (table, day))
    return found[0] if found else None


def purged_parts(conn: psycopg.Connection, table: str, day: date) -> list[Manifest]:
    """The purged archives of the day (their rows exist only in their files), by part."""
    return _fetch(conn, "table_name = %s AND day = %s AND status = 'purged' ORDER BY part", (table, day))


def next_part(conn: psycopg.Connection, table: str, day: date) -> int:
    """The part a new archive of the day gets: after every part whose rows were purged (or purged and
    restored), so a purged file is never overwritten."""
    row = conn.execute(
        """SELECT coalesce(max(part), 0) + 1 FROM archive_manifests
           WHERE table_name = %s AND day = %s AND status IN ('purged', 'restored')""",
        (table, day),
    ).fetchone()
    return int(row[0])


def listing(
    conn: psycopg.Connection, table: str | None = None, status: str | None = None, limit: int = 100
) -> list[Manifest]:
    """The newest manifests first, optionally of one table or status."""
    return _fetch(
        conn,
        "(%(table)s::text IS NULL OR table_name = %(table)s) AND (%(status)s::text IS NULL OR status = %(status)s) "
        "ORDER BY day DESC, manifest_id DESC LIMIT %(limit)s",
        {"table": table, "status": status, "limit": limit},
    )


def insert(conn: psycopg.Connection, **fields: Any) -> Manifest:
    """Record a new manifest (status ``exported``, or ``failed`` for an export that did not finish)."""
    for key in ("columns", "source_file_counts"):
        if fields.get(key) is not None:
            fields[key] = Jsonb(fields[key])
    names = ", ".join(fields)
    values = ", ".join(f"%({k})s" for k in fields)
    manifest_id = conn.execute(
        f"INSERT INTO archive_manifests ({names}) VALUES ({values}) RETURNING manifest_id", fields
    ).fetchone()[0]
    return get(conn, manifest_id)


def set_status(
    conn: psycopg.Connection,
    manifest_id: int,
    status: str,
    *,
    error: str | None = None,
    verify_ms: int | None = None,
    superseded_by: int | None = None,
) -> None:
    """Move a manifest to ``status`` (the table's trigger refuses a transition that is not allowed)."""
    conn.execute(
        """UPDATE archive_manifests SET status = %(status)s, status_changed_at = now(),
                  error = coalesce(%(error)s, error),
                  verify_ms = coalesce(%(verify_ms)s, verify_ms),
                  superseded_by = coalesce(%(superseded_by)s, superseded_by),
                  verified_at = CASE WHEN %(status)s = 'verified' THEN now() ELSE verified_at END,
                  purged_at = CASE WHEN %(status)s = 'purged' THEN now() ELSE purged_at END
           WHERE manifest_id = %(id)s""",
        {
            "status": status,
            "error": error,
            "verify_ms": verify_ms,
            "superseded_by": superseded_by,
            "id": manifest_id,
        },
    )


class DayBusy(RuntimeError):
    """Another process is archiving, purging or restoring the same day."""


@contextmanager
def day_lock(conn: psycopg.Connection, table: str, day: date) -> Iterator[None]:
    """Hold the day's session advisory lock while archiving, verifying, purging or restoring it, so
    two runs never work on one day at once; :class:`DayBusy` when another process holds it."""
    key = int(day.strftime("%Y%m%d")) * 10 + (1 if table == "events" else 2)
    taken = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_CLASS, key)).fetchone()[0]
    if not conn.autocommit:
        conn.commit()
    if not taken:
        raise DayBusy(
            f"{table} {day} is being archived, purged or restored by another process — try again later"
        )
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_CLASS, key))
        if not conn.autocommit:
            conn.commit()


#: The first key of retention's advisory locks (the second is the day and table).
_LOCK_CLASS = 20_020
