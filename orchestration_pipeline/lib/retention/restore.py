"""Forensics: read an archived day back as a DataFrame, or load it into a table again.

Every file is proven against its manifest before its rows are used (sha256, schema, row count and
content hash, as :mod:`~orchestration_pipeline.lib.retention.verify` does), and a restore is
checked again after loading: the loaded rows' content hash, computed by Postgres, must equal the
archives'. A restore runs in one transaction, so it loads everything or nothing.

* into a new table (the default, ``<table>_restored_<YYYYMMDD>``): every archive of the day, for
  a look at the rows with SQL; an existing table is never written into;
* into the live table: only a day whose rows were purged and which holds no rows now (a day
  partly live would mix copies); the day's partition is created again and the manifests move to
  ``restored`` (the next retention run archives the day afresh), with an audit entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from orchestration_pipeline.lib.audit.ledger import record_audit
from orchestration_pipeline.lib.retention import canonical, manifests, store
from orchestration_pipeline.lib.retention.canonical import ContentHash
from orchestration_pipeline.lib.retention.manifests import Manifest
from orchestration_pipeline.lib.retention.partitions import TIME_COLUMN, day_range, ensure_partitions, layout
from orchestration_pipeline.lib.retention.verify import ArchiveProblem, file_content

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_WRITE_BATCH = 50_000


@dataclass(frozen=True)
class Restored:
    table: str
    day: date
    into: str
    rows: int
    manifests: list[int]
    live: bool


def day_archives(conn: psycopg.Connection, table: str, day: date) -> list[Manifest]:
    """The archives that together hold the day's archived rows: the purged parts and the archive of
    the rows still live, and a restored part until a later part (which archived its rows again,
    once they were live) replaces it."""
    every = manifests.for_day(conn, table, day)
    in_force = [m for m in every if m.status in manifests.IN_FORCE]
    last = max((m.part for m in in_force), default=0)
    in_force += [m for m in every if m.status == "restored" and m.part > last]
    return sorted(in_force, key=lambda m: (m.part, m.manifest_id))


def _proven(found: list[Manifest], table: str, day: date) -> list[Manifest]:
    if not found:
        raise LookupError(
            f"{table} {day} has no archive — see 'orchestration-pipeline archive list --table {table}'"
        )
    for manifest in found:
        content = file_content(manifest)
        if content != manifest.content:
            raise ArchiveProblem(
                f"archive {manifest.file_uri} (manifest {manifest.manifest_id}) holds {content.rows} rows with "
                f"hash {content.value}, its manifest {manifest.row_count} with {manifest.content_hash}"
            )
    return found


def read_archive_file(uri: str) -> pd.DataFrame:
    """One archive file as a DataFrame, typed (timestamps in UTC), without the database or a check."""
    with store.open_input(uri) as handle:
        return pq.read_table(handle).to_pandas()


def read_archive(conn_or_dsn: psycopg.Connection | str, table: str, day: date | str) -> pd.DataFrame:
    """The archived rows of ``table``'s ``day`` (e.g. ``read_archive(dsn, "events", "2025-01-31")``),
    as one pandas DataFrame, after proving every file against its manifest."""
    day = date.fromisoformat(day) if isinstance(day, str) else day
    if isinstance(conn_or_dsn, str):
        with psycopg.connect(conn_or_dsn, autocommit=True) as conn:
            found = _proven(day_archives(conn, table, day), table, day)
    else:
        conn = conn_or_dsn
        owns_read = not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            found = _proven(day_archives(conn, table, day), table, day)
        finally:
            if owns_read:
                conn.rollback()  # the read's own transaction, never the caller's
    tables = []
    for manifest in found:
        with store.open_input(manifest.file_uri) as handle:
            tables.append(pq.read_table(handle))
    return pa.concat_tables(tables).to_pandas()


def _load(conn: psycopg.Connection, target: sql.Composable, found: list[Manifest]) -> None:
    columns = found[0].column_list
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, names)) as copy:
        for manifest in found:
            with store.open_input(manifest.file_uri) as handle:
                parquet = pq.ParquetFile(handle)
                for batch in parquet.iter_batches(batch_size=_WRITE_BATCH, columns=[c.name for c in columns]):
                    for row in zip(*(col.to_pylist() for col in batch.columns), strict=True):
                        copy.write_row(row)


def _check_loaded(conn, target: sql.Composable, found: list[Manifest], where=None, params=()) -> ContentHash:
    expected = ContentHash.empty()
    for manifest in found:
        expected = expected + manifest.content
    loaded = canonical.total(
        canonical.pg_hash_by_group(conn, target, found[0].column_list, None, where, params)
    )
    if loaded != expected:
        raise ArchiveProblem(
            f"the restored rows ({loaded.rows}, hash {loaded.value}) differ from the archives ({expected.rows}, "
            f"hash {expected.value}) — nothing was restored"
        )
    return loaded


def restore_day(
    conn: psycopg.Connection,
    table: str,
    day: date,
    *,
    into: str | None = None,
    actor: str,
    request_id: str,
) -> Restored:
    """Load the archived rows of ``table``'s ``day`` into ``into`` (default a new table
    ``<table>_restored_<YYYYMMDD>``; ``table`` itself for the live table). See the module."""
    if table not in TIME_COLUMN:
        raise ValueError(f"{table!r} has no archives (one of {', '.join(TIME_COLUMN)})")
    target_name = into or f"{table}_restored_{day:%Y%m%d}"
    if not _NAME.match(target_name):
        raise ValueError(f"--into {target_name!r} is not a plain table name (lowercase letters, digits, _)")
    live = target_name == table
    with manifests.autocommit(conn), manifests.day_lock(conn, table, day):
        found = day_archives(conn, table, day)
        if live:
            found = [m for m in found if m.status == "purged"]
        found = _proven(found, table, day)
        with conn.transaction():
            if live:
                _restore_live(conn, table, day, found, actor=actor, request_id=request_id)
            else:
                if conn.execute("SELECT to_regclass(%s)", (target_name,)).fetchone()[0] is not None:
                    raise ValueError(f"table {target_name} already exists — name another with --into")
                conn.execute("SELECT retention_create_restore_table(%s, %s)", (target_name, table))
                _load(conn, sql.Identifier(target_name), found)
                _check_loaded(conn, sql.Identifier(target_name), found)
    rows = sum(m.row_count or 0 for m in found)
    return Restored(table, day, target_name, rows, [m.manifest_id for m in found], live)


def _restore_live(conn, table: str, day: date, found: list[Manifest], *, actor: str, request_id: str) -> None:
    lower, upper = day_range(day)
    column = sql.Identifier(TIME_COLUMN[table])
    where = sql.SQL("{} >= %s AND {} < %s").format(column, column)
    present = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(table), where), (lower, upper)
    ).fetchone()[0]
    if present:
        raise ValueError(
            f"{table} still holds {present} rows of {day}: restoring the archive beside them would duplicate "
            f"rows — restore into a new table instead (--into {table}_restored_{day:%Y%m%d})"
        )
    if layout(conn, table) == "native":
        ensure_partitions(conn, table, day, day)
    _load(conn, sql.Identifier(table), found)
    _check_loaded(conn, sql.Identifier(table), found, where, (lower, upper))
    for manifest in found:
        manifests.set_status(conn, manifest.manifest_id, "restored")
    record_audit(
        conn,
        actor=actor,
        request_id=request_id,
        operation="replay",
        entity_type="archive",
        entity_id=f"{table}/{day.isoformat()}",
        before={"manifests": [m.manifest_id for m in found], "status": "purged"},
        after={"rows": sum(m.row_count or 0 for m in found), "status": "restored", "table": table},
        reason=f"{table} {day} restored from its archives into the live table",
        source="retention",
    )
