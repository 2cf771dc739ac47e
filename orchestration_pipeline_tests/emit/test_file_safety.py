"""Landing files are the owner's only (0600), and a nearly full disk still receives the drop notice."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from orchestration_pipeline.emit import EventWriter, _spool, emit_one
from orchestration_pipeline_tests.emit._support import of_type, published, read_events


@pytest.fixture
def umask():
    """Set the process umask for one test; the old one is put back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _mode(path: Path | int) -> int:
    info = os.fstat(path) if isinstance(path, int) else os.stat(path)
    return stat.S_IMODE(info.st_mode)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277], ids=lambda m: f"umask-{m:03o}")
def test_spool_and_one_shot_files_are_readable_by_their_owner_only_whatever_the_umask(
    tmp_path, monkeypatch, umask, mask
):
    landing = tmp_path / "landing"
    landing.mkdir()
    tmp_modes = []
    real_write_all = _spool.write_all

    def spying_write_all(fd: int, data: bytes) -> None:  # the *.tmp file, while it is being written
        tmp_modes.append(_mode(fd))
        real_write_all(fd, data)

    monkeypatch.setattr(_spool, "write_all", spying_write_all)
    umask(mask)
    with EventWriter(landing, source="spooled", session_id="s") as w:
        w.metric("n", 1)
        assert w.flush()
        w.decision("a second file")
    one_shot = emit_one(
        landing, "metric", source="oneshot", session_id="s", payload={"name": "n", "value": 2}
    )

    files = published(landing)
    assert len(files) == 3 and one_shot in files
    assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert tmp_modes and set(tmp_modes) == {0o600}
    assert len(read_events(landing)) == 3


def _refusing_large_files(limit: int):
    """A write_all for a directory that takes small files only: a file growing past ``limit``
    bytes fails with ENOSPC, as on a disk with a few KiB free."""
    real_write_all = _spool.write_all

    def write_all(fd: int, data: bytes) -> None:
        if refusing[0] and os.fstat(fd).st_size + len(data) > limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_all(fd, data)

    refusing = [True]
    return write_all, refusing


def test_a_nearly_full_disk_still_receives_the_drop_notice_before_the_events_are_retried(
    tmp_path, monkeypatch, capfd
):
    landing = tmp_path / "landing"
    write_all, refusing = _refusing_large_files(limit=4096)
    monkeypatch.setattr(_spool, "write_all", write_all)
    w = EventWriter(
        landing, source="full-disk", session_id="s", max_buffered_events=1000, retry_interval_s=60
    )
    for i in range(20):
        w.metric("n", i, pad="x" * 100)
    # the first write (20 lines, over the limit) fails before the buffer overflows: on a loaded
    # machine the writer thread might otherwise not have tried one yet, and the notice would
    # rightly blame the burst instead of the disk
    assert w.flush(timeout=1) is False
    for i in range(20, 1500):
        w.metric("n", i, pad="x" * 100)  # ~250 bytes a line: a batch is far over the limit
    assert w.flush(timeout=5) is False  # the events still cannot be written...

    notices = of_type(read_events(landing), "decision")  # ...but the notice could, on its own
    assert notices and not of_type(read_events(landing), "metric")
    assert sum(n["payload"]["dropped_events"] for n in notices) == 500 == w.dropped_total
    assert all(f.stat().st_size < 4096 for f in published(landing))
    last = notices[-1]
    assert (last["stage"], last["severity"], last["source"]) == ("emit", "warning", "full-disk")
    assert last["payload"]["buffer_limit_events"] == 1000
    assert "No space left on device" in last["payload"]["reason"]
    assert (w.pending, w.dropped) == (1000, 0)

    assert w.close(timeout=5) is False  # at close: what is lost is only what the notice cannot say
    err = capfd.readouterr().err
    assert "1000 events could not be written" in err and "0 were dropped" in err

    refusing[0] = False  # space again: the queued events go out, and no drop is reported twice
    assert w.flush(timeout=5) is True
    events = read_events(landing)
    assert [e["payload"]["value"] for e in of_type(events, "metric")] == list(range(500, 1500))
    assert sum(n["payload"]["dropped_events"] for n in of_type(events, "decision")) == 500


def test_when_not_even_the_notice_fits_the_batch_is_not_tried_and_the_drops_stay_counted(
    tmp_path, monkeypatch
):
    landing = tmp_path / "landing"
    write_all, refusing = _refusing_large_files(limit=0)
    attempts = []

    def counting(fd: int, data: bytes) -> None:
        attempts.append(len(data))
        write_all(fd, data)

    monkeypatch.setattr(_spool, "write_all", counting)
    w = EventWriter(landing, source="no-space", session_id="s", max_buffered_events=10, retry_interval_s=60)
    with w._spool._io:  # the writer thread waits: every attempt below sees the drops
        for i in range(15):
            w.metric("n", i)
    assert w.flush(timeout=5) is False
    assert not published(landing) and not list(landing.glob("*.tmp"))
    assert (w.pending, w.dropped) == (10, 5)
    assert attempts and all(size < 1024 for size in attempts)  # only the notice was tried, never the batch

    refusing[0] = False
    assert w.close(timeout=5) is True
    events = read_events(landing)
    assert [e["payload"]["value"] for e in of_type(events, "metric")] == list(range(5, 15))
    (notice,) = of_type(events, "decision")
    assert notice["payload"]["dropped_events"] == 5
    assert notice is events[0]  # published first, in a file of its own


def test_a_burst_that_outruns_the_writer_is_reported_as_such_not_as_a_write_error(tmp_path):
    landing = tmp_path / "landing"
    w = EventWriter(landing, source="burst", session_id="s", max_buffered_events=10)
    with w._spool._io:  # the writer thread is busy: nothing is written while the burst lasts
        for i in range(25):
            w.metric("n", i)
    assert w.close() is True
    events = read_events(landing)
    assert [e["payload"]["value"] for e in of_type(events, "metric")] == list(range(15, 25))
    (notice,) = of_type(events, "decision")
    assert notice["payload"]["dropped_events"] == 15
    assert notice["payload"]["reason"] == "events were emitted faster than they could be written"
    assert "could not be written" not in notice["payload"]["rationale"]
