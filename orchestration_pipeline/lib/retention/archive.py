"""Export one day of one table — exactly one partition or chunk, named explicitly — to Parquet.

In one REPEATABLE READ snapshot, Postgres first computes the rows' count and content hash (per
source file for ``events``), then streams the very same rows out with ``COPY (SELECT …) TO
STDOUT (FORMAT csv)``. The CSV is parsed by pyarrow in blocks of whole rows (Postgres sends one
COPY message per row), typed (timestamps as timestamp[us, UTC], uuids and jsonb as strings),
and written as zstd Parquet row groups to a temporary file that is fsynced and renamed into
place (:mod:`~orchestration_pipeline.lib.retention.store`). Only then is the manifest written,
with status ``exported``: a crash at any point before leaves no manifest, and the next run
exports the day again.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from orchestration_pipeline.lib.retention import canonical, manifests, store
from orchestration_pipeline.lib.retention.canonical import Column, ContentHash
from orchestration_pipeline.lib.retention.catalogue import day_source
from orchestration_pipeline.lib.retention.manifests import Manifest
from orchestration_pipeline.lib.retention.partitions import Partition

#: CSV bytes parsed and written as one Parquet row group (bounds the memory an export needs).
BLOCK_BYTES = 64 << 20
#: The key of the archive's description in the Arrow schema's metadata (table, day, range, columns).
METADATA_KEY = b"orchestration_pipeline.archive"
#: The key of the row count and content hash in the Parquet file's footer metadata.
CONTENT_KEY = b"orchestration_pipeline.content"
COMPRESSION = "zstd"


@dataclass(frozen=True)
class Exported:
    manifest: Manifest
    seconds: float


class ExportMismatch(RuntimeError):
    """The file does not hold the rows Postgres counted in the same snapshot."""


def _csv_options(columns: list[Column]) -> dict:
    return {
        "read_options": pacsv.ReadOptions(column_names=[c.name for c in columns], block_size=16 << 20),
        # a text value may hold a newline (quoted): parsing must not cut rows at it
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            column_types=canonical.csv_column_types(columns),
            null_values=[""],  # Postgres writes NULL unquoted and an empty string as ""
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    }


def _description(part: Partition, number: int, columns: list[Column], version: int) -> dict:
    """What the file says about itself (the Arrow schema's metadata), readable without the database."""
    body = {
        "table": part.table,
        "partition": part.name,
        "day": part.day.isoformat(),
        "part": number,
        "range_start": part.lower.isoformat(),
        "range_end": part.upper.isoformat(),
        "columns": [c.as_dict() for c in columns],
        "schema_version": version,
    }
    return {METADATA_KEY: json.dumps(body).encode()}


def _content_metadata(content: ContentHash) -> dict:
    """The rows' count and hash as Postgres computed them (the file's footer metadata)."""
    body = {
        "row_count": content.rows,
        "content_hash": content.value,
        "hash": "sum of md5 row hashes mod 2^64 (orchestration_pipeline.lib.retention.canonical)",
    }
    return {CONTENT_KEY: json.dumps(body).encode()}


def _write_block(writer: pq.ParquetWriter, chunks: list, columns: list[Column], schema: pa.Schema) -> int:
    parsed = pacsv.read_csv(io.BytesIO(b"".join(chunks)), **_csv_options(columns))
    table = canonical.to_archive_types(parsed, schema)
    writer.write_table(table, row_group_size=max(table.num_rows, 1))
    return table.num_rows


def _copy_to_parquet(
    conn: psycopg.Connection,
    query: sql.Composable,
    params: tuple,
    columns: list[Column],
    schema: pa.Schema,
    sink,
    footer: Callable[[], dict],
) -> int:
    """Stream the rows of ``query`` into a Parquet file written to ``sink``, with ``footer()``'s
    metadata added last; returns the rows written."""
    rows = 0
    block: list = []
    size = 0
    with pq.ParquetWriter(sink, schema, compression=COMPRESSION) as writer:
        with conn.cursor() as cur, cur.copy(query, params or None) as copy:
            for chunk in copy:  # one row per chunk: a block always ends at a row boundary
                block.append(chunk)
                size += len(chunk)
                if size >= BLOCK_BYTES:
                    rows += _write_block(writer, block, columns, schema)
                    block, size = [], 0
        if block:
            rows += _write_block(writer, block, columns, schema)
        writer.add_key_value_metadata(footer())
    return rows


class _SnapshotHash:
    """Postgres' content hash of the exported rows, computed on a second connection in the export's
    own snapshot (``pg_export_snapshot``) while the rows stream out, so the two scans overlap. Where
    a second connection cannot be opened, the hash is computed afterwards on the export's connection,
    in the same REPEATABLE READ snapshot."""

    def __init__(self, conn: psycopg.Connection, snapshot: str, hash_args: tuple):
        self._conn = conn
        self._args = hash_args
        self._groups: dict | None = None
        dsn, password = conn.info.dsn, conn.info.password  # read here: the export's thread owns conn
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="retention-hash")
        self._future = self._pool.submit(self._in_snapshot, dsn, password, snapshot)

    def _in_snapshot(self, dsn: str, password: str | None, snapshot: str) -> dict:
        with psycopg.connect(dsn, password=password, connect_timeout=10) as other:
            other.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            other.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            groups = canonical.pg_hash_by_group(other, *self._args)
            other.rollback()
        return groups

    def result(self) -> dict:
        """The hash per group; call once the export's own connection is free (its COPY is done)."""
        if self._groups is None:
            try:
                self._groups = self._future.result()
            except (
                psycopg.OperationalError
            ):  # no second connection: the same snapshot, one scan after the other
                self._groups = canonical.pg_hash_by_group(self._conn, *self._args)
        return self._groups

    def close(self) -> None:
        """Wait for the hashing thread, after an error too: none outlives the export."""
        self._pool.shutdown(wait=True)


def export_day(conn: psycopg.Connection, part: Partition, kind: str, archive_root: str) -> Exported:
    """Archive the rows of ``part`` (a daily partition, or a one-day chunk when ``kind`` is
    ``timescaledb``) under ``archive_root``; returns its manifest, status ``exported``."""
    started = time.perf_counter()
    with manifests.autocommit(conn):
        canonical.require_utf8(conn)
        columns = canonical.table_columns(conn, part.table)
        number = manifests.next_part(conn, part.table, part.day)
        uri = store.archive_file_uri(archive_root, part.table, part.day, number)
        version = manifests.schema_version(conn)
        source, where, params = day_source(part, kind)
        group_by = "source_file" if part.table == "events" else None
        schema = canonical.arrow_schema(columns, _description(part, number, columns, version))
        query = sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT csv)").format(
            canonical.select_list_sql(columns),
            source,
            sql.SQL(" WHERE ") + where if where is not None else sql.SQL(""),
        )
        found: dict = {}

        def footer() -> dict:  # the COPY is done: the hash is awaited only now
            found.update(hashing.result())
            return _content_metadata(canonical.total(found))

        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            hashing = _SnapshotHash(conn, snapshot, (source, columns, group_by, where, params))
            try:
                with store.atomic_write(uri) as sink:
                    written = _copy_to_parquet(conn, query, params, columns, schema, sink, footer)
                    content = canonical.total(found)
                    if written != content.rows:
                        raise ExportMismatch(
                            f"{part.name}: {written} rows written but {content.rows} counted in the same "
                            "snapshot — nothing was recorded; run the export again and report this if it repeats"
                        )
            finally:
                hashing.close()
        counts = {k: v.rows for k, v in found.items() if k is not None} if group_by else None
        with conn.transaction():
            manifest = manifests.insert(
                conn,
                table_name=part.table,
                partition_name=part.name,
                layout=kind,
                day=part.day,
                part=number,
                range_start=part.lower,
                range_end=part.upper,
                row_count=content.rows,
                content_hash=content.value,
                columns=[c.as_dict() for c in columns],
                source_file_counts=counts,
                file_uri=uri,
                file_sha256=sink.digest.hexdigest(),
                file_bytes=sink.size,
                schema_version=version,
                status="exported",
                export_ms=round((time.perf_counter() - started) * 1000),
            )
    return Exported(manifest, time.perf_counter() - started)


def record_failed_export(
    conn: psycopg.Connection, part: Partition, kind: str, archive_root: str, error: str
) -> Manifest:
    """Record an export that could not finish (status ``failed``, with why), so the checks see it."""
    with manifests.autocommit(conn), conn.transaction():
        number = manifests.next_part(conn, part.table, part.day)
        return manifests.insert(
            conn,
            table_name=part.table,
            partition_name=part.name,
            layout=kind,
            day=part.day,
            part=number,
            range_start=part.lower,
            range_end=part.upper,
            columns=[],
            file_uri=store.archive_file_uri(archive_root, part.table, part.day, number),
            schema_version=manifests.schema_version(conn),
            status="failed",
            error=error[:4000],
        )
