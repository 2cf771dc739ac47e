"""The embedded default, driven through the real console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration_pipeline.lib.db import discover_migrations
from orchestration_pipeline_tests.conftest import clean_env

pytestmark = pytest.mark.slow

CLI = [str(Path(sys.executable).parent / "orchestration-pipeline")]


def _cli(*args: str, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _pid(home: Path) -> int:
    return int((home / "pg" / "postmaster.pid").read_text().splitlines()[0])


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "orch"
    yield home
    _cli("down", env=clean_env(ORCH_HOME=str(home)))


def test_fresh_home_starts_embedded_postgres_and_up_reuses_it(home):
    env = clean_env(ORCH_HOME=str(home))
    first = _cli("up", "--json", env=env)
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    assert info["postgres"].startswith("embedded")
    assert info["applied"] == {
        t: [m.filename for m in discover_migrations(t)] for t in ("orchestration", "tasks")
    }
    pid = _pid(home)
    if os.geteuid() == 0:  # PostgreSQL refuses root: the server must run as another user
        assert (home / "pg").stat().st_uid != 0

    second = _cli("up", "--json", env=env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["applied"] == {}
    assert _pid(home) == pid

    status = _cli("db", "status", "--json", "--check", env=env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["orchestration"]["pending"] == [] and report["tasks"]["applied"][0]["name"] == "tasks"

    down = _cli("down", env=env)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not (home / "pg" / "postmaster.pid").exists()
    again = _cli("down", env=env)
    assert again.returncode == 0 and "not running" in again.stdout


def test_two_processes_starting_at_once_share_one_server(home):
    env = clean_env(ORCH_HOME=str(home))
    procs = [
        subprocess.Popen(
            [*CLI, "up", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    pids = {json.loads(o[0])["postgres"] for o in outs}
    assert len(pids) == 1
    applied = [json.loads(o[0])["applied"] for o in outs]
    # each database's migrations were applied exactly once, by one process or the other: one may
    # take the orchestration DB while the other takes the Tasks DB
    assert sorted(target for a in applied for target in a) == ["orchestration", "tasks"]


def test_unreachable_server_is_one_line_naming_the_fix(tmp_path):
    env = clean_env(
        ORCH_HOME=str(tmp_path),
        ORCH_DATABASE_URL="postgresql://postgres@127.0.0.1:1/orchestration",
        TASKS_DATABASE_URL="postgresql://postgres@127.0.0.1:1/tasks",
    )
    result = _cli("db", "migrate", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: cannot connect to postgresql://postgres@127.0.0.1:1/orchestration"
    )
    assert "start the server" in lines[0]


def test_half_configuration_is_refused(tmp_path):
    env = clean_env(ORCH_HOME=str(tmp_path), ORCH_DATABASE_URL="postgresql://postgres@127.0.0.1:1/x")
    result = _cli("up", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "TASKS_DATABASE_URL" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["up"],
        ["dev"],
        ["down"],
        ["run"],
        ["db"],
        ["db", "migrate"],
        ["db", "status"],
        ["ingest"],
        ["quarantine", "list"],
        ["quarantine", "replay"],
        ["quarantine", "discard"],
        ["audit", "query"],
        ["audit", "verify"],
        ["policy", "set"],
        ["policy", "list"],
        ["decisions", "execute"],
        ["decisions", "list"],
        ["decisions", "rescue"],
        ["events", "schema"],
        ["demo", "generate"],
        ["emit"],
        ["projection"],
        ["projection", "update"],
        ["projection", "reconcile"],
        ["projection", "reports"],
    ],
)
def test_every_command_has_help(argv):
    result = subprocess.run([*CLI, *argv, "--help"], capture_output=True, text=True, env=clean_env())
    assert result.returncode == 0
    assert "Usage:" in result.stdout and len(result.stdout.splitlines()) > 4


def test_run_materializes_end_to_end_on_a_fresh_home(home):
    result = _cli("run", env=clean_env(ORCH_HOME=str(home)), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("all ") and "checks passed" in lines[-1], result.stdout
    assert ["schema_migrations_current", "orchestration_schema", "ERROR", "passed"] in [
        line.split() for line in lines
    ]
    assert "RUN_SUCCESS" not in result.stderr  # Dagster's own log is in the file instead
    (log,) = (home / "logs").glob("run-*.log")
    text = log.read_text()
    assert "RUN_SUCCESS" in text
    assert "Asset check 'schema_migrations_current' on 'orchestration_schema' passed" in text

    # where --verbose sends Dagster's log does not depend on the selection: one asset is enough
    argv = ("run", "--verbose", "--select", "orchestration_schema")
    verbose = _cli(*argv, env=clean_env(ORCH_HOME=str(home)), timeout=300)
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "RUN_SUCCESS" in verbose.stderr
    assert verbose.stdout.strip().splitlines()[-1].startswith("all ")
    assert list((home / "logs").glob("run-*.log")) == [log]  # --verbose writes no file


def test_a_process_can_stop_the_embedded_server_and_start_it_again(home):
    """The wheel caches a handle per data directory; a stale one must not stand in for a server."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.embedded import ensure_postgres, stop_postgres

    first = ensure_postgres(home)
    assert stop_postgres(home)
    second = ensure_postgres(home)
    assert second.pid != first.pid
    with connection(second.dsn("orchestration"), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
