"""Bringing the pipeline's services up: databases (embedded or configured) plus migrations."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg

from orchestration_pipeline.errors import ConfigError
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
