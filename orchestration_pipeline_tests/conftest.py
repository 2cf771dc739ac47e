"""Shared fixtures: a real PostgreSQL for every database test.

By default each pytest process (each pytest-xdist worker) starts its own embedded server in a
temporary ORCH_HOME, on first use, and stops it at the end of its session. Workers never share a
server: the projector's horizon (the oldest transaction still running) is cluster-wide, so one
worker's open transaction would hold back another worker's projection. With ORCH_TEST_DATABASE_URL
set (for example postgresql://postgres@127.0.0.1:5432/postgres) the tests use that server
instead, and ``-n auto`` runs them in one process for the same reason.

Either way each test gets its own database: an empty one (``fresh_dsn``, ``databases.create()``),
or a copy of a template that this process migrated once (``orch_dsn``, ``tasks_dsn``,
``databases.migrated(target, upto=...)``). Templates are marked ``IS_TEMPLATE`` and refuse
connections, so nothing writes to one by accident; they are dropped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from orchestration_pipeline.lib.db import connection, discover_migrations, migrate
from orchestration_pipeline.lib.embedded import ensure_postgres, stop_postgres, with_database
from orchestration_pipeline.lib.project_files import sql_dir

REPO_ROOT = Path(__file__).resolve().parents[1]

# A shard host that a test starts and does not stop exits soon after the run, not 10 minutes later.
os.environ.setdefault("ORCH_INDEX_HOST_IDLE_S", "30")

# Settings for the throwaway embedded test server only (never for ORCH_TEST_DATABASE_URL): its data
# is deleted after the run, so durability across a crash of the machine buys nothing.
_TEST_SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _server_url() -> str:
    return os.environ.get("ORCH_TEST_DATABASE_URL", "").strip()


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one process against ORCH_TEST_DATABASE_URL (a shared cluster), else xdist's own
    count (the CPUs this process may use)."""
    return 0 if _server_url() else None


def _tune_test_server(admin_dsn: str) -> None:
    with connection(admin_dsn, autocommit=True) as conn:
        for name, value in _TEST_SERVER_SETTINGS.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """DSN of a maintenance database on the server the tests use."""
    url = _server_url()
    if url:
        yield url
        return
    # Not under pytest's basetemp: another pytest session on the machine prunes old basetemps,
    # which would delete this server's data directory under it.
    home = Path(tempfile.mkdtemp(prefix="orch-test-pg-"))
    try:
        server = ensure_postgres(home)
        _tune_test_server(server.admin_dsn)
        yield server.admin_dsn
    finally:
        stop_postgres(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def server_mode() -> bool:
    """True when the tests run against ORCH_TEST_DATABASE_URL rather than the embedded server."""
    return bool(_server_url())


def _execute(admin_dsn: str, *statements: sql.Composable) -> None:
    with connection(admin_dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _root_upto(workdir: Path, target: str, upto: int) -> Path:
    """A migrations root under ``workdir`` with the files of ``target`` up to version ``upto``,
    unchanged (so a later ``migrate`` with the real root applies just the rest)."""
    files = [m for m in discover_migrations(target) if m.version <= upto]
    if not files or files[-1].version != upto:
        raise ValueError(f"{target} has no migration {upto:04d} — pass the version of one of its files")
    root = workdir / target
    root.mkdir()
    shutil.copy(sql_dir() / "schema_migrations.sql", workdir / "schema_migrations.sql")
    for migration in files:
        shutil.copy(migration.path, root / migration.filename)
    return workdir


class MigratedTemplates:
    """Template databases, one per (target, last version), each migrated once in this process.

    Copying a template (``CREATE DATABASE … TEMPLATE``) is faster than applying every migration
    again, and stays so as migrations are added. Names are unique per process, so sessions sharing
    a server (ORCH_TEST_DATABASE_URL) never copy a template another one is still building.
    """

    def __init__(self, admin_dsn: str):
        self.admin_dsn = admin_dsn
        self.built: dict[tuple[str, int | None], str] = {}
        self.tag = uuid.uuid4().hex[:8]

    def name(self, target: str, upto: int | None = None) -> str:
        """The template of ``target`` with its migrations up to ``upto`` (all when None) applied."""
        key = (target, upto)
        if key not in self.built:
            self.built[key] = self._build(target, upto)
        return self.built[key]

    def _build(self, target: str, upto: int | None) -> str:
        name = f"orch_test_template_{target}_{'all' if upto is None else f'{upto:04d}'}_{self.tag}"
        ident = sql.Identifier(name)
        _execute(self.admin_dsn, sql.SQL("CREATE DATABASE {}").format(ident))
        try:
            with tempfile.TemporaryDirectory(prefix="orch-test-sql-") as workdir:
                root = None if upto is None else _root_upto(Path(workdir), target, upto)
                with connection(with_database(self.admin_dsn, name)) as conn:
                    migrate(conn, target, root=root)
        except BaseException:
            _execute(self.admin_dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            raise
        _execute(
            self.admin_dsn,
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(ident),
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                ident, sql.Literal("test template: copied by the test fixtures, dropped after the run")
            ),
        )
        return name

    def drop_all(self) -> None:
        for name in self.built.values():
            ident = sql.Identifier(name)
            _execute(
                self.admin_dsn,
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident),
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident),
            )
        self.built.clear()


@pytest.fixture(scope="session")
def migrated_templates(pg_admin_dsn: str) -> Iterator[MigratedTemplates]:
    templates = MigratedTemplates(pg_admin_dsn)
    yield templates
    templates.drop_all()


class DatabaseFactory:
    """Creates uniquely named databases on the test server and drops them afterwards."""

    def __init__(self, admin_dsn: str, templates: MigratedTemplates):
        self.admin_dsn = admin_dsn
        self.templates = templates
        self.created: list[str] = []

    def create(self, prefix: str = "t", *, template: str | None = None) -> str:
        """An empty database (or a copy of ``template``); returns its DSN."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        _execute(self.admin_dsn, statement)
        self.created.append(name)
        return with_database(self.admin_dsn, name)

    def migrated(self, target: str, prefix: str | None = None, *, upto: int | None = None) -> str:
        """A database with the migrations of ``target`` applied, all or up to version ``upto``."""
        template = self.templates.name(target, upto)
        return self.create(prefix or target[:5], template=template)

    def drop(self, dsn: str) -> None:
        """Drop one database this factory created, before the test ends."""
        name = conninfo_to_dict(dsn)["dbname"]
        self.created.remove(name)
        _execute(
            self.admin_dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def drop_all(self) -> None:
        with connection(self.admin_dsn, autocommit=True) as conn:
            for name in self.created:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.created.clear()


@pytest.fixture
def databases(pg_admin_dsn: str, migrated_templates: MigratedTemplates) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_admin_dsn, migrated_templates)
    yield factory
    factory.drop_all()


@pytest.fixture
def fresh_dsn(databases: DatabaseFactory) -> str:
    """An empty database."""
    return databases.create()


@pytest.fixture
def orch_dsn(databases: DatabaseFactory) -> str:
    """An orchestration DB with every migration applied."""
    return databases.migrated("orchestration", "orch")


@pytest.fixture
def tasks_dsn(databases: DatabaseFactory) -> str:
    """A Tasks DB with every migration applied."""
    return databases.migrated("tasks", "tasks")


@pytest.fixture
def orch_conn(orch_dsn: str) -> Iterator[psycopg.Connection]:
    with connection(orch_dsn) as conn:
        yield conn


def clean_env(**overrides: str) -> dict[str, str]:
    """os.environ without the pipeline's settings, plus ``overrides`` (for CLI subprocesses)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))
    }
    env.update(overrides)
    return env


def make_event(event_type: str = "decision", minutes_ago: float = 60, **fields) -> dict:
    """A valid event dict; ``fields`` override envelope fields (``payload`` replaces the default)."""
    from datetime import UTC, datetime, timedelta

    defaults = {
        "task_start": {},
        "task_end": {"success": True, "duration_ms": 10},
        "command_start": {"command": "make"},
        "command_end": {"exit_code": 0, "duration_ms": 5},
        "decision": {"rationale": "because"},
        "metric": {"name": "m", "value": 1},
        "error": {"message": "boom"},
        "policy_violation": {"host": "h", "file": "f", "policy": "p", "rule": "r"},
        "artifact_emit": {"path": "a.txt", "size_bytes": 1, "sha256": "0" * 64},
    }
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat(),
        "session_id": "s-1",
        "payload": defaults.get(
            event_type, {"agent_type": "coder", "agent_name": "a", "task_description": "t"}
        ),
    }
    if event_type == "error":
        event["stage"] = "db"
    event.update(fields)
    return event


def write_jsonl(path: Path, items) -> Path:
    """Write dicts (as JSON) and bytes/str (verbatim) as lines."""
    import json as _json

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for item in items:
            if isinstance(item, dict):
                item = _json.dumps(item)
            if isinstance(item, str):
                item = item.encode()
            handle.write(item + b"\n")
    return path
