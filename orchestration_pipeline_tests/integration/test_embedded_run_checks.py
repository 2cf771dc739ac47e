"""`up --env` then `down` then `up`/`run`, and `run` reporting failed checks: the real console script."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration_pipeline_tests.conftest import clean_env

pytestmark = pytest.mark.slow

CLI = [str(Path(sys.executable).parent / "orchestration-pipeline")]


def _cli(*args: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "orch"
    yield home
    _cli("down", env=clean_env(ORCH_HOME=str(home)))


def _exported(stdout: str) -> dict[str, str]:
    env = {}
    for line in stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return env


def test_up_env_then_down_then_run_restarts_embedded_and_fails_on_error_checks(home):
    env = clean_env(ORCH_HOME=str(home))
    up = _cli("up", "--env", env=env)
    assert up.returncode == 0, up.stderr
    exported = {**env, **_exported(up.stdout)}
    assert "host=" in exported["ORCH_DATABASE_URL"]  # the embedded server's own socket

    down = _cli("down", env=exported)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
    again = _cli("up", env=exported)
    assert again.returncode == 0, again.stderr
    assert "embedded (pid" in again.stdout
    assert _cli("down", env=exported).returncode == 0

    demo = _cli("demo", "generate", "--sessions", "5", "--faults", "--seed", "3", env=exported)
    assert demo.returncode == 0, demo.stderr  # `demo` (and `run`) start the embedded server too
    run = _cli("run", env=exported, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    failed = [line for line in run.stdout.splitlines() if line.startswith("check failed:")]
    assert any(
        "raw_events core_event_coverage [ERROR]" in line
        and line.endswith("— read docs/runbooks/ingestion.md#core_event_coverage")
        for line in failed
    ), run.stdout
    assert any("raw_events policy_violations_complete [ERROR]" in line for line in failed), run.stdout
    assert "ERROR-severity check(s) failed" in run.stderr.strip().splitlines()[-1]

    # the table: every check with its asset, severity and result
    table = [line.split() for line in run.stdout.splitlines()]
    assert ["check", "asset", "severity", "result"] in table, run.stdout
    assert ["core_event_coverage", "raw_events", "ERROR", "failed"] in table, run.stdout
    assert ["schema_migrations_current", "orchestration_schema", "ERROR", "passed"] in table, run.stdout
    # Dagster's own log goes to a file under ORCH_HOME, not to the terminal
    for noise in ("DEBUG", "SupersessionWarning", "BetaWarning", "RUN_START"):
        assert noise not in run.stdout + run.stderr, noise
    logs = list((home / "logs").glob("run-*.log"))
    assert len(logs) == 1 and "RUN_START" in logs[0].read_text()
    assert str(logs[0]) in run.stderr
