"""Connections, the migrations runner and the schema gate.

Migrations are plain SQL files named ``sql/<target>/NNNN_name.sql``. The runner:

* takes a session-level advisory lock per target, so concurrent runners serialise;
* applies each pending file in its own transaction, recording version, name, sha256,
  applied_at and duration_ms in ``schema_migrations`` inside that same transaction;
* refuses to go on when a file that was already applied has changed (checksum drift).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from orchestration_pipeline.errors import DatabaseUnavailable, MigrationError, SchemaNotReady
from orchestration_pipeline.lib import telemetry
from orchestration_pipeline.lib.project_files import sql_dir

TARGETS = ("orchestration", "tasks")
TASKS_TABLES = ("tasks",)  # what the pipeline reads in the Tasks DB: checked before reading it
_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# Stable 64-bit advisory-lock keys, one per target.
_LOCK_KEYS = {
    t: int.from_bytes(hashlib.sha256(f"orch-migrate:{t}".encode()).digest()[:8], "big", signed=True)
    for t in TARGETS
}


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, for messages and logs: in the URL's user info (up to
    its last ``@``), as a ``?password=`` parameter, or as a ``password=`` key-value setting."""
    dsn = re.sub(r"(://[^:/@\s]*:)[^/\s]*@", r"\1***@", dsn)  # libpq ends user info at "/" only
    return re.sub(r"(?i)((?:^|[\s?&])password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", r"\1***", dsn)


def _connect_fix(reason: str) -> str:
    """What to do about a failed connection, from libpq's reason."""
    if re.search(r'database "[^"]*" does not exist', reason):
        return "create the database (createdb), or fix the database name in the URL"
    if "password authentication failed" in reason or re.search(r'role "[^"]*" does not exist', reason):
        return "check the user name and password in the URL"
    return "start the server ('orchestration-pipeline up' for the embedded one) or fix the URL"


def connect(
    dsn: str, *, autocommit: bool = False, read_only: bool = False, connect_timeout: int = 10
) -> psycopg.Connection:
    """Open a psycopg 3 connection, turning a refused connection into an error that names the fix."""
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(
            f"cannot connect to {redact_dsn(dsn)}: {reason} — {_connect_fix(reason)}"
        ) from None
    if read_only:
        conn.read_only = True
    return conn


def end_read(conn: psycopg.Connection) -> None:
    """End the transaction a read opened on a non-autocommit connection, so none stays idle in it."""
    if not conn.autocommit:
        conn.rollback()


@contextmanager
def connection(dsn: str, **kwargs: object) -> Iterator[psycopg.Connection]:
    """Context manager around :func:`connect` that always closes."""
    conn = connect(dsn, **kwargs)  # type: ignore[arg-type]
    try:
        yield conn
    finally:
        conn.close()


@dataclass(frozen=True)
class Migration:
    """One migration file on disk."""

    target: str
    version: int
    name: str
    path: Path
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.name

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    sha256: str
    applied_at: object
    duration_ms: int


@dataclass
class MigrationStatus:
    """What is applied, what is pending, and which applied files changed on disk."""

    target: str
    applied: list[AppliedMigration] = field(default_factory=list)
    pending: list[Migration] = field(default_factory=list)
    drifted: list[Migration] = field(default_factory=list)
    unknown: list[AppliedMigration] = field(default_factory=list)  # applied but no file on disk

    @property
    def current(self) -> bool:
        return not self.pending and not self.drifted


def discover_migrations(target: str, root: Path | None = None) -> list[Migration]:
    """The migration files of ``target``, in version order; malformed names are an error."""
    if target not in TARGETS:
        raise MigrationError(f"unknown migration target {target!r} — use one of {', '.join(TARGETS)}")
    folder = (root or sql_dir()) / target
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"migration file {path} is misnamed — rename it to NNNN_lower_snake.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"two migrations share version {version:04d} in {folder} — renumber one")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        found[version] = Migration(target, version, match["name"], path, digest)
    return [found[v] for v in sorted(found)]


def _bootstrap_sql(root: Path | None) -> str:
    return ((root or sql_dir()) / "schema_migrations.sql").read_text(encoding="utf-8")


def _read_applied(conn: psycopg.Connection) -> list[AppliedMigration]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return []
    rows = conn.execute(
        "SELECT version, name, sha256, applied_at, duration_ms FROM schema_migrations ORDER BY version"
    ).fetchall()
    return [AppliedMigration(*r) for r in rows]


def migration_status(conn: psycopg.Connection, target: str, root: Path | None = None) -> MigrationStatus:
    """Compare the files of ``target`` with what ``schema_migrations`` records."""
    files = discover_migrations(target, root)
    applied = _read_applied(conn)
    end_read(conn)
    by_version = {a.version: a for a in applied}
    status = MigrationStatus(target=target, applied=applied)
    file_versions = set()
    for mig in files:
        file_versions.add(mig.version)
        done = by_version.get(mig.version)
        if done is None:
            status.pending.append(mig)
        elif done.sha256 != mig.sha256:
            status.drifted.append(mig)
    status.unknown = [a for a in applied if a.version not in file_versions]
    return status


def _drift_error(drifted: Iterable[Migration]) -> MigrationError:
    names = ", ".join(str(m.path) for m in drifted)
    return MigrationError(
        f"applied migration changed on disk: {names} — restore the original file and put the change "
        "in a new migration (migrations are forward-only)"
    )


def migrate(conn: psycopg.Connection, target: str, root: Path | None = None) -> list[Migration]:
    """Apply pending migrations of ``target``; returns the ones this call applied.

    Safe to run concurrently: a session advisory lock serialises runners, and each file is
    applied and recorded in one transaction, so every file is applied exactly once.
    """
    files = discover_migrations(target, root)
    was_autocommit = conn.autocommit
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    conn.autocommit = True
    applied_now: list[Migration] = []
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEYS[target],))
        try:
            with conn.transaction():
                conn.execute(_bootstrap_sql(root))
            applied = {a.version: a for a in _read_applied(conn)}
            drifted = [m for m in files if m.version in applied and applied[m.version].sha256 != m.sha256]
            if drifted:
                raise _drift_error(drifted)
            for mig in files:
                if mig.version in applied:
                    continue
                started = time.perf_counter()
                try:
                    with conn.transaction():
                        conn.execute(mig.read())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, sha256, duration_ms) VALUES (%s, %s, %s, %s)",
                            (mig.version, mig.name, mig.sha256, int((time.perf_counter() - started) * 1000)),
                        )
                except psycopg.Error as exc:
                    detail = str(exc).strip().splitlines()[0]
                    raise MigrationError(
                        f"migration {mig.path} failed and was rolled back: {detail} — fix the file and rerun "
                        "'orchestration-pipeline db migrate'"
                    ) from None
                applied_now.append(mig)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEYS[target],))
    finally:
        conn.autocommit = was_autocommit
    return applied_now


def timescaledb_available(conn: psycopg.Connection) -> bool:
    """True when the TimescaleDB extension can be created (or already is) on this server."""
    row = conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    end_read(conn)
    return bool(row and row[0])


def missing_tables(conn: psycopg.Connection, tables: Iterable[str]) -> list[str]:
    """The subset of ``tables`` that do not exist, found with a single query."""
    names = list(dict.fromkeys(tables))
    rows = conn.execute(
        "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NULL", (names,)
    ).fetchall()
    return [r[0] for r in rows]


def require_schema(
    conn: psycopg.Connection,
    tables: Iterable[str],
    *,
    source: str = "orchestration-pipeline",
    record_decision: bool = True,
) -> None:
    """Check once that ``tables`` exist; otherwise raise exactly one :class:`SchemaNotReady`.

    When the ``events`` table itself exists, one ``decision`` event records why the caller
    stopped, so the gap is visible in the event log rather than in a flood of per-row errors.
    """
    # If the caller has no transaction open, the gate owns the one it starts and ends it;
    # inside a caller's transaction the decision row commits (or not) with the caller's work.
    owns_tx = not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    missing = missing_tables(conn, tables)
    if not missing:
        if owns_tx:
            conn.rollback()
        return
    error = SchemaNotReady(missing)
    if (
        record_decision
        and "events" not in missing
        and conn.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()[0]
    ):
        with conn.transaction():
            telemetry.record_decision(
                conn,
                source=source,
                stage="schema_gate",
                rationale=str(error),
                severity="error",
                details={"missing_tables": error.missing},
            )
        if owns_tx:
            conn.commit()
    elif owns_tx:
        conn.rollback()
    raise error


class SchemaGate:
    """Remembers a passed :func:`require_schema`, so hot paths check the catalogue only once.

    A failing gate re-checks on the next call (the operator may have migrated meanwhile) but
    records its ``decision`` event only the first time, so retries never flood the log.
    """

    def __init__(self, tables: Iterable[str], source: str = "orchestration-pipeline"):
        self.tables = tuple(tables)
        self.source = source
        self._passed = False
        self._recorded = False

    def check(self, conn: psycopg.Connection) -> None:
        if self._passed:
            return
        try:
            require_schema(conn, self.tables, source=self.source, record_decision=not self._recorded)
        except SchemaNotReady:
            self._recorded = True
            raise
        self._passed = True


def create_database_if_missing(admin_dsn: str, name: str) -> bool:
    """Create database ``name`` through ``admin_dsn``; returns True when it was created."""
    with connection(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:  # a concurrent creator won
            return False
        return True


# --- guard triggers, as the catalog has them ---------------------------------------------------

#: pg_trigger.tgtype bits
TRIGGER_ROW, TRIGGER_BEFORE = 1, 2
TRIGGER_EVENTS = {"INSERT": 4, "DELETE": 8, "UPDATE": 16, "TRUNCATE": 32}


@dataclass(frozen=True)
class Trigger:
    """A user trigger on a table, from ``pg_trigger``."""

    table: str
    name: str
    tgtype: int
    enabled: str  # 'O' fires normally, 'A' always; 'D' is disabled, 'R' fires only in replica mode
    function: str
    partial: bool  # a WHEN condition or an UPDATE OF column list: it fires for some rows only

    @property
    def fires(self) -> bool:
        """Enabled, and firing for every row: a guard that can be relied on."""
        return self.enabled in ("O", "A") and not self.partial

    def serves(self, operation: str, *, row_level: bool) -> bool:
        """A BEFORE trigger on ``operation`` (INSERT, UPDATE, DELETE, TRUNCATE), at that level."""
        return bool(self.tgtype & TRIGGER_BEFORE and self.tgtype & TRIGGER_EVENTS[operation]) and (
            bool(self.tgtype & TRIGGER_ROW) == row_level
        )


def table_triggers(conn: psycopg.Connection, tables: Iterable[str]) -> list[Trigger]:
    """The user triggers on ``tables`` (missing tables are skipped)."""
    rows = conn.execute(
        """SELECT c.relname, t.tgname, t.tgtype, t.tgenabled, p.proname,
                  t.tgqual IS NOT NULL OR t.tgattr::text <> ''
           FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_class c ON c.oid = t.tgrelid
           WHERE c.oid = ANY(SELECT to_regclass(n) FROM unnest(%s::text[]) AS n) AND NOT t.tgisinternal""",
        (list(tables),),
    ).fetchall()
    return [Trigger(*row) for row in rows]
