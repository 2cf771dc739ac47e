"""Retention under faults: nothing is purged that its archive does not prove, and nothing is lost.

* one corrupted byte in a Parquet file: verification fails, the purge is refused;
* a deleted archive file: the purge is refused;
* a late (or changed) row after archiving: the purge is refused until the day is archived again;
* the process SIGKILLed between archive and purge, or in the middle of an export: the rows are
  all there, and a rerun continues;
* the TimescaleDB path (a real hypertable, the columnstore policy, a chunk dropped after
  verification): skipped where the extension is not installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.retention import manifests
from orchestration_pipeline.lib.retention.archive import export_day
from orchestration_pipeline.lib.retention.catalogue import catalogue
from orchestration_pipeline.lib.retention.partitions import layout
from orchestration_pipeline.lib.retention.restore import read_archive
from orchestration_pipeline.lib.retention.run import run_retention
from orchestration_pipeline.lib.retention.verify import verify
from orchestration_pipeline_tests.conftest import REPO_ROOT, clean_env
from orchestration_pipeline_tests.faults._support import wait_for
from orchestration_pipeline_tests.retention._support import (
    WHO,
    midnight,
    old_day,
    partition_exists,
    policy,
    seed_events,
    statuses,
)

pytestmark = pytest.mark.db


@pytest.fixture
def conn(orch_dsn):
    with connection(orch_dsn) as conn:
        yield conn


def _day_rows(conn, day) -> list[tuple]:
    rows = conn.execute(
        "SELECT * FROM events WHERE occurred_at >= %s AND occurred_at < %s + interval '1 day' ORDER BY event_id",
        (midnight(day), midnight(day)),
    ).fetchall()
    conn.rollback()
    return rows


def _archive_file(tmp_path: Path, day, part: int = 1) -> Path:
    suffix = "" if part == 1 else f".{part}"
    return tmp_path / "archive" / "events" / f"{day:%Y-%m-%d}{suffix}.parquet"


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_one_corrupted_byte_fails_verification_and_the_purge(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 300)
    part = catalogue(conn, "events").days[day]
    conn.rollback()
    exported = export_day(conn, part, "native", str(tmp_path / "archive"))
    _flip_one_byte(_archive_file(tmp_path, day))
    result = verify(conn, exported.manifest.manifest_id)
    assert not result.ok and "changed" in result.reason
    assert statuses(conn, "events", day) == ["failed"]
    # a run with the purge on does not purge the day on that archive: it archives the day afresh
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    [entry] = [d for d in report.days if d.table == "events"]
    assert entry.outcome == "purged" and entry.manifest_id != exported.manifest.manifest_id
    assert statuses(conn, "events", day) == ["failed", "purged"]


def test_a_corrupted_verified_archive_is_never_purged(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 100)
    before = _day_rows(conn, day)
    run_retention(conn, policy(tmp_path), WHO)  # archived and verified, purge off
    _flip_one_byte(_archive_file(tmp_path, day))
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    [entry] = [d for d in report.days if d.table == "events"]
    assert entry.outcome == "failed" and "no longer matches" in entry.error
    assert partition_exists(conn, f"events_p{day:%Y%m%d}") and _day_rows(conn, day) == before
    assert statuses(conn, "events", day) == ["failed"]  # the next run archives the day again


def test_a_deleted_archive_file_refuses_the_purge(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 50)
    before = _day_rows(conn, day)
    run_retention(conn, policy(tmp_path), WHO)
    _archive_file(tmp_path, day).unlink()
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    [entry] = [d for d in report.days if d.table == "events"]
    assert entry.outcome == "failed" and "missing" in entry.error
    assert _day_rows(conn, day) == before
    assert conn.execute("SELECT count(*) FROM audit_ledger WHERE operation = 'purge'").fetchone()[0] == 0


def test_a_late_row_is_archived_before_any_purge(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 60)
    run_retention(conn, policy(tmp_path), WHO)
    seed_events(conn, day, 1)  # arrives after the archive
    after = _day_rows(conn, day)
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    [entry] = [d for d in report.days if d.table == "events"]
    assert any(step.startswith("purge refused") and "61 rows" in step for step in entry.steps)
    assert entry.outcome == "purged" and entry.rows == 61
    assert statuses(conn, "events", day) == ["superseded", "purged"]
    archived = read_archive(conn, "events", day)
    assert sorted(str(u) for u in archived["event_id"]) == sorted(str(r[0]) for r in after)


def test_a_changed_row_with_the_same_count_is_caught_by_the_hash(conn, tmp_path):
    """An error event's count grows in place (the one update events allow): same row count, new content."""
    day = old_day()
    seed_events(conn, day, 20)
    conn.execute(
        """INSERT INTO events (event_id, event_type, occurred_at, stage, payload)
           VALUES (gen_random_uuid(), 'error', %s, 'db', '{"message": "boom", "count": 1}')""",
        (midnight(day),),
    )
    conn.commit()
    run_retention(conn, policy(tmp_path), WHO)
    conn.execute("UPDATE events SET payload = jsonb_set(payload, '{count}', '5') WHERE event_type = 'error'")
    conn.commit()
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    [entry] = [d for d in report.days if d.table == "events"]
    assert any("rows arrived or changed" in step for step in entry.steps)
    assert statuses(conn, "events", day) == ["superseded", "purged"]
    archived = read_archive(conn, "events", day)
    assert '"count": 5' in archived.loc[archived["event_type"] == "error", "payload"].iloc[0]


CHILD = r"""
import sys, time
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.retention import archive, purge
from orchestration_pipeline.lib.retention.run import Identity, RetentionPolicy, run_retention

dsn, root, where = sys.argv[1], sys.argv[2], sys.argv[3]

def stop_here(*args, **kwargs):
    print("STOPPED", flush=True)
    time.sleep(600)  # killed here

if where == "before_purge":
    purge.purge_day = stop_here
else:  # in the middle of the export, after its first block reached the temporary file
    archive.BLOCK_BYTES = 2_000
    write_block = archive._write_block
    written = []
    def slow_block(*args):
        rows = write_block(*args)
        written.append(rows)
        if len(written) == 2:
            stop_here()
        return rows
    archive._write_block = slow_block

with connection(dsn) as conn:
    run_retention(conn, RetentionPolicy(archive_root=root, purge=True), Identity("test:kill", "req-kill"))
print("DONE", flush=True)
"""


def _run_until_stopped_then_kill(orch_dsn: str, root: Path, where: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, orch_dsn, str(root), where],
        cwd=REPO_ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = wait_for(child.stdout.readline, timeout=120, what="the child to reach the kill point")
        assert line.strip() == "STOPPED", line + child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.slow
def test_killed_between_archive_and_purge_loses_nothing_and_a_rerun_continues(conn, orch_dsn, tmp_path):
    day = old_day()
    seed_events(conn, day, 400)
    before = _day_rows(conn, day)
    _run_until_stopped_then_kill(orch_dsn, tmp_path / "archive", "before_purge")
    assert _day_rows(conn, day) == before
    assert statuses(conn, "events", day) == ["verified"]
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    [entry] = [d for d in report.days if d.table == "events"]
    assert entry.outcome == "purged" and entry.steps == [f"purged events_p{day:%Y%m%d} (400 rows)"]
    archived = read_archive(conn, "events", day)
    assert sorted(str(u) for u in archived["event_id"]) == sorted(str(r[0]) for r in before)


@pytest.mark.slow
def test_killed_in_the_middle_of_an_export_leaves_no_manifest_and_a_rerun_exports_again(
    conn, orch_dsn, tmp_path
):
    day = old_day()
    seed_events(conn, day, 400)
    before = _day_rows(conn, day)
    _run_until_stopped_then_kill(orch_dsn, tmp_path / "archive", "mid_export")
    folder = tmp_path / "archive" / "events"
    leftovers = [p.name for p in folder.iterdir()]
    assert len(leftovers) == 1 and ".tmp-" in leftovers[0]  # a temporary file, never the archive's name
    assert statuses(conn, "events", day) == [] and _day_rows(conn, day) == before
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    assert [d.outcome for d in report.days if d.table == "events"] == ["purged"]
    assert [p.name for p in folder.iterdir()] == [f"{day:%Y-%m-%d}.parquet"]  # the leftover is gone
    assert len(read_archive(conn, "events", day)) == 400


# --- TimescaleDB ------------------------------------------------------------------------------


@pytest.fixture
def hypertables(conn):
    """The migrated database with events and metrics as hypertables; skipped without TimescaleDB."""
    available = conn.execute(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()[0]
    preload = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()[0]
    conn.rollback()
    if not available or "timescaledb" not in preload:
        pytest.skip(
            "TimescaleDB is not installed on this server: the hypertable path (columnstore policy, chunk dropped "
            "after verification) runs only where the extension is available and preloaded"
        )
    if layout(conn, "events") != "timescaledb":
        pytest.skip(
            "TimescaleDB is installed but events is not a hypertable in this database (migrated without it)"
        )
    return conn


def test_timescaledb_chunk_is_archived_compressed_and_dropped_after_verification(hypertables, tmp_path):
    from orchestration_pipeline.lib.retention import timescale

    conn = hypertables
    day = old_day()
    seed_events(conn, day, 200, partition=False)  # the insert creates the day's chunk
    with manifests.autocommit(conn), conn.transaction():
        used = timescale.ensure_columnstore_policy(conn, "events", 7)
    assert used in ("add_columnstore_policy", "add_compression_policy")
    chunk = catalogue(conn, "events").days[day]
    conn.execute("SELECT compress_chunk(%s::regclass)", (chunk.name,))  # warm: in the columnstore
    conn.commit()
    before = _day_rows(conn, day)
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    [entry] = [d for d in report.days if d.table == "events"]
    assert entry.outcome == "purged" and entry.rows == 200
    assert day not in catalogue(conn, "events").days
    assert timescale.retention_policies(conn, "events") == []
    archived = read_archive(conn, "events", day)
    assert sorted(str(u) for u in archived["event_id"]) == sorted(str(r[0]) for r in before)


def test_timescaledb_late_row_refuses_the_chunk_drop(hypertables, tmp_path):
    conn = hypertables
    day = old_day()
    seed_events(conn, day, 30, partition=False)
    run_retention(conn, policy(tmp_path), WHO)
    seed_events(conn, day, 1, partition=False)
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    assert statuses(conn, "events", day) == ["superseded", "purged"]
    assert [d.rows for d in report.days if d.table == "events"] == [31]
