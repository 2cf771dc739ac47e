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
| ORCH_EMBEDDER         | minilm or hashing; unset = MiniLM when installed            | (auto)         |
| ORCH_INDEX_QUANTIZATION | on: search int8 vectors with rescoring; off: full vectors | on             |
| ORCH_RETENTION_HOT_DAYS | days kept in the row store (then warm: columnstore where TimescaleDB is) | 7  |
| ORCH_RETENTION_ARCHIVE_DAYS | days after which a day is archived to Parquet, then purged | 30          |
| ORCH_RETENTION_PURGE  | on: purge verified archived days; off: archive and report  | off            |
| ORCH_API_TOKEN        | bearer token of the HTTP API; required to bind beyond 127.0.0.1 | none      |
| ORCH_ALERT_WEBHOOK_URL | webhook alerts are POSTed to (Slack-compatible JSON)      | none           |
| ORCH_ALERT_MIN_SEVERITY | WARN: alert on warnings and errors; ERROR: errors only   | WARN           |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from orchestration_pipeline.errors import ConfigError

#: The environment variable behind each setting: errors name the variable, never the field.
FIELD_ENV = {
    "orch_home": "ORCH_HOME",
    "database_url": "ORCH_DATABASE_URL",
    "tasks_database_url": "TASKS_DATABASE_URL",
    "dagster_database_url": "DAGSTER_DATABASE_URL",
    "qdrant_url": "QDRANT_URL",
    "qdrant_api_key": "QDRANT_API_KEY",
    "embedder": "ORCH_EMBEDDER",
    "index_quantization": "ORCH_INDEX_QUANTIZATION",
    "retention_hot_days": "ORCH_RETENTION_HOT_DAYS",
    "retention_archive_days": "ORCH_RETENTION_ARCHIVE_DAYS",
    "retention_purge": "ORCH_RETENTION_PURGE",
    "api_token": "ORCH_API_TOKEN",
    "alert_webhook_url": "ORCH_ALERT_WEBHOOK_URL",
    "alert_min_severity": "ORCH_ALERT_MIN_SEVERITY",
}
ENV_VARS = tuple(FIELD_ENV.values())
POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg2://")


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is exactly ``message`` (no "Value error, " prefix)."""
    return PydanticCustomError("invalid_setting", "{message}", {"message": message})


def _postgres_url_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be the PostgreSQL URL in ``name``, as a sentence naming the fix; None if it can."""
    example = "postgresql://user:password@host:port/dbname"
    if value.startswith(POSTGRES_SCHEMES):
        try:
            urlsplit(value)  # read by embedded_postgres; a URL that does not parse is refused here
        except ValueError as exc:
            return f"{name} does not parse as a URL ({exc}) — fix {name}, e.g. {example}"
        return None
    if "://" in value:
        scheme = value.split("://", 1)[0]
        return f"{name} is a {scheme}:// URL, but a PostgreSQL server is needed — set {name} to a URL like {example}"
    if "=" in value:  # a libpq key=value string: never echoed, it may hold a password
        return (
            f"{name} looks like a key=value connection string, which is not accepted — "
            f"write it as a URL, e.g. {example}"
        )
    return f"{name} is not a URL — set it to a PostgreSQL URL like {example}"


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
    embedder: str | None = None
    index_quantization: bool = True
    retention_hot_days: int = 7
    retention_archive_days: int = 30
    retention_purge: bool = False
    api_token: str | None = None
    alert_webhook_url: str | None = None
    alert_min_severity: str = "WARN"

    @field_validator("embedder")
    @classmethod
    def _embedder(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in ("minilm", "hashing"):
            raise _invalid(
                f"ORCH_EMBEDDER must be minilm or hashing, not {value!r} — or unset it to use MiniLM when installed"
            )
        return value.lower() if value else None

    @field_validator("index_quantization", "retention_purge", mode="before")
    @classmethod
    def _on_off(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            if value.lower() not in ("on", "off", "true", "false", "1", "0"):
                raise _invalid(f"{FIELD_ENV[info.field_name]} must be on or off, not {value!r}")
            return value.lower() in ("on", "true", "1")
        return value

    @field_validator("retention_hot_days", "retention_archive_days", mode="before")
    @classmethod
    def _days(cls, value: object, info: ValidationInfo) -> object:
        name = FIELD_ENV[info.field_name]
        try:
            days = int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _invalid(f"{name} must be a whole number of days, not {value!r}") from None
        if days < 1:
            raise _invalid(f"{name} must be at least 1 day, not {days}")
        return days

    @model_validator(mode="after")
    def _windows(self) -> Settings:
        if self.retention_archive_days <= self.retention_hot_days:
            raise _invalid(
                f"ORCH_RETENTION_ARCHIVE_DAYS ({self.retention_archive_days}) must be more than "
                f"ORCH_RETENTION_HOT_DAYS ({self.retention_hot_days}): a day is archived after its hot and warm time"
            )
        return self

    @field_validator("database_url", "tasks_database_url", "dagster_database_url")
    @classmethod
    def _postgres_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        problem = None if value is None else _postgres_url_problem(FIELD_ENV[info.field_name], value)
        if problem:
            raise _invalid(problem)
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        # Never echoed: the path of an incoming-webhook URL is its secret.
        if value is None:
            return value
        try:
            parts = urlsplit(value)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            usable = False
        if not usable:
            raise _invalid(
                "ORCH_ALERT_WEBHOOK_URL must be an http:// or https:// URL (e.g. a Slack incoming webhook) — "
                "fix it, or unset it to alert only to the alerts table and stderr"
            )
        return value

    @field_validator("alert_min_severity", mode="before")
    @classmethod
    def _alert_threshold(cls, value: object) -> object:
        word = str(value).strip().upper()
        if word not in ("WARN", "ERROR"):
            raise _invalid(
                f"ORCH_ALERT_MIN_SEVERITY must be WARN or ERROR, not {value!r} — WARN alerts on warnings and "
                "errors, ERROR on errors only"
            )
        return word

    @field_validator("qdrant_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise _invalid(
                "QDRANT_URL must be the http:// or https:// URL of a Qdrant server (e.g. "
                "http://127.0.0.1:6333) — fix it, or unset it to use qdrant-edge under $ORCH_HOME/qdrant"
            )
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

    home = _orch_home(get("ORCH_HOME") or "./.orch")
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
            embedder=get("ORCH_EMBEDDER"),
            index_quantization=get("ORCH_INDEX_QUANTIZATION") or True,
            retention_hot_days=get("ORCH_RETENTION_HOT_DAYS") or 7,
            retention_archive_days=get("ORCH_RETENTION_ARCHIVE_DAYS") or 30,
            retention_purge=get("ORCH_RETENTION_PURGE") or False,
            api_token=get("ORCH_API_TOKEN"),
            alert_webhook_url=get("ORCH_ALERT_WEBHOOK_URL"),
            alert_min_severity=get("ORCH_ALERT_MIN_SEVERITY") or "WARN",
        )
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0])) from None


def _orch_home(raw: str) -> Path:
    try:
        return Path(raw).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # "~nobody/x", a symlink loop
        raise ConfigError(
            f"ORCH_HOME {raw} cannot be used ({exc}) — set ORCH_HOME to a directory path"
        ) from None


def _describe(error) -> str:
    """One line naming the environment variable, in the project's words rather than pydantic's."""
    field = str(error["loc"][0]) if error.get("loc") else ""
    name = FIELD_ENV.get(field, field or "a setting")
    if error["type"] == "invalid_setting":
        return error["msg"]
    return f"{name} has a value that cannot be used — fix or unset {name}"
