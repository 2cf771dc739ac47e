"""Shared fixtures: a real PostgreSQL for every database test.

By default the tests start an embedded server in a temporary ORCH_HOME. With
ORCH_TEST_DATABASE_URL set (for example postgresql://postgres@127.0.0.1:5432/postgres), they
use that server instead. Either way each test gets its own freshly created database.
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

from orchestration_pipeline.lib.db import connection, migrate
from orchestration_pipeline.lib.embedded import ensure_postgres, stop_postgres, with_database

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of a maintenance database on the server the tests use."""
    url = os.environ.get("ORCH_TEST_DATABASE_URL", "").strip()
    if url:
        yield url
        return
    # Not under pytest's basetemp: another pytest session on the machine prunes old basetemps,
    # which would delete this server's data directory under it.
    home = Path(tempfile.mkdtemp(prefix="orch-test-pg-"))
    server = ensure_postgres(home)
    try:
        yield server.admin_dsn
    finally:
        stop_postgres(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def server_mode() -> bool:
    """True when the tests run against ORCH_TEST_DATABASE_URL rather than the embedded server."""
    return bool(os.environ.get("ORCH_TEST_DATABASE_URL", "").strip())


class DatabaseFactory:
    """Creates uniquely named databases on the test server and drops them afterwards."""

    def __init__(self, admin_dsn: str):
        self.admin_dsn = admin_dsn
        self.created: list[str] = []

    def create(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with connection(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return with_database(self.admin_dsn, name)

    def drop_all(self) -> None:
        with connection(self.admin_dsn, autocommit=True) as conn:
            for name in self.created:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def databases(pg_admin_dsn: str) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_admin_dsn)
    yield factory
    factory.drop_all()


@pytest.fixture
def fresh_dsn(databases: DatabaseFactory) -> str:
    """An empty database."""
    return databases.create()


@pytest.fixture
def orch_dsn(databases: DatabaseFactory) -> str:
    """An orchestration DB with every migration applied."""
    dsn = databases.create("orch")
    with connection(dsn) as conn:
        migrate(conn, "orchestration")
    return dsn


@pytest.fixture
def tasks_dsn(databases: DatabaseFactory) -> str:
    """A Tasks DB with every migration applied."""
    dsn = databases.create("tasks")
    with connection(dsn) as conn:
        migrate(conn, "tasks")
    return dsn


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
