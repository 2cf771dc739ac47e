"""Prove an archive: read the file back and recompute what its manifest says.

Three things must match before a manifest becomes ``verified``, the only status a purge accepts:
the file's sha256 and size (the bytes are the ones written), its schema (the columns and types the
manifest lists), and the row count and content hash recomputed on the Arrow side from the file
alone against the ones Postgres computed over the live rows. Any difference moves the manifest to
``failed``, with the reason; the rows are still in the table, and the next run archives the day
again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
import pyarrow.parquet as pq

from orchestration_pipeline.lib.retention import canonical, manifests, store
from orchestration_pipeline.lib.retention.canonical import ContentHash
from orchestration_pipeline.lib.retention.manifests import Manifest


@dataclass(frozen=True)
class Verification:
    manifest_id: int
    ok: bool
    reason: str  # what failed, or "verified"
    seconds: float


class ArchiveProblem(Exception):
    """The archive file does not prove its manifest; the message says how."""


def file_content(manifest: Manifest) -> ContentHash:
    """Check the file of ``manifest`` byte for byte and column for column, and return the row count
    and content hash recomputed from it; :class:`ArchiveProblem` when the file is not the archived one."""
    try:
        digest, size = store.file_sha256(manifest.file_uri)
    except FileNotFoundError:
        raise ArchiveProblem(f"the archive file {manifest.file_uri} is missing") from None
    if size != manifest.file_bytes or digest != manifest.file_sha256:
        raise ArchiveProblem(
            f"the archive file {manifest.file_uri} changed: sha256 {digest[:12]}… ({size} bytes), "
            f"manifest {str(manifest.file_sha256)[:12]}… ({manifest.file_bytes} bytes)"
        )
    columns = manifest.column_list
    expected = canonical.arrow_schema(columns)
    try:
        parquet = pq.ParquetFile(store.open_input(manifest.file_uri))
    except Exception as exc:  # pyarrow raises several types for an unreadable file
        raise ArchiveProblem(f"the archive file {manifest.file_uri} is not readable Parquet: {exc}") from None
    with parquet:
        actual = parquet.schema_arrow.remove_metadata()
        if not actual.equals(expected.remove_metadata(), check_metadata=False):
            raise ArchiveProblem(
                f"the archive file's columns ({actual.names}) are not the manifest's ({expected.names}) "
                "or their types differ"
            )
        content = ContentHash.empty()
        try:
            for index in range(parquet.num_row_groups):
                content = content + canonical.arrow_hash(parquet.read_row_group(index), columns)
        except (OSError, ValueError) as exc:  # pyarrow's errors reading a damaged page
            raise ArchiveProblem(f"the archive file {manifest.file_uri} cannot be read: {exc}") from None
    return content


def verify(conn: psycopg.Connection, manifest_id: int) -> Verification:
    """Prove a manifest's archive and record the outcome: ``exported`` becomes ``verified`` or
    ``failed``, ``verified`` stays or becomes ``failed``. Any other archive (purged, restored, …) is
    only checked: its status records what happened to its rows and does not change."""
    started = time.perf_counter()
    with manifests.autocommit(conn):
        manifest = manifests.get(conn, manifest_id)
        if manifest.row_count is None:
            raise ValueError(
                f"manifest {manifest_id} records an export that failed: it has no file to verify"
            )
        recorded = manifest.status in ("exported", "verified")
        try:
            content = file_content(manifest)
            if content != manifest.content:
                raise ArchiveProblem(
                    f"the file holds {content.rows} rows with content hash {content.value}, the manifest "
                    f"{manifest.row_count} rows with hash {manifest.content_hash}"
                )
        except ArchiveProblem as problem:
            seconds = time.perf_counter() - started
            if recorded:
                with conn.transaction():
                    manifests.set_status(
                        conn, manifest_id, "failed", error=str(problem), verify_ms=round(seconds * 1000)
                    )
            return Verification(manifest_id, False, str(problem), seconds)
        seconds = time.perf_counter() - started
        if manifest.status == "exported":
            with conn.transaction():
                manifests.set_status(conn, manifest_id, "verified", verify_ms=round(seconds * 1000))
    return Verification(manifest_id, True, "verified", seconds)
