"""A database lost mid-command: the one-line error names what is in use, the embedded server or
the server settings actually set, and never a variable that is not."""

import os

import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli import main
from orchestration_pipeline.lib.embedded import DatabaseUrls
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db

EMBEDDED_FIX = (
    "start it with 'orchestration-pipeline up', or restart it with 'orchestration-pipeline down' then 'up'"
)


def _lose_the_connection(conn) -> None:
    """The server ends this backend, as a stopped or restarted server does mid-command."""
    conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def cli(home):
    """Runs the CLI in-process with exactly the settings given; returns its single stderr line."""

    def _cli(*args: str, **settings: str) -> str:
        cleared = {k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))}
        env = {**cleared, "ORCH_HOME": str(home), "ORCH_ACTOR": "test:cli", **settings}
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == 1, (result.output, result.exception)
        assert "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: database unavailable: "), lines[0]
        return lines[0]

    return _cli


@pytest.fixture
def embedded_server(monkeypatch, orch_dsn, tasks_dsn):
    """The embedded server's databases, stood in for by the test server's (nothing is started)."""
    monkeypatch.setattr(
        "orchestration_pipeline.lib.embedded.resolve_database_urls",
        lambda settings, start=True: DatabaseUrls(orch_dsn, tasks_dsn, orch_dsn),
    )


@pytest.fixture
def policy_list_loses_its_connection(monkeypatch):
    monkeypatch.setattr("orchestration_pipeline.lib.executions.policies.list_policies", _lose_the_connection)


@pytest.fixture
def ingest_loses_its_connection(monkeypatch):
    from orchestration_pipeline.lib.ingestion.ingest import Ingestor

    monkeypatch.setattr(Ingestor, "ingest_paths", lambda self, paths: _lose_the_connection(self.conn))


def _socket_urls(home) -> dict[str, str]:
    """What ``eval "$(orchestration-pipeline up --env)"`` exports: URLs on the embedded server's socket."""
    return {
        "ORCH_DATABASE_URL": f"postgresql://postgres:@/orchestration?host={home / 'pg'}",
        "TASKS_DATABASE_URL": f"postgresql://postgres:@/tasks?host={home / 'pg'}",
    }


@pytest.mark.usefixtures("embedded_server", "policy_list_loses_its_connection")
@pytest.mark.parametrize("exported", [False, True], ids=["nothing_set", "up_env_exported"])
def test_in_embedded_mode_the_embedded_server_is_named(cli, home, exported):
    line = cli("policy", "list", **(_socket_urls(home) if exported else {}))
    assert f"the embedded PostgreSQL under {home / 'pg'} is in use: {EMBEDDED_FIX}" in line
    assert "DATABASE_URL" not in line, line


@pytest.mark.usefixtures("policy_list_loses_its_connection")
def test_with_servers_the_variables_set_are_named(cli, orch_dsn, tasks_dsn):
    line = cli("policy", "list", ORCH_DATABASE_URL=orch_dsn, TASKS_DATABASE_URL=tasks_dsn)
    assert line.endswith(" — check ORCH_DATABASE_URL and TASKS_DATABASE_URL and the servers they name"), line
    assert "embedded" not in line and "DAGSTER_DATABASE_URL" not in line

    line = cli(
        "policy",
        "list",
        ORCH_DATABASE_URL=orch_dsn,
        TASKS_DATABASE_URL=tasks_dsn,
        DAGSTER_DATABASE_URL=orch_dsn,
    )
    assert (
        "check ORCH_DATABASE_URL, TASKS_DATABASE_URL and DAGSTER_DATABASE_URL and the servers they name"
        in line
    )


@pytest.mark.usefixtures("embedded_server", "policy_list_loses_its_connection")
def test_a_mix_names_the_server_setting_and_the_embedded_one(cli, home, tasks_dsn):
    line = cli(
        "policy",
        "list",
        ORCH_DATABASE_URL=_socket_urls(home)["ORCH_DATABASE_URL"],
        TASKS_DATABASE_URL=tasks_dsn,
    )
    assert "check TASKS_DATABASE_URL and the server it names" in line, line
    assert f"ORCH_DATABASE_URL names the embedded PostgreSQL under {home / 'pg'}: {EMBEDDED_FIX}" in line


@pytest.mark.usefixtures("embedded_server", "ingest_loses_its_connection")
def test_ingest_in_embedded_mode_names_the_embedded_server(cli, home, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", [make_event()])
    line = cli("ingest", "--quiet", str(path))
    assert "running the same command again is safe" in line
    assert line.endswith(f"the embedded PostgreSQL under {home / 'pg'} is in use: {EMBEDDED_FIX}"), line
    assert "DATABASE_URL" not in line


@pytest.mark.usefixtures("ingest_loses_its_connection")
def test_ingest_with_a_server_names_only_the_setting_it_uses(cli, orch_dsn, tasks_dsn, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", [make_event()])
    line = cli("ingest", "--quiet", str(path), ORCH_DATABASE_URL=orch_dsn, TASKS_DATABASE_URL=tasks_dsn)
    assert line.endswith(
        "running the same command again is safe; check ORCH_DATABASE_URL and the server it names"
    )
    assert "embedded" not in line and "TASKS_DATABASE_URL" not in line
