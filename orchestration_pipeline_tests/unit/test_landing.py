"""scan_landing: effective change time of renamed directories and symlinks; cursor validation."""

import os
import time

import pytest

from orchestration_pipeline.lib.ingestion.landing import UnreadableCursor, load_cursor, scan_landing

TICK = 0.02


def _write(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}\n")
    return path


def test_renamed_directory_and_symlinks_are_new_and_seen_once(tmp_path):
    landing = tmp_path / "landing"
    _write(landing / ".in" / "deep" / "b.jsonl")
    outside = _write(tmp_path / "out" / "c.jsonl")
    time.sleep(TICK)
    _write(landing / "a.jsonl")  # the watermark is now above b and c
    first = scan_landing(landing, None)
    assert first.new_files == [str(landing / "a.jsonl")]
    time.sleep(TICK)
    os.rename(landing / ".in", landing / "in")
    os.symlink(outside, landing / "c.jsonl")
    second = scan_landing(landing, first.cursor)
    assert second.new_files == sorted([str(landing / "in" / "deep" / "b.jsonl"), str(landing / "c.jsonl")])
    assert scan_landing(landing, second.cursor).new_files == []


def test_file_added_to_a_directory_at_the_watermark_is_not_hidden_by_the_directory_entry(tmp_path):
    landing = tmp_path / "landing"
    _write(tmp_path / "staging" / "a.jsonl")
    time.sleep(TICK)
    os.rename(tmp_path / "staging", landing)  # landing itself was moved: its ctime does not count
    _write(landing / "sub" / "b.jsonl")
    first = scan_landing(landing, None)
    assert len(first.new_files) == 2
    # pretend c.jsonl lands at exactly the watermark: it must not count as seen
    _write(landing / "sub" / "c.jsonl")
    cursor = {
        "ctime_ns": max(os.stat(p).st_ctime_ns for p in first.new_files),
        "names": first.cursor["names"],
    }
    assert str(landing / "sub" / "c.jsonl") in scan_landing(landing, cursor).new_files


@pytest.mark.parametrize(
    "text", ["garbage", '{"mtime": 123}', '"abc"', '{"ctime_ns": "x"}', "[]", '{"ctime_ns": true}', "null"]
)
def test_unreadable_cursors_are_refused_with_a_reason(text):
    if text == "null":
        assert load_cursor(text) is None
        return
    with pytest.raises(UnreadableCursor):
        load_cursor(text)


def test_readable_cursors_are_normalized():
    assert load_cursor(None) is None and load_cursor("") is None
    assert load_cursor('{"ctime_ns": 5}') == {"ctime_ns": 5, "names": []}
    assert load_cursor('{"ctime_ns": "7", "names": ["x"]}') == {"ctime_ns": 7, "names": ["x"]}
