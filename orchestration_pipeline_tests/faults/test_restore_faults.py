"""Restore drills under faults: a damaged dump fails closed and restores nothing; a row altered in
the copy is named; a target that is not the drill's scratch database is refused; a drill killed
halfway leaves a scratch database that the next drill removes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from psycopg.conninfo import conninfo_to_dict

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.restore.backup import create_backup
from orchestration_pipeline.lib.restore.drill import run_drill
from orchestration_pipeline.lib.restore.errors import NotScratch
from orchestration_pipeline.lib.restore.scratch import drop_scratch, restore_into, scratch_name
from orchestration_pipeline.lib.restore.tools import find_tools
from orchestration_pipeline_tests.conftest import REPO_ROOT
from orchestration_pipeline_tests.restore._support import (
    options,
    scratch_janitor,  # noqa: F401 - autouse fixture
    seed,
    tool_origin,
)

pytestmark = pytest.mark.db


@pytest.fixture
def backup(orch_dsn, tasks_dsn, tmp_path, server_mode):
    seed(orch_dsn, tasks_dsn, tmp_path, sessions=2)
    tools = find_tools(tool_origin(server_mode))
    return create_backup(orch_dsn, tmp_path / "backups", tools, created_by="fault-test")


def _drills(dsn: str) -> list[tuple]:
    with connection(dsn) as conn:
        return conn.execute(
            "SELECT state, scratch_db, passed, backup_id FROM restore_drills ORDER BY started_at"
        ).fetchall()


def _databases(admin_dsn: str, prefix: str = "orch_drill_") -> set[str]:
    with connection(admin_dsn) as conn:
        return {
            r[0]
            for r in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
        }


@pytest.mark.parametrize("damage", ["truncated", "one_byte_changed"])
def test_a_damaged_dump_fails_closed_and_restores_nothing(
    damage, backup, orch_dsn, tasks_dsn, tmp_path, server_mode, pg_admin_dsn
):
    data = bytearray(backup.dump_path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    backup.dump_path.write_bytes(bytes(data))
    before = _databases(pg_admin_dsn)
    result = run_drill(options(orch_dsn, tasks_dsn, tmp_path, server_mode, from_backup=backup.backup_id))
    assert result.state == "failed" and result.exit_code == 1
    assert [c.name for c in result.checks] == ["dump_checksum"] and not result.checks[0].passed
    detail = result.checks[0].detail
    assert (
        "is truncated" if damage == "truncated" else "differs"
    ) in detail and "nothing was restored" in detail
    assert result.scratch_db is None and "restore" not in result.phases and result.rto_s is None
    assert _databases(pg_admin_dsn) == before  # no scratch database was ever created
    assert _drills(orch_dsn) == [("failed", None, False, backup.backup_id)]
    assert (
        result.summary().startswith(f"drill FAILED (backup {backup.backup_id}")
        and "dump_checksum" in result.summary()
    )


def test_a_dump_that_matches_its_manifest_but_does_not_restore_fails_the_drill(
    backup, orch_dsn, tasks_dsn, tmp_path, server_mode
):
    import json

    from orchestration_pipeline.lib.restore.backup import file_digest

    backup.dump_path.write_bytes(b"PGDMP" + os.urandom(4096))  # a damaged file its manifest agrees with
    sha, size = file_digest(backup.dump_path)
    manifest = json.loads(backup.manifest_path.read_text())
    manifest["dump"].update(sha256=sha, bytes=size)
    backup.manifest_path.write_text(json.dumps(manifest))
    result = run_drill(options(orch_dsn, tasks_dsn, tmp_path, server_mode, from_backup=str(backup.dump_path)))
    checks = {c.name: c for c in result.checks}
    assert result.state == "failed" and checks["dump_checksum"].passed
    assert not checks["restore"].passed and "pg_restore failed" in checks["restore"].detail
    assert _drills(orch_dsn)[0][:2] == ("failed", result.scratch_db)
    with connection(orch_dsn) as conn:
        dropped = conn.execute("SELECT scratch_dropped_at IS NOT NULL FROM restore_drills").fetchone()[0]
    assert dropped  # the half-restored scratch database went with the drill


def test_a_row_altered_in_the_restored_copy_fails_the_hash_check_naming_the_table(
    backup, orch_dsn, tasks_dsn, tmp_path, server_mode
):
    def alter(scratch_dsn: str) -> None:
        with connection(scratch_dsn) as copy:
            copy.execute("SET session_replication_role = replica")  # past the guard trigger
            copy.execute(
                "UPDATE events SET payload = payload || '{\"tampered\": true}' "
                "WHERE event_id = (SELECT event_id FROM events ORDER BY event_id LIMIT 1)"
            )
            copy.commit()

    result = run_drill(
        options(orch_dsn, tasks_dsn, tmp_path, server_mode, from_backup=backup.backup_id, before_verify=alter)
    )
    checks = {c.name: c for c in result.checks}
    assert result.state == "failed" and result.exit_code == 1
    assert checks["row_counts"].passed
    assert not checks["content_hashes"].passed and checks["content_hashes"].detail.endswith("1 table: events")
    assert "content_hashes: content differs from the manifest in 1 table: events" in result.summary()


def test_a_target_that_is_not_the_drills_scratch_database_is_refused(
    backup, orch_dsn, tasks_dsn, tmp_path, server_mode, databases
):
    tools = find_tools(tool_origin(server_mode))
    drill_id = uuid.uuid4()
    source = conninfo_to_dict(orch_dsn)["dbname"]
    other = conninfo_to_dict(tasks_dsn)["dbname"]
    with connection(orch_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO restore_drills (drill_id, created_by, host, pid) VALUES (%s, 'test', 'h', 1)",
            (drill_id,),
        )
        for target, words in ((source, "it is the source database"), (other, "no drill of")):
            with pytest.raises(NotScratch, match=words):
                restore_into(tools, conn, orch_dsn, target, drill_id, str(backup.dump_path))
            with pytest.raises(NotScratch, match=words):
                drop_scratch(conn, target, drill_id)
        # the right name, recorded for this drill, but a database the drill did not create and mark
        impostor = scratch_name(drill_id)
        conn.execute("UPDATE restore_drills SET scratch_db = %s WHERE drill_id = %s", (impostor, drill_id))
        conn.execute(f'CREATE DATABASE "{impostor}"')
        conn.execute(f"COMMENT ON DATABASE \"{impostor}\" IS 'the reporting team''s sandbox'")
        try:
            with pytest.raises(NotScratch, match="not marked as drill"):
                restore_into(tools, conn, orch_dsn, impostor, drill_id, str(backup.dump_path))
            with pytest.raises(NotScratch, match="not marked as drill"):
                drop_scratch(conn, impostor, drill_id)
        finally:
            conn.execute(f'DROP DATABASE "{impostor}" WITH (FORCE)')
    with connection(orch_dsn) as conn:  # the source was never touched: still its own events
        assert (
            conn.execute("SELECT count(*) FROM restore_drills WHERE drill_id <> %s", (drill_id,)).fetchone()[
                0
            ]
            == 0
        )
    with connection(tasks_dsn) as conn:
        assert conn.execute("SELECT to_regclass('events') IS NULL").fetchone()[0]


def _wait_until_released(dsn: str, scratch_db: str, timeout_s: float = 30.0) -> None:
    """Until the advisory lock of the drill that made ``scratch_db`` is free."""
    from orchestration_pipeline.lib.restore.scratch import lease_key

    deadline = time.monotonic() + timeout_s
    with connection(dsn, autocommit=True) as conn:
        drill_id = conn.execute(
            "SELECT drill_id FROM restore_drills WHERE scratch_db = %s", (scratch_db,)
        ).fetchone()[0]
        key = lease_key(drill_id)
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the killed drill's session never ended"
            time.sleep(0.05)
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


@pytest.mark.slow
def test_a_drill_killed_halfway_leaves_a_scratch_database_the_next_drill_removes(
    backup, orch_dsn, tasks_dsn, tmp_path, server_mode, pg_admin_dsn
):
    worker = subprocess.Popen(
        [sys.executable, "-m", "orchestration_pipeline_tests.restore._drill_worker", orch_dsn, tasks_dsn,
         str(tmp_path / "backups"), tool_origin(server_mode)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = worker.stdout.readline()
        assert line.startswith("RESTORED "), line + worker.stderr.read()
        left = line.split()[1]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert left in _databases(pg_admin_dsn)
    running = [d for d in _drills(orch_dsn) if d[0] == "running"]
    assert [d[1] for d in running] == [left]
    _wait_until_released(orch_dsn, left)  # the server ends the killed drill's sessions as it notices

    result = run_drill(options(orch_dsn, tasks_dsn, tmp_path, server_mode, from_backup=backup.backup_id))
    assert result.state == "passed"
    assert [r["scratch_db"] for r in result.leftovers_removed] == [left]
    assert left not in _databases(pg_admin_dsn)
    with connection(orch_dsn) as conn:
        state, error, dropped = conn.execute(
            "SELECT state, error, scratch_dropped_at IS NOT NULL FROM restore_drills WHERE scratch_db = %s",
            (left,),
        ).fetchone()
    assert state == "abandoned" and "killed" in error and dropped


def test_a_live_drills_scratch_database_is_left_alone(backup, orch_dsn, tasks_dsn, tmp_path, server_mode):
    """Cleaning leftovers takes the drill's lock first: a drill that is still running keeps its database."""
    from orchestration_pipeline.lib.restore.scratch import DrillLease, clean_leftovers, create_scratch

    drill_id = uuid.uuid4()
    with connection(orch_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO restore_drills (drill_id, created_by, host, pid) VALUES (%s, 'test', 'h', 1)",
            (drill_id,),
        )
        with DrillLease(orch_dsn, drill_id):
            name = create_scratch(conn, drill_id)
            assert clean_leftovers(conn) == []
        removed = clean_leftovers(conn)  # the lease ended: the drill is gone
    assert [r["scratch_db"] for r in removed] == [name] and removed[0]["existed"]
