"""The daily partitions of the high-volume tables, native or TimescaleDB.

``events`` (by ``occurred_at``) and ``metrics`` (by ``recorded_at``) are range-partitioned by UTC
day. Natively, each day is a partition named ``<table>_pYYYYMMDD`` covering
``[day 00:00 UTC, next day 00:00 UTC)``, created ahead of time (:func:`ensure_partitions`), and
``<table>_default`` catches rows outside every daily partition (a check reports any). Where
TimescaleDB is installed, the tables are hypertables with one-day chunks instead
(``layout(...) == "timescaledb"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import psycopg
from psycopg import sql

#: The partitioned tables and the column each is partitioned by.
TIME_COLUMN = {"events": "occurred_at", "metrics": "recorded_at"}


@dataclass(frozen=True)
class Partition:
    table: str  # the parent: events | metrics
    name: str  # the partition (or chunk) relation, schema-qualified for chunks
    day: date | None  # None for the default partition
    lower: datetime | None
    upper: datetime | None

    @property
    def is_default(self) -> bool:
        return self.day is None


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def day_range(day: date) -> tuple[datetime, datetime]:
    """``[day 00:00 UTC, next day 00:00 UTC)``."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _check_table(table: str) -> None:
    if table not in TIME_COLUMN:
        raise ValueError(f"{table!r} is not a partitioned table (one of {', '.join(TIME_COLUMN)})")


def layout(conn: psycopg.Connection, table: str) -> str:
    """'timescaledb' (a hypertable), 'native' (declarative range partitions) or 'plain'."""
    _check_table(table)
    row = conn.execute("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)", (table,)).fetchone()
    if row is None:
        raise ValueError(f"table {table} does not exist — run 'orchestration-pipeline db migrate'")
    if row[0] == "p":
        return "native"
    hyper = conn.execute("SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL").fetchone()[
        0
    ]
    if (
        hyper
        and conn.execute(
            "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s", (table,)
        ).fetchone()
    ):
        return "timescaledb"
    return "plain"


def list_partitions(conn: psycopg.Connection, table: str) -> list[Partition]:
    """The native partitions of ``table``, oldest day first, the default partition last."""
    _check_table(table)
    rows = conn.execute(
        """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = to_regclass(%s)""",
        (table,),
    ).fetchall()
    parts = []
    for name, bound in rows:
        if bound == "DEFAULT":
            parts.append(Partition(table, name, None, None, None))
            continue
        day = datetime.strptime(name.rsplit("_p", 1)[1], "%Y%m%d").date()
        lower, upper = day_range(day)
        parts.append(Partition(table, name, day, lower, upper))
    return sorted(parts, key=lambda p: (p.day is None, p.day or date.min))


def ensure_partitions(conn: psycopg.Connection, table: str, first: date, last: date) -> list[str]:
    """Create the daily partitions of ``[first, last]`` that are missing (native layout only), in
    the caller's transaction, through ``retention_ensure_partition`` (sql/orchestration/0019): rows
    of a new day already caught by the default partition move into it. Returns the names created."""
    _check_table(table)
    if layout(conn, table) != "native":
        return []
    created = conn.execute(
        "SELECT retention_ensure_partition(%s, d::date) FROM generate_series(%s::date, %s::date, '1 day') d",
        (table, first, last),
    ).fetchall()
    return [name for (name,) in created if name]


def default_partition_rows(conn: psycopg.Connection, table: str) -> int:
    """Rows in ``<table>_default`` (a timestamp outside every daily partition); 0 when there is none."""
    _check_table(table)
    if conn.execute("SELECT to_regclass(%s)", (f"{table}_default",)).fetchone()[0] is None:
        return 0
    return conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{table}_default"))
    ).fetchone()[0]


def ensure_ahead(conn: psycopg.Connection, today: date, *, back: int = 1, ahead: int = 7) -> list[str]:
    """The daily partitions of ``[today - back, today + ahead]`` for events and metrics, in a short
    transaction of their own that gives up after 2 s waiting for a lock (another writer's long
    transaction): creating a partition locks its parent, and this must never stall ingestion. A
    day left without a partition is caught by the default partition until the next call.
    Returns the partitions created."""
    created: list[str] = []
    try:
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '2s'")
            for table in TIME_COLUMN:
                created += ensure_partitions(
                    conn, table, today - timedelta(days=back), today + timedelta(days=ahead)
                )
    except psycopg.errors.LockNotAvailable:
        return []
    return created
