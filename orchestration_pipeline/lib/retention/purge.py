"""Purge one archived day: drop its partition or chunk, only after its archive was verified.

Everything happens in one transaction, which commits only if every step holds:

1. the manifest is ``verified``, for exactly the partition's (or chunk's) range, and is the day's
   archive in force;
2. its file is still there, byte for byte (sha256 and size against the manifest);
3. the partition is locked against writes (SHARE), and the live row count and content hash,
   recomputed inside Postgres, equal the archived ones — a row that arrived (or changed) after
   the archive means :class:`LateRows`: the day is archived again, never purged as it stands;
4. native: ``ALTER TABLE … DETACH PARTITION`` then ``DROP TABLE`` (the partitions' DELETE and
   TRUNCATE guards do not stand in the way of a drop, and nothing else ever removes their rows);
   TimescaleDB: ``drop_chunks`` bounded by exactly that day;
5. one audit entry (operation ``purge``) and the manifest moves to ``purged``.

A dry run does steps 1-3 and rolls back. The default partition is never purged: it has no day.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from orchestration_pipeline.lib.audit.ledger import record_audit
from orchestration_pipeline.lib.retention import canonical, manifests, store, timescale
from orchestration_pipeline.lib.retention.canonical import ContentHash
from orchestration_pipeline.lib.retention.catalogue import Catalogue, day_source, lock_target, mark_purged
from orchestration_pipeline.lib.retention.manifests import Manifest
from orchestration_pipeline.lib.retention.partitions import Partition

#: How long the purge waits for a lock before giving up (the next run tries again).
LOCK_TIMEOUT = "10s"


class PurgeRefused(RuntimeError):
    """The day cannot be purged as it stands; the message says why and what to do."""


class ArchiveFileProblem(PurgeRefused):
    """The archive file is missing or no longer the verified one: the archive cannot be relied on."""


class LateRows(PurgeRefused):
    """The live rows differ from the archived ones: the day must be archived again first."""

    def __init__(self, message: str, live: ContentHash):
        super().__init__(message)
        self.live = live


@dataclass(frozen=True)
class Purged:
    manifest_id: int
    table: str
    partition: str
    rows: int
    dry_run: bool
    audit_id: int | None


def _refuse_unless_purgeable(
    conn: psycopg.Connection, manifest: Manifest, part: Partition, cat: Catalogue
) -> None:
    if manifest.status != "verified":
        raise PurgeRefused(
            f"{part.name}: its archive (manifest {manifest.manifest_id}) is {manifest.status}, not verified — "
            "verify it first ('orchestration-pipeline archive verify')"
        )
    if (manifest.table_name, manifest.day) != (part.table, part.day) or (
        manifest.range_start,
        manifest.range_end,
    ) != (part.lower, part.upper):
        raise PurgeRefused(
            f"{part.name} covers [{part.lower}, {part.upper}) but manifest {manifest.manifest_id} archived "
            f"[{manifest.range_start}, {manifest.range_end}) of {manifest.table_name} — archive the day again"
        )
    if manifest.partition_name != part.name or manifest.layout != cat.layout:
        raise PurgeRefused(
            f"manifest {manifest.manifest_id} archived {manifest.partition_name} ({manifest.layout}), "
            f"but the day is now {part.name} ({cat.layout}) — archive the day again"
        )
    in_force = manifests.live(conn, part.table, part.day)
    if in_force is None or in_force.manifest_id != manifest.manifest_id:
        raise PurgeRefused(
            f"manifest {manifest.manifest_id} is not the archive in force for {part.table} {part.day}"
        )
    try:
        digest, size = store.file_sha256(manifest.file_uri)
    except FileNotFoundError:
        raise ArchiveFileProblem(
            f"{part.name}: the archive file {manifest.file_uri} is missing — nothing purged; the day will be "
            "archived again (see docs/runbooks/retention.md#archive_verified)"
        ) from None
    if (digest, size) != (manifest.file_sha256, manifest.file_bytes):
        raise ArchiveFileProblem(
            f"{part.name}: the archive file {manifest.file_uri} no longer matches its manifest (sha256 or size) "
            "— nothing purged; the day will be archived again"
        )


def live_content(conn: psycopg.Connection, part: Partition, kind: str, manifest: Manifest) -> ContentHash:
    """The count and content hash of the day's live rows, over the manifest's columns."""
    source, where, params = day_source(part, kind)
    return canonical.total(
        canonical.pg_hash_by_group(conn, source, manifest.column_list, None, where, params)
    )


def _drop(conn: psycopg.Connection, part: Partition, kind: str) -> None:
    if kind == "native":
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                sql.Identifier(part.table), sql.Identifier(part.name)
            )
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(part.name)))
    else:
        timescale.drop_day_chunk(conn, part)


def purge_day(
    conn: psycopg.Connection,
    manifest: Manifest,
    part: Partition,
    cat: Catalogue,
    *,
    actor: str,
    request_id: str,
    dry_run: bool = False,
    reason: str | None = None,
) -> Purged:
    """Drop ``part`` after proving it equals ``manifest``'s verified archive (see the module's steps)."""
    if part.is_default:
        raise PurgeRefused(f"{part.name} is the default partition: it is never purged")
    with manifests.autocommit(conn), conn.transaction() as tx:
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        manifest = manifests.get(conn, manifest.manifest_id, for_update=True)
        _refuse_unless_purgeable(conn, manifest, part, cat)
        if not dry_run:
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(lock_target(part)))
        live = live_content(conn, part, cat.layout, manifest)
        if live != manifest.content:
            raise LateRows(
                f"{part.name} now holds {live.rows} rows (hash {live.value}), its archive {manifest.row_count} "
                f"(hash {manifest.content_hash}): rows arrived or changed after the archive — the day is "
                "archived again before any purge",
                live,
            )
        if dry_run:
            raise psycopg.Rollback(tx)  # nothing changes: the caller learns it would be purged
        _drop(conn, part, cat.layout)
        audit_id = record_audit(
            conn,
            actor=actor,
            request_id=request_id,
            operation="purge",
            entity_type="partition",
            entity_id=f"{part.table}/{part.name}",
            before=_audit_before(manifest, part),
            after={"dropped": True, "archive": manifest.file_uri, "file_sha256": manifest.file_sha256},
            reason=reason
            or f"{part.table} {part.day} archived and verified (manifest {manifest.manifest_id})",
            source="retention",
        )
        manifests.set_status(conn, manifest.manifest_id, "purged")
        mark_purged(conn, part, cat.layout, manifest.manifest_id)
    if dry_run:
        return Purged(manifest.manifest_id, part.table, part.name, manifest.row_count or 0, True, None)
    return Purged(manifest.manifest_id, part.table, part.name, manifest.row_count or 0, False, audit_id)


def _audit_before(manifest: Manifest, part: Partition) -> dict[str, Any]:
    return {
        "table": part.table,
        "partition": part.name,
        "range": [part.lower.isoformat(), part.upper.isoformat()],
        "rows": manifest.row_count,
        "content_hash": manifest.content_hash,
        "manifest_id": manifest.manifest_id,
    }
