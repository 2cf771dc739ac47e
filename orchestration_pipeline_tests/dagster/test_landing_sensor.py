"""landing_zone_sensor: directories moved in, symlinks, and unreadable cursors (no database needed)."""

import json
import logging
import os
import time

import dagster as dg
import pytest

from orchestration_pipeline.defs.ingestion.sensors import landing_zone_sensor
from orchestration_pipeline.defs.resources import PipelineHome
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

TICK = 0.02  # longer than the kernel's coarse ctime granularity


@pytest.fixture
def landing(tmp_path):
    path = tmp_path / "landing"
    path.mkdir()
    return path


@pytest.fixture
def tick(tmp_path):
    home = PipelineHome(orch_home=str(tmp_path))

    def run(cursor, log_handler=None):
        with dg.build_sensor_context(cursor=cursor, resources={"pipeline_home": home}) as ctx:
            if log_handler is not None:  # context.log is a standalone logger: it does not propagate
                ctx.log.addHandler(log_handler)
            return landing_zone_sensor(ctx)

    return run


def _files(result) -> int:
    assert isinstance(result, dg.SensorResult), result
    return int(result.run_requests[0].tags["landing_files"])


def test_hidden_directory_renamed_into_place_is_picked_up(landing, tick):
    write_jsonl(landing / ".batch-1" / "part-0.jsonl", [make_event()])
    write_jsonl(landing / ".batch-1" / "nested" / "part-1.jsonl", [make_event()])
    time.sleep(TICK)
    write_jsonl(landing / "a.jsonl", [make_event()])  # the watermark is now above the batch files
    first = tick(None)
    assert _files(first) == 1  # the hidden batch is still being written
    assert isinstance(tick(first.cursor), dg.SkipReason)
    time.sleep(TICK)
    os.rename(landing / ".batch-1", landing / "batch-1")  # the files' own ctime does not move
    second = tick(first.cursor)
    assert _files(second) == 2
    assert json.loads(second.cursor)["names"] == [str(landing / "batch-1")]  # one entry, not one per file
    assert isinstance(tick(second.cursor), dg.SkipReason)


def test_directory_moved_in_from_outside_is_picked_up(tmp_path, landing, tick):
    write_jsonl(tmp_path / "staging" / "part-0.jsonl", [make_event()])
    write_jsonl(tmp_path / "staging" / "part-1.ndjson", [make_event()])
    time.sleep(TICK)
    write_jsonl(landing / "a.jsonl", [make_event()])
    first = tick(None)
    assert _files(first) == 1
    time.sleep(TICK)
    os.rename(tmp_path / "staging", landing / "batch-2")
    second = tick(first.cursor)
    assert _files(second) == 2
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    assert isinstance(tick(second.cursor), dg.SkipReason)


def test_symlinked_file_is_picked_up(tmp_path, landing, tick):
    target = write_jsonl(tmp_path / "elsewhere" / "x.jsonl", [make_event()])
    time.sleep(TICK)
    write_jsonl(landing / "a.jsonl", [make_event()])
    first = tick(None)
    time.sleep(TICK)
    os.symlink(target, landing / "x.jsonl")  # stat() reports the (older) target's ctime
    second = tick(first.cursor)
    assert _files(second) == 1
    assert json.loads(second.cursor)["names"] == [str(landing / "x.jsonl")]
    assert isinstance(tick(second.cursor), dg.SkipReason)


BAD_CURSORS = {
    "garbage": "not JSON",
    '{"mtime": 123}': "no 'ctime_ns'",
    '"abc"': "expected a JSON object",
    '{"ctime_ns": "x"}': "'ctime_ns' is not an integer",
    '{"ctime_ns": 5, "names": "a.jsonl"}': "'names' is not a list",
}


@pytest.mark.parametrize("bad", list(BAD_CURSORS))
def test_unreadable_cursor_is_reset_with_a_warning(bad, landing, tick, caplog):
    write_jsonl(landing / "a.jsonl", [make_event()])
    result = tick(bad, log_handler=caplog.handler)
    assert _files(result) == 1  # a full rescan; ingestion deduplicates what was seen before
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cursor reset" in m and BAD_CURSORS[bad] in m for m in warnings), warnings
    assert isinstance(tick(result.cursor), dg.SkipReason)


def test_unreadable_cursor_on_an_empty_landing_dir_is_replaced(landing, tick):
    result = tick("garbage")
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    assert result.skip_reason is not None
    assert json.loads(result.cursor) == {"ctime_ns": -1, "names": []}
    assert isinstance(tick(result.cursor), dg.SkipReason)  # no warning on every later tick


def test_cursor_written_by_the_previous_version_still_works(landing, tick):
    write_jsonl(landing / "a.jsonl", [make_event()])
    old = json.dumps(
        {"ctime_ns": (landing / "a.jsonl").stat().st_ctime_ns, "names": [str(landing / "a.jsonl")]}
    )
    assert isinstance(tick(old), dg.SkipReason)
