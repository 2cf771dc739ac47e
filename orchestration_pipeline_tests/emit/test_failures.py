"""When the landing directory cannot be written: never raise, report once, buffer, recover.

The tests run as root, for whom a 0o555 directory is still writable, so unwritability is real
but of another kind: the landing directory's parent is a regular file (every mkdir/open fails
with NotADirectoryError), or the landing path itself is a file.
"""

from __future__ import annotations

import time
from pathlib import Path

from orchestration_pipeline.emit import EventWriter
from orchestration_pipeline.emit._spool import Spool
from orchestration_pipeline_tests.emit._support import assert_pairs_match, of_type, published, read_events

LABEL = "orchestration_pipeline.emit:"


def blocked_landing(tmp_path: Path) -> tuple[Path, Path]:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a directory should be\n")
    return blocker, blocker / "landing"


def unblock(blocker: Path) -> None:
    blocker.unlink()
    blocker.mkdir()


def test_unwritable_landing_dir_never_raises_reports_once_and_delivers_later(tmp_path, capfd):
    blocker, landing = blocked_landing(tmp_path)
    w = EventWriter(landing, source="ro", session_id="s", retry_interval_s=0.05, max_file_age_s=0.1)
    for i in range(50):
        w.metric("n", i)
    with w.task("T-1"):
        with w.command("make"):
            w.decision("keep going while the landing dir is broken")
    assert w.flush(timeout=1) is False  # nothing raised into the caller
    for i in range(50, 100):
        w.metric("n", i)
    time.sleep(0.4)  # the background thread retries (and fails) several times meanwhile
    assert w.flush(timeout=1) is False
    err = capfd.readouterr().err
    assert err.count(LABEL) == 1, err
    assert "Not a directory" in err and str(blocker) in err
    assert w.pending == 105 and not published(landing)

    unblock(blocker)
    assert w.close() is True
    events = read_events(landing)
    assert sorted(e["payload"]["value"] for e in of_type(events, "metric")) == list(range(100))
    assert len(events) == 105  # nothing lost, nothing duplicated, no drop notice
    assert_pairs_match(events)
    assert w.dropped_total == 0
    assert capfd.readouterr().err == ""


def test_landing_dir_that_breaks_mid_run_recovers_without_loss(tmp_path, capsys):
    landing = tmp_path / "landing"
    w = EventWriter(landing, source="mid", session_id="s", retry_interval_s=0.05)
    w.metric("n", 0)
    assert w.flush()
    moved = tmp_path / "landing-before"
    landing.rename(moved)
    landing.write_text("now a file")  # open() of landing/… fails with NotADirectoryError
    for i in range(1, 20):
        w.metric("n", i)
    assert w.flush(timeout=1) is False
    assert capsys.readouterr().err.count(LABEL) == 1
    landing.unlink()
    landing.mkdir()
    assert w.close()
    values = [e["payload"]["value"] for e in read_events(moved) + read_events(landing)]
    assert sorted(values) == list(range(20))
    assert capsys.readouterr().err == ""


def test_buffer_overflow_drops_the_oldest_and_a_decision_reports_the_count(tmp_path, capfd):
    blocker, landing = blocked_landing(tmp_path)
    w = EventWriter(
        landing, source="overflow", session_id="s", max_buffered_events=100, retry_interval_s=0.05
    )
    for i in range(250):
        w.metric("n", i)
    assert w.flush(timeout=1) is False
    assert (w.pending, w.dropped, w.dropped_total) == (100, 150, 150)
    unblock(blocker)
    assert w.close() is True
    assert capfd.readouterr().err.count(LABEL) == 1
    events = read_events(landing)
    assert [e["payload"]["value"] for e in of_type(events, "metric")] == list(range(150, 250))
    (notice,) = of_type(events, "decision")
    assert notice is events[0]  # published first, in a file of its own, before the events are retried
    assert notice["payload"]["dropped_events"] == 150
    assert notice["payload"]["buffer_limit_events"] == 100
    assert "150" in notice["payload"]["rationale"] and "Not a directory" in notice["payload"]["reason"]
    assert (notice["stage"], notice["severity"]) == ("emit", "warning")
    assert (w.dropped, w.dropped_total) == (0, 150)


def test_buffer_limit_in_bytes_also_drops_the_oldest(tmp_path, capfd):
    blocker, landing = blocked_landing(tmp_path)
    w = EventWriter(landing, source="bytes", session_id="s", max_buffer_bytes=20_000, retry_interval_s=0.05)
    for i in range(100):
        w.metric("n", i, pad="x" * 800)  # ~1 KB a line: ~20 fit
    w.flush(timeout=1)
    assert 10 < w.pending < 25 and w.dropped == 100 - w.pending
    kept = w.pending
    unblock(blocker)
    assert w.close()
    values = [e["payload"]["value"] for e in of_type(read_events(landing), "metric")]
    assert values == list(range(100 - kept, 100))
    capfd.readouterr()


def test_close_while_still_unwritable_reports_what_is_lost(tmp_path, capfd):
    _blocker, landing = blocked_landing(tmp_path)
    w = EventWriter(landing, source="lost", session_id="s", max_buffered_events=10)
    for i in range(15):
        w.metric("n", i)
    assert w.close(timeout=1) is False
    err = capfd.readouterr().err
    assert err.count(LABEL) == 2, err  # the failure, once; then the final account at close
    assert "10 events could not be written" in err and "5 were dropped" in err


def test_failed_writes_racing_with_the_writer_thread_keep_the_newest_events_in_order(tmp_path, capfd):
    blocker, landing = blocked_landing(tmp_path)
    w = EventWriter(landing, source="race", session_id="s", max_buffered_events=50, retry_interval_s=0.001)
    for i in range(3000):
        w.metric("n", i)
        if i % 7 == 0:
            w.flush(timeout=1)  # fails, while the thread retries (and fails) on its own
    unblock(blocker)
    assert w.close()
    events = read_events(landing)
    assert [e["payload"]["value"] for e in of_type(events, "metric")] == list(range(2950, 3000))
    assert w.dropped_total == 2950
    assert sum(e["payload"]["dropped_events"] for e in of_type(events, "decision")) == 2950
    capfd.readouterr()


def test_a_flush_waits_for_the_batch_being_written_so_batches_stay_in_order(tmp_path):
    spool = Spool(tmp_path / "landing", prefix="order")
    spool.put(b'{"n":1}\n')
    with spool._io:  # as while the writer thread is in the middle of a (slow) write
        assert spool.flush(timeout=0.2) is False  # waited, then gave up: it did not write alongside
        assert not published(tmp_path / "landing") and spool.pending == 1
    assert spool.flush() and spool.close()
    assert [p.read_bytes() for p in published(tmp_path / "landing")] == [b'{"n":1}\n']
