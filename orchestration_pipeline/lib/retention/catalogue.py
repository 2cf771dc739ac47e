"""The days a table holds, as the catalogue has them: native daily partitions or daily chunks.

Retention works on one day's relation at a time, named explicitly: the partition
``<table>_pYYYYMMDD`` (native), or the one-day chunk (TimescaleDB), whose rows are read through
the hypertable bounded by exactly the chunk's range, so that rows already moved to the
columnstore are read too. :func:`observe` records every daily relation seen, so that one dropped
later without a verified archive is noticed (``nothing_purged_unarchived``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import psycopg
from psycopg import sql

from orchestration_pipeline.lib.retention import timescale
from orchestration_pipeline.lib.retention.partitions import TIME_COLUMN, Partition, layout, list_partitions

TABLES = tuple(TIME_COLUMN)


@dataclass(frozen=True)
class Catalogue:
    """The daily relations of one table."""

    table: str
    layout: str  # native | timescaledb | plain
    days: dict[date, Partition] = field(default_factory=dict)
    irregular: tuple[str, ...] = ()  # chunks that do not cover exactly one UTC day

    @property
    def partitioned(self) -> bool:
        return self.layout in ("native", "timescaledb")


def catalogue(conn: psycopg.Connection, table: str) -> Catalogue:
    """The daily partitions or chunks of ``table`` (none for a plain table, which retention leaves alone)."""
    kind = layout(conn, table)
    if kind == "native":
        parts = [p for p in list_partitions(conn, table) if not p.is_default]
        return Catalogue(table, kind, {p.day: p for p in parts})
    if kind == "timescaledb":
        parts, odd = timescale.chunks(conn, table)
        return Catalogue(table, kind, {p.day: p for p in parts}, tuple(odd))
    return Catalogue(table, kind)


def day_source(part: Partition, kind: str) -> tuple[sql.Composable, sql.Composable | None, tuple]:
    """``(FROM target, WHERE condition or None, parameters)`` reading exactly the rows of ``part``."""
    if kind == "native":
        return sql.SQL("ONLY {}").format(sql.Identifier(part.name)), None, ()
    column = sql.Identifier(TIME_COLUMN[part.table])
    where = sql.SQL("{} >= %s AND {} < %s").format(column, column)
    return sql.Identifier(part.table), where, (part.lower, part.upper)


def lock_target(part: Partition) -> sql.Composable:
    """The relation to lock against writes while a day is compared and dropped."""
    if "." in part.name:  # a chunk: its name came from format('%I.%I', ...), quoted where needed
        return sql.SQL(part.name)
    return sql.Identifier(part.name)


def observe(conn: psycopg.Connection, cat: Catalogue) -> None:
    """Remember each daily relation of ``cat`` (in the caller's transaction or autocommit); one that
    exists again after a purge (rows of its day arrived late) is watched again."""
    if not cat.days:
        return
    rows = [(cat.table, p.name, p.day, cat.layout) for p in cat.days.values()]
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO retention_partitions_seen (table_name, partition_name, day, layout)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (table_name, partition_name) DO UPDATE SET last_seen_at = now(), purged_by = NULL""",
            rows,
        )


def mark_purged(conn: psycopg.Connection, part: Partition, kind: str, manifest_id: int) -> None:
    """Record, in the purge's transaction, that ``part`` went after manifest ``manifest_id``'s archive."""
    conn.execute(
        """INSERT INTO retention_partitions_seen (table_name, partition_name, day, layout, purged_by)
           VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (table_name, partition_name) DO UPDATE SET purged_by = EXCLUDED.purged_by""",
        (part.table, part.name, part.day, kind, manifest_id),
    )
