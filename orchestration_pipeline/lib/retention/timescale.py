"""The TimescaleDB side of retention: daily chunks, the columnstore policy, and dropping one
verified chunk.

Where ``events`` and ``metrics`` are hypertables (``partitions.layout(...) == "timescaledb"``),
a day is a chunk of one day (``timescaledb_information.chunks``). Warm data moves to the
columnstore by TimescaleDB's own policy (``add_columnstore_policy`` from 2.18 on, the older
``add_compression_policy`` before), which only re-encodes rows and never removes any. Rows are
removed only here, one chunk at a time, after its archive was verified: ``drop_chunks`` with the
exact bounds of that day, inside the caller's transaction, which is rolled back unless exactly
that chunk went. TimescaleDB's ``add_retention_policy`` is never used: it would drop chunks on its
own schedule, without an archive or a verification.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from orchestration_pipeline.lib.retention.partitions import Partition

#: The first TimescaleDB release with the columnstore API (add_columnstore_policy, enable_columnstore).
COLUMNSTORE_SINCE = (2, 18)
#: What each table's columnstore segments by (the column its reads filter on most) and orders by:
#: time, then the rest of the primary key, so that uniqueness is still checked in the columnstore.
SEGMENT_BY = {"events": "session_id", "metrics": "name"}
ORDER_BY = {"events": "occurred_at DESC, event_id", "metrics": "recorded_at DESC, metric_id"}


def extension_version(conn: psycopg.Connection) -> tuple[int, ...] | None:
    """The installed TimescaleDB version (e.g. (2, 18, 1)), or None when the extension is not installed."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if row is None:
        return None
    return tuple(int(p) for p in row[0].split("-")[0].split(".") if p.isdigit())


def is_day_chunk(lower: datetime, upper: datetime) -> bool:
    """True for a chunk covering exactly one UTC day, ``[00:00, next 00:00)``."""
    lower_utc = lower.astimezone(UTC)
    return lower_utc.time() == datetime.min.time() and upper - lower == timedelta(days=1)


def chunks(conn: psycopg.Connection, table: str) -> tuple[list[Partition], list[str]]:
    """The daily chunks of hypertable ``table``, oldest first, and the names of chunks that do not
    cover exactly one UTC day (they cannot be archived as a day: their chunk interval is not a day)."""
    rows = conn.execute(
        """SELECT format('%%I.%%I', chunk_schema, chunk_name), range_start, range_end
           FROM timescaledb_information.chunks
           WHERE hypertable_schema = current_schema() AND hypertable_name = %s
           ORDER BY range_start""",
        (table,),
    ).fetchall()
    days, odd = [], []
    for name, lower, upper in rows:
        if lower is None or upper is None or not is_day_chunk(lower, upper):
            odd.append(name)
            continue
        days.append(Partition(table, name, lower.astimezone(UTC).date(), lower, upper))
    return days, odd


def ensure_columnstore_policy(conn: psycopg.Connection, table: str, hot_days: int) -> str:
    """Move chunks older than ``hot_days`` to the columnstore by TimescaleDB's policy, in the caller's
    transaction; returns the statement family used. The policy compresses, it never drops rows."""
    version = extension_version(conn)
    if version is None:
        raise ValueError("TimescaleDB is not installed: there is no columnstore to move warm data to")
    order_by = ORDER_BY[table]
    segment_by = SEGMENT_BY[table]
    after = timedelta(days=hot_days)
    _drop_policy_with_another_window(conn, table, after, version)
    enabled = conn.execute(
        """SELECT compression_enabled FROM timescaledb_information.hypertables
           WHERE hypertable_schema = current_schema() AND hypertable_name = %s""",
        (table,),
    ).fetchone()
    configure = not (enabled and enabled[0])  # set once: older releases refuse it over compressed chunks
    if version >= COLUMNSTORE_SINCE:
        if configure:
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {} SET (timescaledb.enable_columnstore = true, "
                    "timescaledb.segmentby = {}, timescaledb.orderby = {})"
                ).format(sql.Identifier(table), sql.Literal(segment_by), sql.Literal(order_by))
            )
        conn.execute(
            "CALL add_columnstore_policy(%s::regclass, after => %s, if_not_exists => true)", (table, after)
        )
        return "add_columnstore_policy"
    if configure:
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby = {}, "
                "timescaledb.compress_orderby = {})"
            ).format(sql.Identifier(table), sql.Literal(segment_by), sql.Literal(order_by))
        )
    conn.execute(
        "SELECT add_compression_policy(%s::regclass, compress_after => %s, if_not_exists => true)",
        (table, after),
    )
    return "add_compression_policy"


def _drop_policy_with_another_window(
    conn: psycopg.Connection, table: str, after: timedelta, version: tuple[int, ...]
) -> None:
    """A columnstore policy made for another hot window (ORCH_RETENTION_HOT_DAYS changed) is removed,
    so that the one added next has the current window (``if_not_exists`` would keep the old one)."""
    row = conn.execute(
        """SELECT config->>'compress_after' FROM timescaledb_information.jobs
           WHERE proc_name = 'policy_compression' AND hypertable_schema = current_schema()
             AND hypertable_name = %s""",
        (table,),
    ).fetchone()
    if row is None or row[0] is None:
        return
    if conn.execute("SELECT %s::interval = %s::interval", (row[0], after)).fetchone()[0]:
        return
    if version >= COLUMNSTORE_SINCE:
        conn.execute("CALL remove_columnstore_policy(%s::regclass, if_exists => true)", (table,))
    else:
        conn.execute("SELECT remove_compression_policy(%s::regclass, if_exists => true)", (table,))


def retention_policies(conn: psycopg.Connection, table: str) -> list[int]:
    """Ids of TimescaleDB retention-policy jobs on ``table``: there must be none (they purge unverified)."""
    rows = conn.execute(
        """SELECT job_id FROM timescaledb_information.jobs
           WHERE proc_name = 'policy_retention' AND hypertable_schema = current_schema()
             AND hypertable_name = %s""",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


def drop_day_chunk(conn: psycopg.Connection, chunk: Partition) -> None:
    """Drop exactly ``chunk`` with ``drop_chunks`` bounded by its day, in the caller's transaction.

    Raises (so the caller rolls back) if anything else would go with it: the caller's transaction
    is the guarantee that no other chunk is dropped."""
    dropped = [
        r[0]
        for r in conn.execute(
            "SELECT drop_chunks(%s::regclass, older_than => %s, newer_than => %s)",
            (chunk.table, chunk.upper, chunk.lower),
        ).fetchall()
    ]
    if dropped != [chunk.name] and [d.split(".")[-1] for d in dropped] != [chunk.name.split(".")[-1]]:
        raise RuntimeError(
            f"drop_chunks for {chunk.day} would drop {dropped or 'nothing'}, not exactly {chunk.name} — "
            "nothing was dropped; check the hypertable's chunk interval (it must be one day)"
        )
