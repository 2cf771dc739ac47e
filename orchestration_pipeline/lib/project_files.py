"""Where the project's non-Python files (``sql/``, ``deploy/dagster.yaml``) are found."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from orchestration_pipeline.errors import ConfigError


def project_root() -> Path:
    """The checkout that holds ``sql/`` and ``deploy/dagster.yaml`` (override with ORCH_PROJECT_ROOT)."""
    override = os.environ.get("ORCH_PROJECT_ROOT")
    root = Path(override) if override else Path(__file__).resolve().parents[2]
    if not (root / "sql").is_dir():
        raise ConfigError(
            f"cannot find the sql/ directory under {root} — install with 'pip install -e .' "
            "from a checkout, or set ORCH_PROJECT_ROOT to it"
        )
    return root


def sql_dir() -> Path:
    """The root of the migration files."""
    return project_root() / "sql"


@functools.cache
def runtime_sql(name: str) -> str:
    """DDL of session temp tables (``sql/runtime/<name>``), created per connection; read once per process."""
    return (sql_dir() / "runtime" / name).read_text(encoding="utf-8")
