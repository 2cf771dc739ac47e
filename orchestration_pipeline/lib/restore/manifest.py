"""The backup manifest: what the database held when it was dumped, computed inside PostgreSQL.

A manifest records, for one snapshot of the orchestration DB:

* the ``schema_migrations`` head, and every applied version with its name and sha256;
* the exact row count of every table (partitioned tables counted through their parent);
* an order-independent content hash of each critical table (:data:`CRITICAL_TABLES`);
* the audit chain's checkpoint head (``SEQ:HASH``), the newest ``received_at`` of ``events`` and
  the installed extensions.

The same functions compute the same values on the source (in the dump's snapshot, exported to
``pg_dump --snapshot``) and on the restored copy, so equal values mean equal content.

**Content hash, version 1.** For each row, ``hashtextextended(row::text, 0)`` (a 64-bit hash of
the row's text form); the table's hash is the sha256 of ``v1|<rows>|<sum of the row hashes>``,
the sum taken as an exact numeric. A sum does not depend on row order, so the physical order
pg_restore writes rows in does not matter; a changed, added or removed row changes it (two
random changes cancelling out has odds of about 2^-64). Measured on 1,000,000 event rows:
``hashtextextended`` adds about 1 s to the 2.4 s of producing the row text, md5 or sha256 per row
about 4.5 s. The row text depends on session settings (a timestamptz prints in the session's time
zone), so every connection computing a manifest first sets :data:`SESSION_SETTINGS`. The function
is PostgreSQL's own hash for hash partitioning: the same on every server of one architecture's
byte order, which is where a manifest is compared (the copy is restored on the source's server).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from orchestration_pipeline.lib.db import connect

#: The tables whose content is hashed: the events, the decisions, the audit ledger, the projection
#: and the executions of decisions.
CRITICAL_TABLES = ("events", "decisions", "audit_ledger", "task_projection", "decision_executions")
#: What the text form of a row depends on, fixed for every connection that computes a manifest.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}
HASH_VERSION = "v1"
#: Aggregates computed in the same scan as a table's hash (one pass over the largest table).
_EXTRA_AGGREGATES = {"events": "max(t.received_at)"}


def prepare_session(conn: psycopg.Connection) -> None:
    """Fix the settings the text form of a row depends on, for the whole session."""
    for name, value in SESSION_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))


def user_tables(conn: psycopg.Connection) -> list[str]:
    """The tables of the ``public`` schema, partitions left out (their parent counts them)."""
    rows = conn.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           ORDER BY c.relname"""
    ).fetchall()
    return [r[0] for r in rows]


def _estimated_rows(conn: psycopg.Connection, tables: list[str]) -> dict[str, float]:
    """Planner estimates (partitions summed into their parent), to hand out the largest work first."""
    rows = conn.execute(
        """SELECT coalesce(p.relname, c.relname), sum(greatest(c.reltuples, 0))
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_class p ON p.oid = i.inhparent
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') GROUP BY 1"""
    ).fetchall()
    found = dict(rows)
    return {t: float(found.get(t, 0)) for t in tables}


def content_digest(rows: int, total: Any) -> str:
    """The content hash of a table from its row count and the exact sum of its row hashes."""
    return hashlib.sha256(f"{HASH_VERSION}|{rows}|{total}".encode()).hexdigest()


def table_hash(conn: psycopg.Connection, table: str) -> tuple[int, str, Any]:
    """(rows, content hash, extra aggregate or None) of ``table``, in one scan."""
    extra = _EXTRA_AGGREGATES.get(table, "NULL")
    query = sql.SQL(
        "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0), {extra} FROM {table} AS t"
    ).format(extra=sql.SQL(extra), table=sql.Identifier(table))
    rows, total, extra_value = conn.execute(query).fetchone()
    return int(rows), content_digest(int(rows), total), extra_value


def table_count(conn: psycopg.Connection, table: str) -> int:
    return int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0])


@dataclass
class DatabaseState:
    """What a manifest records about the database (the dump file's part is added by the backup)."""

    server_version: str = ""
    migrations: list[dict[str, Any]] = field(default_factory=list)  # version, name, sha256
    row_counts: dict[str, int] = field(default_factory=dict)
    content_hashes: dict[str, dict[str, Any]] = field(default_factory=dict)  # table: {rows, hash}
    audit_checkpoint_head: str | None = None
    max_received_at: datetime | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    taken_at: datetime | None = None  # the snapshot's time (now() in it)

    @property
    def migration_head(self) -> int | None:
        return max((m["version"] for m in self.migrations), default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "server_version": self.server_version,
            "schema_migrations": {"head": self.migration_head, "applied": self.migrations},
            "row_counts": dict(sorted(self.row_counts.items())),
            "content_hashes": {"version": HASH_VERSION, "tables": dict(sorted(self.content_hashes.items()))},
            "audit_checkpoint_head": self.audit_checkpoint_head,
            "max_received_at": self.max_received_at.isoformat() if self.max_received_at else None,
            "extensions": self.extensions,
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> DatabaseState:
        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            server_version=body.get("server_version", ""),
            migrations=list(body["schema_migrations"]["applied"]),
            row_counts=dict(body["row_counts"]),
            content_hashes=dict(body["content_hashes"]["tables"]),
            audit_checkpoint_head=body.get("audit_checkpoint_head"),
            max_received_at=when(body.get("max_received_at")),
            extensions=dict(body.get("extensions") or {}),
            taken_at=when(body.get("taken_at")),
        )


def _read_metadata(conn: psycopg.Connection, state: DatabaseState) -> None:
    """Migrations, checkpoint head, extensions, version and snapshot time (cheap: one connection)."""
    state.server_version = conn.execute("SELECT current_setting('server_version')").fetchone()[0].split()[0]
    state.taken_at = conn.execute("SELECT now()").fetchone()[0]
    if conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]:
        state.migrations = [
            {"version": v, "name": n, "sha256": s}
            for v, n, s in conn.execute(
                "SELECT version, name, sha256 FROM schema_migrations ORDER BY version"
            )
        ]
    if conn.execute("SELECT to_regclass('audit_checkpoints') IS NOT NULL").fetchone()[0]:
        head = conn.execute(
            """SELECT checkpoint_seq || ':' || encode(checkpoint_hash, 'hex') FROM audit_checkpoints
               ORDER BY checkpoint_seq DESC LIMIT 1"""
        ).fetchone()
        state.audit_checkpoint_head = head[0] if head else None
    state.extensions = dict(conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY extname"))


def _worker_connection(dsn: str, snapshot: str | None) -> psycopg.Connection:
    """A connection in a REPEATABLE READ, read-only transaction, in ``snapshot`` when given."""
    conn = connect(dsn)
    try:
        prepare_session(conn)
        conn.commit()
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if snapshot is not None:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    except BaseException:
        conn.close()
        raise
    return conn


def database_state(dsn: str, *, snapshot: str | None = None, workers: int = 2) -> DatabaseState:
    """Compute the manifest's database part over ``workers`` connections, each reading one
    consistent snapshot: ``snapshot`` (from ``pg_export_snapshot()``) when given, else each its own
    (for a database nobody else writes to, such as a restored copy). Largest tables first."""
    state = DatabaseState()
    first = _worker_connection(dsn, snapshot)
    try:
        _read_metadata(first, state)
        tables = user_tables(first)
        sizes = _estimated_rows(first, tables)
        work: queue.Queue[str] = queue.Queue()
        for table in sorted(tables, key=lambda t: (-sizes[t], t)):
            work.put(table)
        lock = threading.Lock()

        def one(conn: psycopg.Connection, table: str) -> None:
            if table in CRITICAL_TABLES:
                rows, digest, extra = table_hash(conn, table)
                with lock:
                    state.row_counts[table] = rows
                    state.content_hashes[table] = {"rows": rows, "hash": digest}
                    if table == "events":
                        state.max_received_at = extra
            else:
                rows = table_count(conn, table)
                with lock:
                    state.row_counts[table] = rows

        _drain(dsn, snapshot, first, work, one, max(1, workers))
    finally:
        first.close()
    return state


def _drain(
    dsn: str,
    snapshot: str | None,
    first: psycopg.Connection,
    work: queue.Queue[str],
    one: Callable[[psycopg.Connection, str], None],
    workers: int,
) -> None:
    """Run ``one(conn, table)`` for every queued table on ``workers`` connections (``first`` and
    more); the first error stops the rest and is raised."""
    errors: list[BaseException] = []

    def run(conn: psycopg.Connection | None) -> None:
        own = conn is None
        try:
            conn = conn or _worker_connection(dsn, snapshot)
            while not errors:
                try:
                    table = work.get_nowait()
                except queue.Empty:
                    return
                one(conn, table)
        except BaseException as exc:  # reported by the caller's thread
            errors.append(exc)
        finally:
            if own and conn is not None:
                conn.close()

    threads = [threading.Thread(target=run, args=(None,), daemon=True) for _ in range(workers - 1)]
    for thread in threads:
        thread.start()
    run(first)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
