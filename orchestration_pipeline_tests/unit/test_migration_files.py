"""The shipped migrations follow the rules: named NNNN_name.sql, idempotent, forward-only."""

import re
from pathlib import Path

import pytest

from orchestration_pipeline.errors import MigrationError
from orchestration_pipeline.lib.db import TARGETS, discover_migrations
from orchestration_pipeline.lib.project_files import sql_dir

ALL_FILES = [m for t in TARGETS for m in discover_migrations(t)]


def _statements(text: str) -> str:
    """The top-level SQL: comments and dollar-quoted bodies (functions, DO blocks) removed."""
    return re.sub(r"\$(\w*)\$.*?\$\1\$", "", re.sub(r"--[^\n]*", "", text), flags=re.S)


def test_every_target_has_a_first_migration():
    assert [m.version for m in discover_migrations("orchestration")][0] == 1
    assert [m.version for m in discover_migrations("tasks")][0] == 1


@pytest.mark.parametrize("mig", ALL_FILES, ids=lambda m: f"{m.target}/{m.filename}")
def test_creates_are_idempotent(mig):
    body = _statements(mig.read()).upper()
    for stmt in re.findall(
        r"CREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|SCHEMA|SEQUENCE)\s+(?!IF NOT EXISTS)\S+", body
    ):
        pytest.fail(f"{mig.path}: not idempotent: {stmt!r} lacks IF NOT EXISTS")


@pytest.mark.parametrize("mig", ALL_FILES, ids=lambda m: f"{m.target}/{m.filename}")
def test_forward_only_no_data_drops(mig):
    body = _statements(mig.read()).upper()
    assert not re.search(r"\bDROP\s+(TABLE|SCHEMA|DATABASE|COLUMN)\b", body), f"{mig.path} drops data"
    assert not _truncates(body), f"{mig.path} truncates data"


def _truncates(body: str) -> bool:
    """A TRUNCATE statement, as opposed to a trigger that guards against one (BEFORE TRUNCATE)."""
    return bool(re.search(r"(?:^|;)\s*TRUNCATE\b", body.upper()))


def test_truncate_detection_tells_statements_from_guards():
    assert _truncates("TRUNCATE events;")
    assert _truncates("SELECT 1;\n  truncate table quarantine;")
    assert not _truncates(
        "CREATE OR REPLACE TRIGGER g BEFORE TRUNCATE ON audit_ledger FOR EACH STATEMENT ...;"
    )
    # a function body may truncate its own work tables; only top-level statements count
    assert not _truncates(_statements("CREATE FUNCTION f() AS $fn$ BEGIN TRUNCATE t; END $fn$;"))


def test_misnamed_file_is_refused(tmp_path):
    (tmp_path / "orchestration").mkdir()
    (tmp_path / "orchestration" / "1_core.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="rename it to NNNN_lower_snake.sql"):
        discover_migrations("orchestration", tmp_path)


def test_unknown_target_is_refused():
    with pytest.raises(MigrationError, match="use one of"):
        discover_migrations("nope")


def test_sql_lives_only_in_sql_dir():
    """No Python module creates tables: DDL belongs in sql/."""
    pkg = Path(sql_dir()).parent / "orchestration_pipeline"
    offenders = [p for p in pkg.rglob("*.py") if re.search(r"CREATE\s+TABLE", p.read_text(), re.I)]
    assert offenders == []


def test_the_failure_types_are_those_the_quarantine_table_accepts():
    """The Python list and the latest CHECK constraint on quarantine.failure_type are one list."""
    import re

    from orchestration_pipeline.lib.ingestion.failure_types import FAILURE_TYPES
    from orchestration_pipeline.lib.project_files import sql_dir

    latest = sorted(
        f for f in (sql_dir() / "orchestration").glob("*.sql") if "failure_type IN (" in f.read_text()
    )[-1]
    listed = re.search(r"failure_type IN \((.*?)\)\)", latest.read_text(), re.S).group(1)
    assert tuple(re.findall(r"'(\w+)'", listed)) == FAILURE_TYPES
