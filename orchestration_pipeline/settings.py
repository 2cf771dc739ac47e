"""Typed settings, read from the environment in exactly one place.

Nothing here runs at import time: call :func:`load_settings` when the values are needed.

| variable              | meaning                                                    | default        |
|-----------------------|------------------------------------------------------------|----------------|
| ORCH_HOME             | state directory (embedded Postgres, Qdrant, landing, ...)  | ./.orch        |
| ORCH_DATABASE_URL     | orchestration DB; unset = embedded server under ORCH_HOME  | (embedded)     |
| TASKS_DATABASE_URL    | authoritative Tasks DB                                     | (embedded)     |
| DAGSTER_DATABASE_URL  | Dagster's run/event storage                                | (embedded)     |
| QDRANT_URL            | Qdrant server; unset = qdrant-edge under ORCH_HOME/qdrant  | (embedded)     |
| QDRANT_API_KEY        | API key for QDRANT_URL                                     | none           |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, field_validator

from orchestration_pipeline.errors import ConfigError

ENV_VARS = (
    "ORCH_HOME",
    "ORCH_DATABASE_URL",
    "TASKS_DATABASE_URL",
    "DAGSTER_DATABASE_URL",
    "QDRANT_URL",
    "QDRANT_API_KEY",
)


class Settings(BaseModel):
    """Resolved configuration. URLs are ``None`` when not configured; whether the embedded server
    applies is :attr:`embedded_postgres` (also true for URLs naming its own socket)."""

    model_config = ConfigDict(frozen=True)

    orch_home: Path
    database_url: str | None = None
    tasks_database_url: str | None = None
    dagster_database_url: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None

    @field_validator("database_url", "tasks_database_url", "dagster_database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("postgresql://", "postgres://", "postgresql+psycopg2://")):
            got = f"a {value.split('://')[0]}:// URL" if "://" in value else "something that is not a URL"
            raise ValueError(
                f"expected a postgresql://user:password@host:port/dbname URL, got {got} "
                "(key=value connection strings are not accepted)"
            )
        try:
            urlsplit(value)  # read by embedded_postgres; a URL that does not parse is refused here
        except ValueError as exc:
            raise ValueError(f"the URL does not parse ({exc})") from None
        return value

    @property
    def embedded_postgres(self) -> bool:
        """True when the databases are the embedded server under ORCH_HOME: nothing configured, or
        both URLs its own socket."""
        if self.database_url is None:
            return True
        return self.points_at_embedded(self.database_url) and self.points_at_embedded(self.tasks_database_url)

    def points_at_embedded(self, dsn: str | None) -> bool:
        """True when ``dsn`` is the embedded server's own socket under ``$ORCH_HOME/pg``.

        ``eval "$(orchestration-pipeline up --env)"`` exports such URLs; after ``down`` they must
        still mean "the embedded server" (start it), not an external server that is down.
        """
        if not dsn:
            return False
        parts = urlsplit(dsn)
        host = ""
        if not parts.hostname:
            for pair in parts.query.split("&"):
                key, _, value = pair.partition("=")
                if key == "host":  # as libpq reads it: percent-decoded, "+" kept (not a space)
                    host = unquote(value)
                    break
        if not host.startswith("/"):
            return False
        pgdata = self.pg_dir.resolve()
        try:
            socket_dir = Path(host).resolve()
            return socket_dir == pgdata or socket_dir.is_relative_to(pgdata)
        except (OSError, RuntimeError):
            return False

    @property
    def embedded_qdrant(self) -> bool:
        """True when the vector index is qdrant-edge under ORCH_HOME/qdrant."""
        return self.qdrant_url is None

    @property
    def pg_dir(self) -> Path:
        return self.orch_home / "pg"

    @property
    def qdrant_path(self) -> Path:
        return self.orch_home / "qdrant"

    @property
    def landing_dir(self) -> Path:
        return self.orch_home / "landing"

    @property
    def dagster_home(self) -> Path:
        return self.orch_home / "dagster"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``environ`` (default: ``os.environ``); empty values count as unset."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    home = Path(get("ORCH_HOME") or "./.orch").expanduser().resolve()
    database_url = get("ORCH_DATABASE_URL")
    tasks_url = get("TASKS_DATABASE_URL")
    if database_url and not tasks_url:
        raise ConfigError(
            "ORCH_DATABASE_URL is set but TASKS_DATABASE_URL is not — set TASKS_DATABASE_URL "
            "to the authoritative Tasks DB, or unset ORCH_DATABASE_URL to use the embedded server"
        )
    if tasks_url and not database_url:
        raise ConfigError(
            "TASKS_DATABASE_URL is set but ORCH_DATABASE_URL is not — set both, or neither for the embedded server"
        )
    try:
        return Settings(
            orch_home=home,
            database_url=database_url,
            tasks_database_url=tasks_url,
            dagster_database_url=get("DAGSTER_DATABASE_URL"),
            qdrant_url=get("QDRANT_URL"),
            qdrant_api_key=get("QDRANT_API_KEY"),
        )
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": ("?",), "msg": str(exc)}
        field = first["loc"][0] if first.get("loc") else "?"
        raise ConfigError(f"invalid setting {field}: {first['msg']} — fix the environment variable") from None
