"""The restore drill: prove that a backup restores, and measure how long that takes.

Phases (each timed in the verdict's ``phases``):

1. ``leftovers``: drop the scratch databases of drills that were killed (:mod:`.scratch`).
2. ``backup``: a fresh backup, unless the drill was given one.
3. ``checksum``: the dump's sha256 and size against its manifest, before anything is restored; a
   mismatch fails the drill closed (no scratch database is even created).
4. ``restore``: a scratch database is created, marked, and the dump pg_restored into it.
5. ``verify``: the manifest's database part is recomputed on the copy and the checks of
   :mod:`.verify` run.
6. ``report``: the verdict goes to ``restore_drills`` (and metrics); then ``cleanup`` drops the
   scratch database unless it is kept.

``rto_s`` runs from the start of the restore (creating the scratch database) until the last check
has passed or failed: the time from "we have a dump" to "we have a verified, queryable copy".
``rpo_s`` is the time from the end of the drill back to the newest ``received_at`` in the copy:
what a restore of this backup would lose, had the source been lost now.

Outcome: ``passed`` (every blocking check passed; exit 0), ``failed`` (a check failed, including
the checksum and pg_restore itself; exit 1), ``error`` (the drill could not run: no backup, the
wrong pg_dump/pg_restore, no database; exit 2).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.db import connect, connection, redact_dsn, require_schema
from orchestration_pipeline.lib.embedded import with_database
from orchestration_pipeline.lib.restore import verify
from orchestration_pipeline.lib.restore.backup import (
    BACKUP_TABLES,
    Backup,
    create_backup,
    file_digest,
    load_backup,
)
from orchestration_pipeline.lib.restore.manifest import database_state
from orchestration_pipeline.lib.restore.scratch import (
    DrillLease,
    RestoreFailed,
    clean_leftovers,
    create_scratch,
    drop_scratch,
    restore_into,
)
from orchestration_pipeline.lib.restore.tools import (
    PATH,
    PgTools,
    find_tools,
    require_restore_tools,
    server_version,
)
from orchestration_pipeline.lib.telemetry import record_metric
from orchestration_pipeline.lib.wording import plural

EXIT_CODES = {"passed": 0, "failed": 1, "error": 2}


@dataclass(frozen=True)
class DrillOptions:
    """Everything a drill needs; the CLI and the asset fill it from the settings."""

    source_dsn: str
    tasks_dsn: str | None
    backup_dir: Path
    tool_origin: str = PATH  # "embedded" or "PATH"
    pg_bin: str | None = None  # a directory holding pg_dump and pg_restore (overrides the origin)
    from_backup: str | None = None  # a backup id or a dump path; None: take a fresh backup
    keep: bool = False
    jobs: int = 2  # pg_restore --jobs
    workers: int = 2  # connections computing the manifest
    grace_minutes: int = 15
    health_timeout_s: float = 30.0
    open_index: verify.IndexOpener | None = None
    created_by: str = "orchestration-pipeline"
    #: called with the scratch DSN between the restore and the verification (forensics, fault tests)
    before_verify: Callable[[str], None] | None = None
    progress: Callable[[str], None] | None = None


@dataclass
class DrillResult:
    """The verdict of one drill."""

    drill_id: uuid.UUID
    state: str = "running"  # passed | failed | error
    backup_id: str | None = None
    rto_s: float | None = None
    rpo_s: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    checks: list[verify.DrillCheck] = field(default_factory=list)
    error: str | None = None
    scratch_db: str | None = None
    kept: bool = False
    leftovers_removed: list[dict[str, Any]] = field(default_factory=list)
    tools: dict[str, str] | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    @property
    def passed(self) -> bool:
        return self.state == "passed"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]

    def failed_checks(self, *, blocking: bool = True) -> list[verify.DrillCheck]:
        return [c for c in self.checks if not c.passed and c.blocking == blocking]

    def as_dict(self) -> dict[str, Any]:
        return {
            "pass": self.passed,
            "state": self.state,
            "drill_id": str(self.drill_id),
            "backup_id": self.backup_id,
            "rto_s": None if self.rto_s is None else round(self.rto_s, 3),
            "rpo_s": None if self.rpo_s is None else round(self.rpo_s, 3),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "checks": [c.as_dict() for c in self.checks],
            "error": self.error,
            "scratch_db": self.scratch_db,
            "kept": self.kept,
            "leftovers_removed": self.leftovers_removed,
            "tools": self.tools,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }

    def summary(self) -> str:
        """One line: which outcome, and why."""
        rto = f"RTO {self.rto_s:.1f} s" if self.rto_s is not None else "no RTO"
        if self.state == "error":
            return f"drill could not run: {self.error}"
        if self.state == "failed":
            failed = self.failed_checks()
            reasons = "; ".join(f"{c.name}: {c.detail}" for c in failed)
            return f"drill FAILED (backup {self.backup_id}, {rto}): {reasons}"
        advisory = self.failed_checks(blocking=False)
        note = f"; advisory: {'; '.join(f'{c.name}: {c.detail}' for c in advisory)}" if advisory else ""
        rpo = f", RPO {self.rpo_s:.1f} s" if self.rpo_s is not None else ""
        return (
            f"drill passed: backup {self.backup_id} restored and verified by "
            f"{plural(len(self.checks), 'check')}, {rto}{rpo}{note}"
        )


class _Phases:
    """Times each phase into the result and reports it through ``progress``."""

    def __init__(self, result: DrillResult, progress: Callable[[str], None] | None):
        self.result, self.progress = result, progress

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.progress:
            self.progress(name)
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.result.phases[name] = self.result.phases.get(name, 0.0) + time.perf_counter() - started


def _start_record(conn: psycopg.Connection, result: DrillResult, created_by: str) -> None:
    """The drill's ``running`` row, committed before anything is created, so a killed drill is found."""
    conn.execute(
        "INSERT INTO restore_drills (drill_id, started_at, created_by, host, pid) VALUES (%s, %s, %s, %s, %s)",
        (result.drill_id, result.started_at, created_by, socket.gethostname(), os.getpid()),
    )


def _finish_record(conn: psycopg.Connection, result: DrillResult) -> None:
    """The verdict into ``restore_drills``, and metrics, in one transaction."""
    with conn.transaction():
        conn.execute(
            """UPDATE restore_drills SET state = %s, finished_at = %s, backup_id = %s, passed = %s, rto_s = %s,
                   rpo_s = %s, verdict = %s, error = %s, kept = %s WHERE drill_id = %s""",
            (result.state, result.finished_at, result.backup_id,
             None if result.state == "error" else result.passed, result.rto_s, result.rpo_s,
             Jsonb(result.as_dict()), result.error, result.kept, result.drill_id),
        )  # fmt: skip
        tags = {"drill_id": str(result.drill_id), "backup_id": result.backup_id, "state": result.state}
        record_metric(conn, "restore.drill_passed", 1 if result.passed else 0, "bool", tags)
        if result.rto_s is not None:
            record_metric(conn, "restore.rto_s", result.rto_s, "s", tags)
        if result.rpo_s is not None:
            record_metric(conn, "restore.rpo_s", result.rpo_s, "s", tags)


def _obtain_backup(opts: DrillOptions, tools: PgTools, conn: psycopg.Connection, phases: _Phases) -> Backup:
    """The backup given (``--from``), or a fresh one."""
    if opts.from_backup is not None:
        return phases.run("backup", load_backup, opts.from_backup, opts.backup_dir, conn)
    return phases.run(
        "backup", create_backup, opts.source_dsn, opts.backup_dir, tools,
        created_by=opts.created_by, workers=opts.workers,
    )  # fmt: skip


def _checksum(backup: Backup) -> verify.DrillCheck:
    """``dump_checksum``: the whole file hashed before anything is restored."""
    try:
        sha, size = file_digest(backup.dump_path)
    except OSError as exc:
        return verify.check_file(
            backup.sha256, backup.size, None, None, f"{exc.strerror or exc} ({backup.dump_path})"
        )
    return verify.check_file(backup.sha256, backup.size, sha, size)


def _verify_copy(
    opts: DrillOptions, backup: Backup, scratch_dsn: str, result: DrillResult
) -> datetime | None:
    """Run every check on the copy, in order; returns the copy's newest received_at (for the RPO)."""
    expected = backup.state
    started = time.perf_counter()
    try:
        state = database_state(scratch_dsn, workers=opts.workers)
    except (psycopg.Error, OrchError) as exc:
        reason = verify.first_line(exc)
        result.checks.append(verify.DrillCheck("row_counts", False, expected.row_counts, {"error": reason},
                                               f"the copy could not be read: {reason}"))  # fmt: skip
        return None
    state_s = time.perf_counter() - started
    for name, check in (("migrations", verify.check_migrations), ("row_counts", verify.check_row_counts),
                        ("content_hashes", verify.check_content_hashes)):  # fmt: skip
        outcome = verify.timed(name, check, expected, state)
        outcome.duration_s += state_s if name == "row_counts" else 0.0  # counts and hashes: one pass
        result.checks.append(outcome)
    with connection(scratch_dsn) as copy:
        steps = (
            ("audit_chain", verify.check_audit_chain, (copy, expected.audit_checkpoint_head), {}),
            ("projection_drift", _projection_check, (opts, copy, backup.taken_at), {}),
            ("health", verify.check_health, (copy,), {"timeout_s": opts.health_timeout_s}),
            ("outbox_repopulated", verify.check_outbox, (copy, opts.open_index), {}),
        )
        for name, check, args, kwargs in steps:
            result.checks.append(verify.timed(name, check, *args, **kwargs))
            if copy.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                copy.rollback()
    return state.max_received_at


def _projection_check(opts: DrillOptions, copy: psycopg.Connection, as_of: datetime) -> verify.DrillCheck:
    """``projection_drift`` against the Tasks DB, opened read-only for the check."""
    if not opts.tasks_dsn:
        return verify.check_projection(copy, None, grace_minutes=opts.grace_minutes, as_of=as_of,
                                       unavailable="no Tasks DB is configured (TASKS_DATABASE_URL)")  # fmt: skip
    try:
        tasks = connect(opts.tasks_dsn, read_only=True)
    except OrchError as exc:
        return verify.check_projection(
            copy, None, grace_minutes=opts.grace_minutes, as_of=as_of, unavailable=str(exc)
        )
    try:
        return verify.check_projection(copy, tasks, grace_minutes=opts.grace_minutes, as_of=as_of)
    finally:
        tasks.close()


def _restore_and_verify(
    opts: DrillOptions,
    conn: psycopg.Connection,
    tools: PgTools,
    backup: Backup,
    result: DrillResult,
    phases: _Phases,
) -> None:
    """Phases restore and verify (the RTO), into ``result``."""
    _, major = server_version(conn)
    require_restore_tools(tools, backup.dump_major, major)
    rto_started = time.perf_counter()
    result.scratch_db = phases.run("restore", create_scratch, conn, result.drill_id)
    timescale = "timescaledb" in backup.manifest.get("extensions", {})
    try:
        phases.run("restore", restore_into, tools, conn, opts.source_dsn, result.scratch_db, result.drill_id,
                   str(backup.dump_path), jobs=opts.jobs, timescaledb=timescale)  # fmt: skip
    except RestoreFailed as exc:
        result.checks.append(
            verify.DrillCheck(
                "restore", False, "pg_restore exits 0", str(exc), f"{exc} — the backup does not restore"
            )
        )
        return
    result.checks.append(verify.DrillCheck("restore", True, "pg_restore exits 0", "exit 0", "pg_restore completed",
                                           duration_s=result.phases["restore"]))  # fmt: skip
    scratch_dsn = with_database(opts.source_dsn, result.scratch_db)
    if opts.before_verify is not None:  # the hook's own time is not the restore's
        hook_started = time.perf_counter()
        opts.before_verify(scratch_dsn)
        rto_started += time.perf_counter() - hook_started
    newest = phases.run("verify", _verify_copy, opts, backup, scratch_dsn, result)
    result.rto_s = time.perf_counter() - rto_started
    if newest is not None:
        result.rpo_s = (datetime.now(UTC) - newest).total_seconds()


def _cleanup(conn: psycopg.Connection, result: DrillResult, phases: _Phases) -> None:
    """Drop the scratch database unless kept (a failure here is recorded, the next drill retries)."""
    if result.scratch_db is None or result.kept:
        return
    try:
        phases.run("cleanup", drop_scratch, conn, result.scratch_db, result.drill_id)
        conn.execute(
            "UPDATE restore_drills SET verdict = %s WHERE drill_id = %s",
            (Jsonb(result.as_dict()), result.drill_id),
        )
    except (psycopg.Error, OrchError) as exc:  # the next drill's leftovers phase drops it
        _add_error(result, f"the scratch database was not dropped: {verify.first_line(exc)}")


def run_drill(opts: DrillOptions) -> DrillResult:
    """Run one drill (see the module docstring); never raises for a drill that could not run: the
    result says why (``state == "error"``), recorded when the database answers."""
    result = DrillResult(drill_id=uuid.uuid4())
    phases = _Phases(result, opts.progress)
    try:
        conn = connect(opts.source_dsn, autocommit=True)
    except OrchError as exc:  # DatabaseUnavailable names the fix
        return _could_not_run(result, exc)
    lease = None
    try:
        require_schema(conn, BACKUP_TABLES, record_decision=False)
        result.leftovers_removed = phases.run("leftovers", clean_leftovers, conn)
        lease = DrillLease(opts.source_dsn, result.drill_id)  # held before the row exists: never "gone"
        _start_record(conn, result, opts.created_by)
    except (OrchError, psycopg.Error) as exc:
        if lease is not None:
            lease.close()
        conn.close()
        return _could_not_run(result, exc)
    try:
        _run_phases(opts, conn, result, phases)
        result.kept = opts.keep and result.scratch_db is not None
        result.finished_at = datetime.now(UTC)
        try:
            phases.run("report", _finish_record, conn, result)
        except psycopg.Error as exc:  # the verdict is still returned; the next drill cleans up
            _add_error(result, f"the verdict could not be recorded: {verify.first_line(exc)}")
        _cleanup(conn, result, phases)
    finally:
        lease.close()
        conn.close()
    return result


def _could_not_run(result: DrillResult, exc: BaseException) -> DrillResult:
    result.state, result.error, result.finished_at = "error", verify.first_line(exc), datetime.now(UTC)
    return result


def _add_error(result: DrillResult, text: str) -> None:
    result.error = f"{result.error}; {text}" if result.error else text


def _run_phases(opts: DrillOptions, conn: psycopg.Connection, result: DrillResult, phases: _Phases) -> None:
    """Backup, checksum, restore, verify; the outcome into ``result`` (an error ends it as 'error')."""
    try:
        tools = find_tools(opts.tool_origin, opts.pg_bin)
        result.tools = tools.as_dict()
        backup = _obtain_backup(opts, tools, conn, phases)
        result.backup_id = backup.backup_id
        checksum = phases.run("checksum", _checksum, backup)
        result.checks.append(checksum)
        if checksum.passed:
            _restore_and_verify(opts, conn, tools, backup, result, phases)
    except Exception as exc:  # could not run: say why (a bug's type is named too)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result.state, result.error = (
            "error",
            text if isinstance(exc, OrchError) else f"{type(exc).__name__}: {text}",
        )
        return
    result.state = "failed" if result.failed_checks() else "passed"


def discard_kept(dsn: str) -> list[dict[str, Any]]:
    """Drop every scratch database kept for forensics (and any leftovers); returns what was dropped."""
    with connection(dsn, autocommit=True) as conn:
        require_schema(conn, BACKUP_TABLES, record_decision=False)
        return clean_leftovers(conn, include_kept=True)


def describe_target(dsn: str, scratch_db: str | None) -> str | None:
    """The DSN of a kept scratch database, password redacted, for the operator to connect to."""
    return redact_dsn(with_database(dsn, scratch_db)) if scratch_db else None
