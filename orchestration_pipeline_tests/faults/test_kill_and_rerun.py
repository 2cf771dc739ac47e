"""SIGKILL an ingesting process mid-file, then rerun: nothing is left behind, nothing is doubled.

The child process really runs ``Ingestor.ingest_paths`` against the test database and reports
every batch it submits. Once it has submitted at least two batches it is frozen (SIGSTOP), we
check from outside that its file transaction is open, and then it is killed with SIGKILL.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import queue
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import INGEST_TABLES, Ingestor
from orchestration_pipeline_tests.conftest import REPO_ROOT, clean_env
from orchestration_pipeline_tests.faults._support import (
    bad_line,
    counts_of,
    line,
    table_counts,
    valid_event,
    wait_for,
)

pytestmark = [pytest.mark.db, pytest.mark.slow]

BATCH_ROWS = 2000
CHILD = r"""
import json, sys, time
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor

dsn, path, batch_rows, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])

def progress(info):
    if info["final"]:
        print("FINAL", flush=True)
    else:
        print("BATCH", info["lines"], flush=True)
        time.sleep(0.05)  # widen the window so the kill lands mid-file

with connection(dsn) as conn:
    print("BACKEND", conn.info.backend_pid, flush=True)
    Ingestor(conn, batch_rows=batch_rows, progress=progress, progress_every_s=0, **extra).ingest_paths([path])
print("DONE", flush=True)
"""


def _write_file(path: Path, n_valid: int, *, bad_every: int | None = None) -> dict:
    """Write ``n_valid`` distinct valid events, with a bad line after every ``bad_every`` of them."""
    now = datetime.now(UTC)
    ids: set[uuid.UUID] = set()
    bad_lines: dict[int, str] = {}  # 1-based line number -> failure type
    number = 0
    with open(path, "wb") as handle:
        for i in range(n_valid):
            event = valid_event(i, now)
            ids.add(uuid.UUID(event["event_id"]))
            handle.write(line(event) + b"\n")
            number += 1
            if bad_every and i % bad_every == bad_every - 1:
                raw, failure = bad_line(i // bad_every, now)
                handle.write(raw + b"\n")
                number += 1
                bad_lines[number] = failure
    assert len(ids) == n_valid
    return {"ids": ids, "bad_lines": bad_lines, "lines": number}


def _start_child(argv: list[str], stderr_path: Path) -> tuple[subprocess.Popen, queue.Queue[str | None]]:
    """Start a child Python process; its stdout lines arrive on the queue, then None at EOF."""
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO_ROOT, env=clean_env()
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for text in proc.stdout:
            lines.put(text.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def _kill_mid_file(
    dsn: str, path: Path, tmp_path: Path, extra: dict | None = None
) -> tuple[list[str], list[int]]:
    """Run the child, SIGKILL it after >= 2 submitted batches; returns what it printed and its children.

    ``extra`` are more ``Ingestor`` keyword arguments. Any process the child started (parse
    workers) must exit once it is killed.
    """
    stderr_path = tmp_path / "child.stderr"
    proc, lines = _start_child(
        [sys.executable, "-c", CHILD, dsn, str(path), str(BATCH_ROWS), json.dumps(extra or {})], stderr_path
    )
    seen: list[str] = []
    helpers: list[int] = []
    try:
        while sum(s.startswith("BATCH ") for s in seen) < 2:
            try:
                item = lines.get(timeout=60)
            except queue.Empty:
                raise AssertionError(f"child printed no batch within 60 s; so far {seen}") from None
            if item is None:
                raise AssertionError(
                    f"child exited (rc={proc.wait()}) before two batches: {seen}\n{stderr_path.read_text()}"
                )
            seen.append(item)
        os.kill(proc.pid, signal.SIGSTOP)  # freeze it: the checks below cannot race its commit
        backend = int(next(s for s in seen if s.startswith("BACKEND ")).split()[1])
        with connection(dsn, autocommit=True) as conn:
            held = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND granted",
                (backend,),
            ).fetchone()[0]
        # the file transaction holds two: on the file's hash and on its path
        assert held == 2, "the child is not inside its file transaction (no advisory locks held)"
        helpers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        returncode = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            helpers = helpers or _children(proc.pid)
            proc.kill()
            proc.wait()
            _kill_leftovers(helpers)  # the test failed early: leave no process behind
    while (item := lines.get(timeout=30)) is not None:
        seen.append(item)
    assert returncode == -signal.SIGKILL, (returncode, stderr_path.read_text())
    assert "FINAL" not in seen and "DONE" not in seen, f"the kill landed after the file committed: {seen}"

    # The server notices the dead client and rolls back; wait for its backend to go away so the
    # counts below are of what is durably there, not of an open transaction.
    def backend_gone() -> bool:
        with connection(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone()
        return row[0] == 0

    wait_for(backend_gone, timeout=30, what=f"backend {backend} of the killed child to exit")
    try:
        wait_for(
            lambda: not any(_alive(pid) for pid in helpers),
            timeout=30,
            what=f"processes started by the killed child ({helpers}) to exit",
        )
    finally:
        _kill_leftovers(helpers)
    return seen, helpers


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _kill_leftovers(pids: list[int]) -> None:
    """SIGKILL those of ``pids`` still running a multiprocessing helper (never reap someone else's)."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing" in cmdline and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _event_ids(dsn: str) -> list[uuid.UUID]:
    with connection(dsn, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT event_id FROM events").fetchall()]


def test_sigkill_mid_file_leaves_nothing_and_rerun_ingests_exactly_once(orch_dsn, tmp_path):
    path = tmp_path / "events.jsonl"
    written = _write_file(path, 60_000)

    printed, _ = _kill_mid_file(orch_dsn, path, tmp_path)
    assert sum(s.startswith("BATCH ") for s in printed) >= 2

    assert table_counts(orch_dsn) == dict.fromkeys(INGEST_TABLES, 0)

    with connection(orch_dsn) as conn:
        first = Ingestor(conn, batch_rows=BATCH_ROWS).ingest_paths([path]).as_dict()
    assert counts_of(first) == {
        "files": 1,
        "skipped_files": 0,
        "lines": 60_000,
        "accepted": 60_000,
        "quarantined": 0,
        "duplicates": 0,
        "collapsed": 0,
    }
    assert first["balanced"] is True and first["quarantine_by_type"] == {}
    ids = _event_ids(orch_dsn)
    assert len(ids) == 60_000 and set(ids) == written["ids"]

    renamed = tmp_path / "renamed-copy.ndjson"
    shutil.copyfile(path, renamed)
    with connection(orch_dsn) as conn:
        again = Ingestor(conn, batch_rows=BATCH_ROWS).ingest_paths([path, renamed]).as_dict()
    assert counts_of(again) == {
        "files": 2,
        "skipped_files": 2,
        "lines": 0,
        "accepted": 0,
        "quarantined": 0,
        "duplicates": 0,
        "collapsed": 0,
    }
    assert again["balanced"] is True

    counts = table_counts(orch_dsn)
    assert counts["events"] == 60_000
    assert counts["ingest_files"] == 1
    assert counts["quarantine"] == 0
    assert counts["ingest_runs"] == 2  # the two in-process runs; the killed one never finished
    with connection(orch_dsn, autocommit=True) as conn:
        ledger = conn.execute("SELECT path, lines, accepted, quarantined FROM ingest_files").fetchall()
    assert ledger == [(str(path.resolve()), 60_000, 60_000, 0)]


@pytest.mark.parametrize("parse", ["in_process", "worker_processes"])
def test_sigkill_mid_file_with_bad_lines_quarantines_each_bad_line_once(orch_dsn, tmp_path, parse):
    extra = {}
    if parse == "worker_processes":
        if "parse_workers" not in inspect.signature(Ingestor).parameters:
            pytest.skip("this Ingestor has no parse worker processes")
        extra = {"parse_workers": 2, "parallel_min_bytes": 0}
    path = tmp_path / "mixed.jsonl"
    written = _write_file(path, 20_000, bad_every=100)
    bad = written["bad_lines"]
    assert len(bad) == 200 and min(bad) < 2 * BATCH_ROWS  # some bad lines fall in the killed batches

    _, helpers = _kill_mid_file(orch_dsn, path, tmp_path, extra)
    if extra:
        assert helpers, "the child started no parse worker: this variant tested nothing new"
    assert table_counts(orch_dsn) == dict.fromkeys(INGEST_TABLES, 0)

    with connection(orch_dsn) as conn:
        first = Ingestor(conn, batch_rows=BATCH_ROWS).ingest_paths([path]).as_dict()
    assert counts_of(first) == {
        "files": 1,
        "skipped_files": 0,
        "lines": written["lines"],
        "accepted": 20_000,
        "quarantined": len(bad),
        "duplicates": 0,
        "collapsed": 0,
    }
    assert first["balanced"] is True
    assert first["quarantine_by_type"] == dict(Counter(bad.values()))

    with connection(orch_dsn) as conn:
        again = Ingestor(conn, batch_rows=BATCH_ROWS).ingest_paths([path]).as_dict()
    assert (again["files"], again["skipped_files"], again["lines"], again["quarantined"]) == (1, 1, 0, 0)

    counts = table_counts(orch_dsn)
    assert (counts["events"], counts["quarantine"], counts["ingest_files"]) == (20_000, len(bad), 1)
    with connection(orch_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT source_line, failure_type, source_file FROM quarantine").fetchall()
    assert {r[0]: r[1] for r in rows} == bad
    assert {r[2] for r in rows} == {str(path.resolve())}


def test_two_processes_racing_on_one_file_ingest_it_once(orch_dsn, tmp_path):
    """Process A holds the file's lock mid-transaction while B waits for it; B then skips the file."""
    path = tmp_path / "raced.jsonl"
    written = _write_file(path, 3000)
    copy = tmp_path / "raced-copy.jsonl"  # B gets a renamed copy: same content, same lock
    shutil.copyfile(path, copy)
    cli = str(Path(sys.executable).parent / "orchestration-pipeline")
    env = clean_env(ORCH_HOME=str(tmp_path / "home"), ORCH_DATABASE_URL=orch_dsn, TASKS_DATABASE_URL=orch_dsn)

    def start(target: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [cli, "ingest", str(target), "--json", "-q", "--batch-rows", "500"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    procs: list[subprocess.Popen] = []
    try:
        with connection(orch_dsn) as blocker, connection(orch_dsn, autocommit=True) as admin:
            blocker.execute("LOCK TABLE events IN SHARE MODE")  # A will stage rows, then wait here

            def waiting(lock_granted: bool) -> list[int]:
                rows = admin.execute(
                    "SELECT DISTINCT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted = %s AND a.wait_event_type = 'Lock' "
                    "AND a.datname = current_database()",
                    (lock_granted,),
                ).fetchall()
                return [r[0] for r in rows]

            procs.append(start(path))
            wait_for(lambda: waiting(True), timeout=60, what="process A to block holding the file lock")
            procs.append(start(copy))
            wait_for(lambda: waiting(False), timeout=60, what="process B to wait for the file lock")
            blocker.rollback()  # let A commit; B then finds the ledger entry
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()

    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outputs]
    first, second = (json.loads(o[0]) for o in outputs)
    assert (first["skipped_files"], first["accepted"], first["duplicates"]) == (0, 3000, 0)
    assert (second["skipped_files"], second["accepted"], second["lines"]) == (1, 0, 0)
    assert table_counts(orch_dsn, ("events", "ingest_files")) == {"events": 3000, "ingest_files": 1}
    assert set(_event_ids(orch_dsn)) == written["ids"]


WORKER_DEATH_CHILD = r"""
import os, signal, sys
from pathlib import Path
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor


def workers():
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat, cmd = (entry / "stat").read_text(), (entry / "cmdline").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and "orchestration_pipeline.lib.ingestion.parse_worker" in cmd:
                found.append(int(entry.name))
    return found


def progress(info):
    if not info["final"] and info["lines"] <= 2000:
        killed = workers()
        for pid in killed:  # what the OOM killer would do to a parse worker
            os.kill(pid, signal.SIGKILL)
        print("KILLED_WORKERS", len(killed), flush=True)


if __name__ == "__main__":
    with connection(sys.argv[1]) as conn:
        Ingestor(
            conn, batch_rows=2000, progress=progress, progress_every_s=0, parse_workers=1, parallel_min_bytes=0
        ).ingest_paths([sys.argv[2]])
    print("DONE", flush=True)
"""


def test_parse_worker_killed_mid_file_fails_the_file_instead_of_hanging(orch_dsn, tmp_path):
    """A parse worker killed mid-file (the OOM killer) must fail the file, not hang while holding its lock."""
    path = tmp_path / "events.jsonl"
    _write_file(path, 10_000)
    script = tmp_path / "worker_death.py"  # an unguarded script file, as users write them
    script.write_text(WORKER_DEATH_CHILD)
    stderr_path = tmp_path / "worker_death.stderr"
    proc, printed = _start_child([sys.executable, str(script), orch_dsn, str(path)], stderr_path)
    try:
        try:
            first = printed.get(timeout=60)
        except queue.Empty:
            first = None
        assert first and first.startswith("KILLED_WORKERS "), (first, stderr_path.read_text()[-3000:])
        assert int(first.split()[1]) >= 1, "no parse worker was running: nothing was tested"
        try:
            returncode = proc.wait(timeout=6)  # failing the file takes well under a second
        except subprocess.TimeoutExpired:
            returncode = None
    finally:
        helpers = _children(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_leftovers(helpers)
    assert returncode is not None, "ingestion still waiting 6 s after its parse worker died"
    assert returncode != 0  # the file failed loudly...
    assert table_counts(orch_dsn, ("events", "ingest_files")) == {"events": 0, "ingest_files": 0}  # ...whole


def test_a_parse_worker_whose_parent_is_gone_exits_quietly():
    """Its parent killed, a worker finds its output pipe closed: it exits without a traceback."""
    from orchestration_pipeline.lib.ingestion.parse_worker import write_frame

    worker = subprocess.Popen(
        [sys.executable, "-m", "orchestration_pipeline.lib.ingestion.parse_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    worker.stdout.close()  # the reading end dies first, as with a SIGKILLed parent
    write_frame(worker.stdin, pickle.dumps(()))  # a job; its result has nowhere to go
    worker.stdin.close()
    assert worker.wait(timeout=60) == 1
    assert worker.stderr.read() == b""
