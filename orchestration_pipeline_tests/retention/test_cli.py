"""``retention run|status`` and ``archive list|show|verify|restore`` through the CLI."""

import json
import os

import click
import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli._common import ErrorReportingGroup
from orchestration_pipeline.cli.retention import archive, retention
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline_tests.retention._support import old_day, partition_exists, seed_events, statuses

pytestmark = pytest.mark.db


@click.group(cls=ErrorReportingGroup)
def cli_main() -> None:
    """The console script's error handling around the two retention groups."""


cli_main.add_command(retention)
cli_main.add_command(archive)


@pytest.fixture
def cli(orch_dsn, tasks_dsn, tmp_path):
    def _cli(*args: str, **env: str):
        cleared = {k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))}
        full_env = {
            **cleared,
            "ORCH_HOME": str(tmp_path / "home"),
            "ORCH_DATABASE_URL": orch_dsn,
            "TASKS_DATABASE_URL": tasks_dsn,
            "ORCH_ACTOR": "test:cli",
            **env,
        }
        return CliRunner().invoke(cli_main, list(args), env=full_env, catch_exceptions=False)

    return _cli


def test_run_archives_with_purge_off_then_purges_when_on(cli, orch_dsn, tmp_path):
    day = old_day()
    with connection(orch_dsn) as conn:
        seed_events(conn, day, 60)
    dry = cli("retention", "run", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["outcomes"] == {"would_archive": 1}

    off = cli("retention", "run")
    assert off.exit_code == 0, off.output
    assert f"events {day} (events_p{day:%Y%m%d}): would_purge" in off.stdout
    assert "ORCH_RETENTION_PURGE is off" in off.stdout
    assert f"events {day}: would_purge" in off.stderr  # progress goes to stderr
    assert (tmp_path / "home" / "archive" / "events" / f"{day:%Y-%m-%d}.parquet").exists()

    on = cli("retention", "run", "--json", ORCH_RETENTION_PURGE="on")
    body = json.loads(on.stdout)
    assert on.exit_code == 0 and body["purge_enabled"] and body["outcomes"] == {"purged": 1}
    with connection(orch_dsn) as conn:
        assert not partition_exists(conn, f"events_p{day:%Y%m%d}")
        actor = conn.execute("SELECT actor FROM audit_ledger WHERE operation = 'purge'").fetchone()[0]
    assert actor == "test:cli"


def test_archive_list_show_verify_and_restore(cli, orch_dsn, tmp_path):
    day = old_day()
    with connection(orch_dsn) as conn:
        seed_events(conn, day, 25)
    assert cli("retention", "run", ORCH_RETENTION_PURGE="on").exit_code == 0
    listed = [json.loads(line) for line in cli("archive", "list", "--json").stdout.splitlines()]
    assert [(m["table_name"], m["day"], m["status"], m["row_count"]) for m in listed] == [
        ("events", day.isoformat(), "purged", 25)
    ]
    shown = json.loads(cli("archive", "show", str(listed[0]["manifest_id"])).stdout)
    assert shown["file_sha256"] == listed[0]["file_sha256"]

    restored = cli("archive", "restore", "--table", "events", "--day", day.isoformat(), "--json")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["into"] == f"events_restored_{day:%Y%m%d}"
    again = cli("archive", "restore", "--table", "events", "--day", day.isoformat())
    assert (
        again.exit_code == 1
        and again.stderr.startswith("error: table events_restored_")
        and "--into" in again.stderr
    )


def test_verify_of_a_damaged_file_fails_and_records_it(cli, orch_dsn, tmp_path):
    day = old_day()
    with connection(orch_dsn) as conn:
        seed_events(conn, day, 10)
    assert cli("retention", "run").exit_code == 0
    path = tmp_path / "home" / "archive" / "events" / f"{day:%Y-%m-%d}.parquet"
    path.write_bytes(path.read_bytes()[:-10])
    result = cli("archive", "verify", "1")
    assert result.exit_code == 1 and "changed" in result.stdout
    with connection(orch_dsn) as conn:
        assert statuses(conn, "events", day) == ["failed"]


def test_status_and_a_day_not_due(cli, orch_dsn):
    status = cli("retention", "status", "--json")
    assert status.exit_code == 0, status.output
    body = json.loads(status.stdout)
    assert body["archive_days"] == 30 and body["tables"]["events"]["layout"] == "native"
    early = cli("retention", "run", "--day", old_day(1).isoformat())
    assert early.exit_code == 1 and "archive window" in early.stderr
