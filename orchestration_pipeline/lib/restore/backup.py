"""Backups: a ``pg_dump`` of the orchestration DB and its manifest, taken from one snapshot.

:func:`create_backup` opens a REPEATABLE READ transaction, exports its snapshot and hands it to
``pg_dump --snapshot``; while pg_dump writes, the manifest is computed over the same snapshot on
other connections (:func:`~orchestration_pipeline.lib.restore.manifest.database_state`). So the
manifest describes exactly what the dump holds, even while writers go on committing.

The dump is written to ``<id>.dump.partial``, fsynced, hashed, then renamed to ``<id>.dump``; the
manifest is written beside it (``<id>.manifest.json``) and into ``backups``. A killed backup leaves
only a ``.partial`` file, never a dump that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from orchestration_pipeline.lib.db import connection, end_read, redact_dsn, require_schema
from orchestration_pipeline.lib.restore.errors import BackupNotFound, RestoreError
from orchestration_pipeline.lib.restore.manifest import DatabaseState, database_state
from orchestration_pipeline.lib.restore.tools import (
    PgTools,
    libpq_target,
    parse_version,
    require_backup_tools,
    server_version,
    stderr_tail,
)

MANIFEST_FORMAT = 1
BACKUP_TABLES = ("backups", "restore_drills")
_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
_CHUNK = 1 << 20


def new_backup_id(now: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-<8 hex>``: sorts by time, unique without coordination."""
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Backup:
    """A dump file and its manifest (the JSON written beside the dump, also in ``backups``)."""

    backup_id: str
    dump_path: Path
    manifest_path: Path
    manifest: dict[str, Any]

    @property
    def sha256(self) -> str:
        return self.manifest["dump"]["sha256"]

    @property
    def size(self) -> int:
        return int(self.manifest["dump"]["bytes"])

    @property
    def dump_major(self) -> int:
        return parse_version(f"(PostgreSQL) {self.manifest['pg_dump']['version']}")[1]

    @property
    def taken_at(self) -> datetime:
        return datetime.fromisoformat(self.manifest["taken_at"])

    @property
    def state(self) -> DatabaseState:
        return DatabaseState.from_dict(self.manifest)

    def summary(self) -> dict[str, Any]:
        """What ``backup create`` and ``backup list`` print."""
        return {
            "backup_id": self.backup_id,
            "taken_at": self.manifest["taken_at"],
            "dump": str(self.dump_path),
            "manifest": str(self.manifest_path),
            "sha256": self.sha256,
            "bytes": self.size,
            "schema_head": self.manifest["schema_migrations"]["head"],
            "rows": sum(self.manifest["row_counts"].values()),
            "audit_checkpoint_head": self.manifest["audit_checkpoint_head"],
            "max_received_at": self.manifest["max_received_at"],
            "pg_dump": self.manifest["pg_dump"]["version"],
            "duration_ms": self.manifest.get("duration_ms"),
        }


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, read in 1 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomically(path: Path, body: dict[str, Any]) -> None:
    """Write, fsync, then rename into place: a reader never sees half a manifest."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(body, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def _start_pg_dump(tools: PgTools, dsn: str, snapshot: str, target: Path) -> subprocess.Popen:
    """pg_dump in custom format, reading the exported ``snapshot``, into ``target`` (in the background)."""
    conninfo, env = libpq_target(dsn)
    args = [
        tools.pg_dump.path,
        "--format=custom",
        f"--snapshot={snapshot}",
        f"--file={target}",
        f"--dbname={conninfo}",
    ]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)  # fmt: skip


def _dump_in_snapshot(
    dsn: str, tools: PgTools, partial: Path, workers: int
) -> tuple[DatabaseState, datetime]:
    """Run pg_dump and compute the manifest in one exported snapshot; returns the state and its time."""
    with connection(dsn) as exporter:
        exporter.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot, taken_at = exporter.execute("SELECT pg_export_snapshot(), now()").fetchone()
        dump = _start_pg_dump(tools, dsn, snapshot, partial)
        try:
            state = database_state(dsn, snapshot=snapshot, workers=workers)
        except BaseException:
            dump.kill()
            dump.wait()
            raise
        _, err = dump.communicate()  # the snapshot stays exported until pg_dump is done with it
        exporter.rollback()
    if dump.returncode != 0:
        raise RestoreError(
            f"pg_dump failed (exit {dump.returncode}): {stderr_tail(err)} — fix the cause and run "
            "'orchestration-pipeline backup create' again"
        )
    state.taken_at = taken_at
    return state, taken_at


def create_backup(dsn: str, directory: Path, tools: PgTools, *, created_by: str, workers: int = 2) -> Backup:
    """Dump the database at ``dsn`` into ``directory`` with its manifest, and record it in ``backups``.

    Refuses (:class:`~orchestration_pipeline.lib.restore.errors.ToolMismatch`) when the binaries
    cannot dump this server or restore the dump into it.
    """
    started = time.perf_counter()
    with connection(dsn, autocommit=True) as conn:
        require_schema(conn, BACKUP_TABLES, record_decision=False)
        version, major = server_version(conn)
        require_backup_tools(tools, major)
        database = conn.execute("SELECT current_database()").fetchone()[0]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RestoreError(
            f"cannot create the backup directory {directory}: {exc.strerror or exc} — make it writable or "
            "choose another with --dir"
        ) from None
    backup_id = new_backup_id()
    final, partial = directory / f"{backup_id}.dump", directory / f"{backup_id}.dump.partial"
    try:
        state, taken_at = _dump_in_snapshot(dsn, tools, partial, workers)
        _fsync_file(partial)
        sha, size = file_digest(partial)
        os.replace(partial, final)
        _fsync_dir(directory)
    finally:
        partial.unlink(missing_ok=True)
    manifest = {
        "format": MANIFEST_FORMAT,
        "backup_id": backup_id,
        "database": database,
        "source": redact_dsn(dsn),
        "pg_dump": {"path": tools.pg_dump.path, "version": tools.pg_dump.version},
        **state.as_dict(),
        "dump": {"file": final.name, "sha256": sha, "bytes": size},
        "duration_ms": int((time.perf_counter() - started) * 1000),
        "created_by": created_by,
    }
    manifest_path = directory / f"{backup_id}.manifest.json"
    _write_json_atomically(manifest_path, manifest)
    backup = Backup(backup_id, final, manifest_path, manifest)
    with connection(dsn, autocommit=True) as conn:
        record_backup(conn, backup, version)
    return backup


def record_backup(conn: psycopg.Connection, backup: Backup, version: str) -> None:
    """The ``backups`` row of a backup whose files are written."""
    conn.execute(
        """INSERT INTO backups (backup_id, taken_at, dump_path, manifest_path, dump_sha256, dump_bytes,
               server_version, pg_dump_version, duration_ms, created_by, manifest)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (backup.backup_id, backup.taken_at, str(backup.dump_path), str(backup.manifest_path), backup.sha256,
         backup.size, version, backup.manifest["pg_dump"]["version"], backup.manifest["duration_ms"],
         backup.manifest["created_by"], Jsonb(backup.manifest)),
    )  # fmt: skip


def _from_files(dump_path: Path) -> Backup:
    """A backup known only by its files: the dump and the manifest written beside it."""
    name = dump_path.name.removesuffix(".dump")
    manifest_path = dump_path.with_name(f"{name}.manifest.json")
    if not manifest_path.is_file():
        raise BackupNotFound(
            f"no manifest beside {dump_path} (expected {manifest_path.name}) — a dump without its manifest "
            "cannot be verified; restore it by hand, or take a new backup with 'backup create'"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        backup_id = manifest["backup_id"]
        manifest["dump"]["sha256"]  # noqa: B018 - the fields a drill needs must be there
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupNotFound(
            f"the manifest {manifest_path} cannot be read ({type(exc).__name__}: {exc}) — take a new backup "
            "with 'backup create'"
        ) from None
    return Backup(backup_id, dump_path, manifest_path, manifest)


def load_backup(reference: str, directory: Path, conn: psycopg.Connection | None = None) -> Backup:
    """The backup ``reference`` names: a dump file's path (its manifest beside it), or a backup id
    (its ``backups`` row when ``conn`` has it, else ``<directory>/<id>.dump`` and its manifest)."""
    path = Path(reference).expanduser()
    if path.suffix == ".dump" or path.is_file():
        if not path.is_file():
            raise BackupNotFound(f"no dump file {path} — check the path ('backup list' shows the backups)")
        return _from_files(path.resolve())
    if not _ID.match(reference):
        raise BackupNotFound(
            f"{reference!r} is neither a dump file nor a backup id (YYYYMMDDTHHMMSSZ-xxxxxxxx) — "
            "'backup list' shows the backups"
        )
    row = None
    if conn is not None:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT dump_path, manifest_path, manifest FROM backups WHERE backup_id = %s", (reference,)
            ).fetchone()
        end_read(conn)
    if row is not None:
        return Backup(reference, Path(row["dump_path"]), Path(row["manifest_path"]), row["manifest"])
    dump = directory / f"{reference}.dump"
    if not dump.is_file():
        raise BackupNotFound(
            f"no backup {reference}: not in the backups table, and no {dump} — 'backup list' shows the backups"
        )
    return _from_files(dump)


def list_backups(conn: psycopg.Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The newest backups, each with its file's presence and the outcome of its latest drill."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT b.backup_id, b.taken_at, b.dump_path, b.dump_bytes, b.dump_sha256, b.duration_ms,
                      b.manifest->'schema_migrations'->>'head' AS schema_head,
                      d.state AS last_drill, d.finished_at AS last_drill_at, d.rto_s AS last_rto_s
               FROM backups b
               LEFT JOIN LATERAL (SELECT state, finished_at, rto_s FROM restore_drills r
                                  WHERE r.backup_id = b.backup_id AND r.state <> 'running'
                                  ORDER BY r.started_at DESC LIMIT 1) d ON true
               ORDER BY b.taken_at DESC LIMIT %s""",
            (limit,),
        ).fetchall()
    end_read(conn)
    for row in rows:
        row["file_present"] = Path(row["dump_path"]).is_file()
    return rows
