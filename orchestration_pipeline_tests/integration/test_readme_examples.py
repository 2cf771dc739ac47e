"""The README's command examples work on the demo data, as a new user would type them."""

import os
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli import main
from orchestration_pipeline.lib.db import connection

pytestmark = pytest.mark.db

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def cli(orch_dsn, tasks_dsn, tmp_path):
    def _cli(*args: str):
        cleared = {k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))}
        env = {
            **cleared,
            "ORCH_HOME": str(tmp_path / "home"),
            "ORCH_DATABASE_URL": orch_dsn,
            "TASKS_DATABASE_URL": tasks_dsn,
        }
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result

    return _cli


def _decisions_example() -> list[list[str]]:
    """The three commands of the README's policy / decisions / audit example, as argv lists."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(orchestration-pipeline policy set tag-flaky.*?)```", text, re.S)
    assert block, "the README no longer has the tag-flaky example"
    commands = [shlex.split(line) for line in block[1].strip().splitlines()]
    assert [c[1:3] for c in commands] == [["policy", "set"], ["decisions", "execute"], ["audit", "query"]]
    return [c[1:] for c in commands]


def test_the_readme_decisions_example_works_after_the_demo_seed(cli, tasks_dsn):
    seeded = cli("demo", "generate", "--sessions", "5")
    assert seeded.exit_code == 0, seeded.output
    policy, execute, audit = _decisions_example()

    for argv in (policy, execute, audit):
        result = cli(*argv)
        assert result.exit_code == 0, (argv, result.output)
    assert cli(*execute).stdout.startswith("duplicate")  # run once only
    target = execute[execute.index("--target") + 1]
    with connection(tasks_dsn) as conn:
        tags = conn.execute("SELECT tags FROM tasks WHERE task_id = %s", (target,)).fetchone()
    assert tags is not None and "flaky" in tags[0]
    assert "policy:tag-flaky" in cli(*audit).stdout


def test_projection_reports_has_a_header_line(cli, tmp_path):
    assert cli("demo", "generate", "--sessions", "3").exit_code == 0
    assert cli("ingest", "--quiet", str(tmp_path / "home" / "landing")).exit_code == 0
    assert cli("projection", "reconcile").exit_code == 0
    lines = cli("projection", "reports").stdout.splitlines()
    assert lines[0].split() == ["report", "finished", "at", "drift", "action", "detail"]
    assert len(lines) == 2 and lines[1].split()[0].isdigit()
