"""Repeated JSON keys are found, named by their pointer, and ordinary lines pay only a count."""

import json
from datetime import UTC, datetime

import pytest

from orchestration_pipeline.lib.ingestion.duplicate_keys import (
    decoded_keys,
    key_tokens,
    may_repeat_a_key,
    repeated_key_pointer,
)


@pytest.mark.parametrize(
    ("line", "pointer"),
    [
        ('{"event_type": "decision", "x": 1, "event_type": "task_start"}', "/event_type"),
        ('{"event_id": "a", "event_id": "b"}', "/event_id"),
        ('{"payload": {"rationale": "r", "rationale": "s"}}', "/payload/rationale"),
        ('{"payload": {"items": [{"k": 1}, {"k": 2, "k": 3}]}}', "/payload/items/1/k"),
        ('{"a" :1, "a"\t: 2}', "/a"),  # blanks before the colon
        ('{"ab": 1, "a\\u0062": 2}', "/ab"),  # the same key, once escaped
        ('{"p": {"a/b~c": 1, "a/b~c": 2}}', "/p/a~1b~0c"),
    ],
)
def test_a_repeated_key_is_found_and_named(line, pointer):
    raw = line.encode()
    assert may_repeat_a_key(raw, json.loads(line))
    assert repeated_key_pointer(line) == pointer


@pytest.mark.parametrize(
    "line",
    [
        '{"event_type": "decision", "payload": {"rationale": "because"}}',
        '{"a": {"b": {"c": [1, {"d": 2}]}}, "e": []}',
        '{"note": "key\\": value", "other": 1}',  # a string holding the shape of a key
        '{"note": "ratio\\":2", "n": {"x": 1}}',
    ],
)
def test_a_line_without_repeats_is_not_accused(line):
    assert repeated_key_pointer(line) is None


def test_ordinary_lines_are_cleared_by_the_counts_alone():
    line = '{"event_type": "decision", "payload": {"rationale": "r", "tags": [{"k": 1}, {"k": 2}]}}'
    assert key_tokens(line.encode()) == decoded_keys(json.loads(line)) == 6
    assert not may_repeat_a_key(line.encode(), json.loads(line))
    # keys decoded elsewhere (the fast path's envelope fields) are added by the caller
    assert not may_repeat_a_key(b'{"a": 1, "b": {"c": 2}}', {"c": 2}, extra_keys=2)


def _line(event_type: str = "decision", **overrides) -> str:
    from orchestration_pipeline_tests.conftest import make_event

    return json.dumps(make_event(event_type, **overrides))


@pytest.mark.parametrize(
    ("line", "pointer"),
    [
        # the same event type written twice, the last one different: stored as a task_start before
        (_line()[:-1] + ', "event_type": "task_start"}', "/event_type"),
        (_line()[:-1] + ', "event_id": "6f1c1e0a-3c4b-5d7e-9a10-2b3c4d5e6f71"}', "/event_id"),
        (_line(payload={"rationale": "a"})[:-2] + ', "rationale": "b"}}', "/payload/rationale"),
        # no payload (its default {} must not count as a key written), an id given twice
        (
            json.dumps({k: v for k, v in json.loads(_line("task_start")).items() if k != "payload"})[:-1]
            + ', "event_id": "6f1c1e0a-3c4b-5d7e-9a10-2b3c4d5e6f72"}',
            "/event_id",
        ),
        # a line the fast path never takes (it may hold a secret): the full validator finds it too
        (_line(payload={"rationale": "token=abc"})[:-2] + ', "rationale": "b"}}', "/payload/rationale"),
    ],
)
def test_parse_line_quarantines_a_repeated_key_on_either_path(line, pointer):
    from orchestration_pipeline.lib.ingestion.envelope import Rejection
    from orchestration_pipeline.lib.ingestion.events import parse_common_line, parse_line

    raw = line.encode()
    assert parse_common_line(raw, datetime.now(UTC)) is None
    result = parse_line(raw)
    assert isinstance(result, Rejection), result
    assert (result.failure_type, result.json_pointer) == ("duplicate_key", pointer)
    assert "more than once" in result.detail


def test_the_fast_path_still_takes_an_ordinary_line():
    from orchestration_pipeline.lib.ingestion.events import parse_common_line

    assert parse_common_line(_line().encode(), datetime.now(UTC)) is not None
    spaced = _line().replace('":', '" :')  # blanks before the colons
    assert parse_common_line(spaced.encode(), datetime.now(UTC)) is not None
    without_payload = {k: v for k, v in json.loads(_line("task_start")).items() if k != "payload"}
    assert parse_common_line(json.dumps(without_payload).encode(), datetime.now(UTC)) is not None
