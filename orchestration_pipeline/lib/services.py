"""Bringing the pipeline's services up: databases (embedded or configured) plus migrations."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg

from orchestration_pipeline.errors import ConfigError, DatabaseUnavailable
from orchestration_pipeline.lib.db import TARGETS, connection, create_database_if_missing, migrate
from orchestration_pipeline.lib.embedded import (
    DatabaseUrls,
    qdrant_location,
    refuse_whitespace_path,
    resolve_database_urls,
    unwritable_home,
    with_database,
)
from orchestration_pipeline.lib.project_files import project_root
from orchestration_pipeline.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    urls: DatabaseUrls
    applied: dict[str, list[str]]


def connection_problem(name: str, dsn: str, exc: psycopg.Error) -> str:
    """One line for a database in setting ``name`` that refused the connection: which one, why, and
    what to do (libpq's own wording says little to someone who only set an environment variable)."""
    from orchestration_pipeline.lib.db import redact_dsn

    text = str(exc).strip()
    missing_db = re.search(r'database "([^"]*)" does not exist', text)
    if "Connection refused" in text:
        reason = "connection refused — is the server running, on that host and port?"
    elif missing_db:
        reason = f"database {missing_db[1]!r} does not exist — create it, or fix the database name in {name}"
    elif "password authentication failed" in text or re.search(r'role "[^"]*" does not exist', text):
        reason = f"the server refused the login — check the user name and password in {name}"
    elif "resolve host" in text or "translate host name" in text:
        reason = f"unknown host — check the host name in {name}"
    elif "timeout expired" in text:
        reason = "no answer in time — check the host, the port and any firewall in between"
    else:
        reason = f"{text.splitlines()[0] if text else type(exc).__name__} — check the server and {name}"
    return f"cannot connect to {name} ({redact_dsn(dsn)}): {reason}"


def _require_reachable(settings: Settings, urls: DatabaseUrls) -> None:
    """Configured servers answer, before anything is derived from them (the `dagster` database)."""
    if settings.embedded_postgres:
        return
    targets = [("ORCH_DATABASE_URL", urls.orchestration), ("TASKS_DATABASE_URL", urls.tasks)]
    if settings.dagster_database_url:
        targets.append(("DAGSTER_DATABASE_URL", urls.dagster))
    for name, dsn in targets:
        try:
            psycopg.connect(dsn, connect_timeout=10).close()
        except psycopg.Error as exc:
            raise DatabaseUnavailable(connection_problem(name, dsn, exc)) from None


def _ensure_dagster_database(settings: Settings, urls: DatabaseUrls) -> None:
    if settings.embedded_postgres or settings.dagster_database_url:
        return  # embedded creates it; an explicit URL is the operator's to provision
    try:
        create_database_if_missing(with_database(urls.orchestration, "postgres"), "dagster")
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot create the 'dagster' database ({str(exc).strip().splitlines()[0]}) — create it, "
            "or set DAGSTER_DATABASE_URL to a database Dagster may use"
        ) from None


def _make_dirs(settings: Settings, *dirs: Path) -> None:
    """Create directories under ORCH_HOME; one line naming the fix when that is not possible."""
    try:
        for directory in dirs:
            directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable_home(settings.orch_home, exc) from None


def bring_up(settings: Settings, *, apply_migrations: bool = True) -> Services:
    """Start embedded services if needed, make sure the databases exist, and migrate them."""
    if settings.embedded_postgres:
        refuse_whitespace_path(settings.pg_dir)  # before creating anything
    _make_dirs(settings, settings.orch_home)
    urls = resolve_database_urls(settings, start=True)
    _require_reachable(settings, urls)
    _ensure_dagster_database(settings, urls)
    _make_dirs(settings, *([settings.qdrant_path] if settings.embedded_qdrant else []), settings.landing_dir)
    applied: dict[str, list[str]] = {}
    if apply_migrations:
        for target in TARGETS:
            dsn = urls.orchestration if target == "orchestration" else urls.tasks
            with connection(dsn) as conn:
                applied[target] = [m.filename for m in migrate(conn, target)]
    return Services(settings, urls, applied)


def pipeline_environment(services: Services) -> dict[str, str]:
    """Environment for Dagster processes: what the resources' EnvVars and dagster.yaml read."""
    s = services.settings
    env = {
        "ORCH_HOME": str(s.orch_home),
        "ORCH_DATABASE_URL": services.urls.orchestration,
        "TASKS_DATABASE_URL": services.urls.tasks,
        "ORCH_DAGSTER_PG_URL": services.urls.dagster_sqlalchemy,
        "DAGSTER_HOME": str(s.dagster_home),
    }
    if s.qdrant_url:
        env["QDRANT_URL"] = s.qdrant_url
    if s.qdrant_api_key:
        env["QDRANT_API_KEY"] = s.qdrant_api_key
    return env


def prepare_dagster_home(settings: Settings) -> Path:
    """Create DAGSTER_HOME under ORCH_HOME holding the project's deploy/dagster.yaml (storage in PostgreSQL)."""
    home = settings.dagster_home
    try:
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(project_root() / "deploy" / "dagster.yaml", home / "dagster.yaml")
    except OSError as exc:
        raise unwritable_home(settings.orch_home, exc) from None
    return home


def describe(services: Services) -> dict[str, str]:
    """What `up` prints: DSNs and paths (passwords redacted)."""
    from orchestration_pipeline.lib.db import redact_dsn
    from orchestration_pipeline.lib.embedded import running_postgres

    s = services.settings
    embedded = s.embedded_postgres
    server = running_postgres(s.pg_dir.resolve()) if embedded else None
    return {
        "orch_home": str(s.orch_home),
        "postgres": f"embedded (pid {server.pid})" if server else ("embedded" if embedded else "server"),
        "orchestration_db": redact_dsn(services.urls.orchestration),
        "tasks_db": redact_dsn(services.urls.tasks),
        "dagster_db": redact_dsn(services.urls.dagster_sqlalchemy),
        "vector_index": ("qdrant-edge " if s.embedded_qdrant else "qdrant ") + qdrant_location(s),
        "landing_dir": str(s.landing_dir),
        "dagster_home": str(s.dagster_home),
    }


@dataclass(frozen=True)
class RunningDagster:
    """A `dagster dev` started by `orchestration-pipeline dev` for this ORCH_HOME that is still alive."""

    pid: int
    url: str


def dev_record_path(settings: Settings) -> Path:
    return settings.dagster_home / "dev.json"


def record_dagster_dev(settings: Settings, url: str, pid: int | None = None) -> None:
    """Note the `dagster dev` about to run (this process, which execs it) and its URL."""
    import json
    import os

    path = dev_record_path(settings)
    try:
        path.write_text(json.dumps({"pid": pid or os.getpid(), "url": url}), encoding="utf-8")
    except OSError as exc:
        raise unwritable_home(settings.orch_home, exc) from None


def running_dagster(settings: Settings) -> RunningDagster | None:
    """The `dagster dev` recorded for this ORCH_HOME, when its process is still alive and still Dagster."""
    import json

    try:
        record = json.loads(dev_record_path(settings).read_text(encoding="utf-8"))
        pid, url = int(record["pid"]), str(record["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return RunningDagster(pid, url) if _is_dagster_process(pid) else None


def _is_dagster_process(pid: int) -> bool:
    import os

    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no /proc (macOS), or it just ended: trust the record
        return True
    return b"dagster" in cmdline  # a pid reused by another program is not a running Dagster


@dataclass(frozen=True)
class PortProblem:
    in_use: bool  # something listens there already (else: not allowed, unknown host, ...)
    message: str


def port_problem(host: str, port: int) -> PortProblem | None:
    """Why a webserver could not listen on ``host:port``, or None when it could."""
    import errno
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((host, port), family=family):  # SO_REUSEADDR: TIME_WAIT is no obstacle
            return None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return PortProblem(True, f"port {port} on {host} is already in use")
        return PortProblem(False, f"cannot listen on {host}:{port} ({exc.strerror or exc})")
