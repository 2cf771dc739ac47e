"""A database that is down, unmigrated, half migrated, or lost mid-file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestration_pipeline.errors import SchemaNotReady
from orchestration_pipeline.lib.db import connection, migrate
from orchestration_pipeline.lib.ingestion.ingest import INGEST_TABLES, Ingestor
from orchestration_pipeline.lib.project_files import sql_dir
from orchestration_pipeline_tests.conftest import clean_env
from orchestration_pipeline_tests.faults._support import counts_of, line, table_counts, valid_event, wait_for

pytestmark = [pytest.mark.db, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "orchestration-pipeline")
DOWN_ORCH = "postgresql://postgres@127.0.0.1:1/orchestration"
DOWN_TASKS = "postgresql://postgres@127.0.0.1:1/tasks"


def _events_file(path: Path, n: int) -> Path:
    now = datetime.now(UTC)
    path.write_bytes(b"".join(line(valid_event(i, now)) + b"\n" for i in range(n)))
    return path


def _cli(*args: str, env: dict[str, str], timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "orch_url, shown",
    [
        (DOWN_ORCH, DOWN_ORCH),
        # a password in the URL is never echoed
        (
            "postgresql://postgres:s3cr3t-pw@127.0.0.1:1/orchestration",
            "postgresql://postgres:***@127.0.0.1:1/",
        ),
    ],
    ids=["no_password", "password_redacted"],
)
def test_ingest_with_server_down_is_one_line_naming_the_fix(tmp_path, orch_url, shown):
    path = _events_file(tmp_path / "events.jsonl", 10)
    env = clean_env(
        ORCH_HOME=str(tmp_path / "home"), ORCH_DATABASE_URL=orch_url, TASKS_DATABASE_URL=DOWN_TASKS
    )

    result = _cli("ingest", str(path), "--json", env=env)

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot connect to {shown}"), lines[0]
    assert "start the server" in lines[0] and "fix the URL" in lines[0]
    assert "Traceback" not in result.stderr and "s3cr3t-pw" not in result.stderr
    assert not (tmp_path / "home" / "pg").exists()  # no embedded server was started instead


def test_quarantine_list_with_server_down_is_one_line(tmp_path):
    env = clean_env(ORCH_HOME=str(tmp_path), ORCH_DATABASE_URL=DOWN_ORCH, TASKS_DATABASE_URL=DOWN_TASKS)

    result = _cli("quarantine", "list", env=env)

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot connect to {DOWN_ORCH}")
    assert "Traceback" not in result.stderr


def _relations(dsn: str) -> list[str]:
    with connection(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
            "AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%' ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


def test_unmigrated_database_raises_one_schema_not_ready_and_writes_nothing(databases, tmp_path):
    dsn = databases.create()
    path = _events_file(tmp_path / "events.jsonl", 1000)
    assert _relations(dsn) == []
    progress: list[dict] = []

    raised: list[SchemaNotReady] = []
    with connection(dsn) as conn:
        ingestor = Ingestor(conn, progress=progress.append, progress_every_s=0)
        try:
            ingestor.ingest_paths([path])
        except SchemaNotReady as exc:
            raised.append(exc)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is still usable

    assert len(raised) == 1
    message = str(raised[0])
    assert "\n" not in message
    assert "orchestration-pipeline db migrate" in message
    assert raised[0].missing == sorted(INGEST_TABLES)
    assert progress == []  # not a single line was read
    assert _relations(dsn) == []  # nothing created, nothing written


def test_half_migrated_database_stops_before_any_row_and_recovers_after_migrate(databases, tmp_path):
    """Only 0001 (events, artifacts, metrics) applied: the ingest tables are missing."""
    dsn = databases.create()
    root = tmp_path / "sql"
    (root / "orchestration").mkdir(parents=True)
    shutil.copy(sql_dir() / "schema_migrations.sql", root / "schema_migrations.sql")
    shutil.copy(sql_dir() / "orchestration" / "0001_core.sql", root / "orchestration" / "0001_core.sql")
    with connection(dsn) as conn:
        migrate(conn, "orchestration", root=root)
    path = _events_file(tmp_path / "events.jsonl", 500)

    with connection(dsn) as conn:
        ingestor = Ingestor(conn)
        for _ in range(3):  # retries fail the same way and do not flood the event log
            with pytest.raises(SchemaNotReady, match="db migrate") as info:
                ingestor.ingest_paths([path])
        assert "ingest_files" in info.value.missing and "events" not in info.value.missing
        rows = conn.execute("SELECT event_type, stage, payload->'missing_tables' FROM events").fetchall()
        conn.rollback()
    assert rows == [("decision", "schema_gate", sorted(info.value.missing))]

    with connection(dsn) as conn:
        migrate(conn, "orchestration")
        summary = Ingestor(conn).ingest_paths([path]).as_dict()
    assert (summary["lines"], summary["accepted"], summary["balanced"]) == (500, 500, True)
    assert table_counts(dsn, ("events", "ingest_files")) == {"events": 501, "ingest_files": 1}


def test_connection_lost_mid_file_is_one_line_and_the_rerun_is_exactly_once(orch_dsn, tmp_path):
    """The CLI's backend is terminated while it is inside the file's transaction."""
    path = _events_file(tmp_path / "events.jsonl", 5000)
    env = clean_env(ORCH_HOME=str(tmp_path / "home"), ORCH_DATABASE_URL=orch_dsn, TASKS_DATABASE_URL=orch_dsn)

    with connection(orch_dsn) as blocker:
        # Hold a lock that conflicts with INSERT into events: the CLI stages its first batch, then
        # waits on the lock, inside its file transaction, for as long as we like.
        blocker.execute("LOCK TABLE events IN SHARE MODE")
        proc = subprocess.Popen(
            [CLI, "ingest", str(path), "--json", "--batch-rows", "1000", "-q"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with connection(orch_dsn, autocommit=True) as admin:

                def waiting_backend() -> int | None:
                    row = admin.execute(
                        "SELECT a.pid FROM pg_stat_activity a "
                        "JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted "
                        "WHERE a.wait_event_type = 'Lock' AND a.datname = current_database() "
                        "AND a.pid <> pg_backend_pid()"
                    ).fetchone()
                    return row[0] if row else None

                backend = wait_for(
                    waiting_backend, timeout=60, what="the CLI to block inside its file transaction"
                )
                terminated = admin.execute("SELECT pg_terminate_backend(%s)", (backend,)).fetchone()[0]
                assert terminated is True
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        blocker.rollback()

    assert proc.returncode == 1, (stdout, stderr)
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: database unavailable:"), stderr
    assert "was rolled back" in lines[0] and "running the same command again is safe" in lines[0]
    assert "Traceback" not in stderr
    assert table_counts(orch_dsn) == dict.fromkeys(INGEST_TABLES, 0)

    rerun = _cli("ingest", str(path), "--json", "-q", env=env)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert counts_of(summary) == {
        "files": 1,
        "skipped_files": 0,
        "lines": 5000,
        "accepted": 5000,
        "quarantined": 0,
        "duplicates": 0,
        "collapsed": 0,
    }
    assert table_counts(orch_dsn, ("events", "ingest_files")) == {"events": 5000, "ingest_files": 1}


@pytest.mark.db
def test_a_missing_database_or_a_wrong_role_names_that_fix_not_starting_a_server(pg_admin_dsn):
    from psycopg.conninfo import make_conninfo

    from orchestration_pipeline.errors import DatabaseUnavailable
    from orchestration_pipeline.lib.db import connect

    with pytest.raises(DatabaseUnavailable) as missing:
        connect(make_conninfo(pg_admin_dsn, dbname="no_such_database_zz"))
    assert "create the database" in str(missing.value) and "start the server" not in str(missing.value)

    with pytest.raises(DatabaseUnavailable) as role:
        connect(make_conninfo(pg_admin_dsn, user="no_such_role_zz"))
    assert "check the user name" in str(role.value) and "start the server" not in str(role.value)
