"""The msgspec common path agrees with the pydantic validator on every line it takes.

``parse_common_line`` may decline any line (it then goes to ``parse_line_validated``), but a line
it accepts must come out exactly as the full validator makes it: same fields, same payload, same
id, nothing redacted. Generated lines are mostly near-valid envelopes with one thing wrong or
odd, so both the accepting and the declining sides are exercised.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestration_pipeline.lib.ingestion import rows as ingest_mod
from orchestration_pipeline.lib.ingestion.envelope import AGENT_TYPES, EVENT_TYPES, ParsedEvent
from orchestration_pipeline.lib.ingestion.events import parse_common_line, parse_line
from orchestration_pipeline.lib.ingestion.files import LineBlock
from orchestration_pipeline.lib.ingestion.rows import parse_batch
from orchestration_pipeline.lib.ingestion.validated import encode_payload, parse_line_validated

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RUN_ID = uuid.UUID(int=7)

odd_text = st.text(
    st.sampled_from(["\t", "\n", "\r", "\\", '"', "\x7f", "é", "\u2028", "😀"])
    | st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    max_size=12,
)
some_text = st.one_of(
    st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=12), odd_text, st.text(max_size=12)
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63), 10**308, 10**309, -(10**309)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e16, 1.5e-7, 1.7976931348623157e308, 5e-324, 100.0]),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | some_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(some_text, children, max_size=3),
    max_leaves=8,
)
secretish_keys = st.sampled_from(["password", "apiKey", "token_count", "keyboard", "auth", "note", "url"])
secretish_values = st.sampled_from(
    ["Bearer abcdefghijkl", "postgresql://u:pw@h/db", "password=x", "fine", "http:\\/\\/x", "\\u0041"]
)

UUIDS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: str(u) + "\n"),
    st.sampled_from(["not-a-uuid", "", None, 5]),
)
TIMES = st.one_of(
    st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2026, 6, 3), timezones=st.sampled_from([UTC])
    ).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2026-06-01T11:00:00Z",
            "2026-06-01T11:00:00+05:30",
            "2026-06-01T11:00:00",
            "2026-06-01",
            "2026-06-02T11:59:59+00:00",
            "2026-06-02T12:00:01+00:00",
            "2026-06-01 11:00:00.123456-01:00",
            "20260601T110000Z",
            "yesterday",
            "",
        ]
    ),
    st.none(),
    st.integers(),
)
ENVELOPE_KEYS = ["session_id", "task_id", "source", "stage", "severity", "status", "duration_ms"]
ENUMS = st.sampled_from(
    ["info", "debug", "success", "error", "started", "succeeded", "in_progress", "skipped", "loud", ""]
    # producers' own words: stored trimmed, at most 64 characters (agent.* events keep their enums)
    + ["SUCCESS", " ok ", "ok\u2003", "\x1cok", "x" * 64, "x" * 65, " " * 3 + "y" * 64]
)


def _good_payload(event_type: str) -> dict:
    if event_type in AGENT_TYPES:
        return {"agent_type": "coder", "agent_name": "a", "task_description": "t"}
    return {
        "task_end": {"success": True, "duration_ms": 12},
        "command_end": {"exit_code": 1, "duration_ms": 3},
        "decision": {"rationale": "because"},
        "artifact_emit": {"path": "a.txt", "size_bytes": 1, "sha256": "0" * 64},
        "error": {"message": "insert failed for id 42"},
        "metric": {"name": "rows", "value": 5, "tags": {"t": "x"}},
        "policy_violation": {"host": "h", "file": None},
    }.get(event_type, {})


def _chance(draw, percent: int) -> bool:
    return draw(st.integers(0, 99)) < percent


VALID_ENVELOPE_VALUES = {
    "severity": st.sampled_from(["info", "success", "warning", "error", "critical"]),
    "status": st.sampled_from(["started", "in_progress", "completed", "paused", "failed", "conflict"]),
    "duration_ms": st.integers(min_value=0, max_value=2**63 - 1),
}


@st.composite
def envelopes(draw) -> dict:
    """A valid envelope of any type, then (each with some chance) one or more things made odd."""
    event_type = draw(st.sampled_from(EVENT_TYPES))
    if _chance(draw, 5):
        event_type = draw(st.sampled_from(["nope", "", 3, None]))
    obj: dict = {
        "event_id": draw(st.uuids().map(str)),
        "event_type": event_type,
        "occurred_at": "2026-06-01T11:00:00Z",
    }
    if isinstance(event_type, str):
        obj["payload"] = _good_payload(event_type)
    if event_type == "error":
        obj["stage"] = "db"
    for key in draw(st.lists(st.sampled_from(ENVELOPE_KEYS), max_size=4, unique=True)):
        if not _chance(draw, 20):
            obj[key] = draw(VALID_ENVELOPE_VALUES.get(key, some_text))
        elif key in ("severity", "status"):
            obj[key] = draw(ENUMS | st.none() | st.integers())
        elif key == "duration_ms":
            obj[key] = draw(numbers | st.none() | st.booleans() | st.text(max_size=3))
        else:
            obj[key] = draw(some_text | st.none() | st.integers())
    if _chance(draw, 15):
        obj["event_id"] = draw(UUIDS)
    if _chance(draw, 25):
        obj["occurred_at"] = draw(TIMES)
    payload = obj.get("payload")
    if isinstance(payload, dict):
        if _chance(draw, 25):  # a required field dropped or given any value
            for key in draw(st.lists(st.sampled_from(sorted(payload) or ["x"]), max_size=2, unique=True)):
                if draw(st.booleans()):
                    payload.pop(key, None)
                else:
                    payload[key] = draw(json_values)
        payload.update(draw(st.dictionaries(some_text, json_values, max_size=3)))
        if _chance(draw, 10):
            payload[draw(secretish_keys)] = draw(json_values | secretish_values)
        if event_type == "artifact_emit" and _chance(draw, 30):
            payload.pop("sha256", None)
            payload["hash_skipped_reason"] = draw(st.sampled_from(["", "too big", None]))
        if event_type == "artifact_emit" and _chance(draw, 30):
            payload["sha256"] = draw(st.sampled_from(["0" * 64 + "\n", "A" * 64, "0" * 63, None, "f" * 64]))
        if event_type in ("task_end", "command_end") and _chance(draw, 30):
            payload["duration_ms"] = draw(st.sampled_from([1.0, True, -1, 2**63, None, 0]))
        if event_type == "metric" and _chance(draw, 50):
            payload["value"] = draw(numbers | st.booleans() | st.none())
    if _chance(draw, 5):
        del obj[draw(st.sampled_from(sorted(obj)))]
    if _chance(draw, 5):
        obj["payload"] = draw(json_values)
    if _chance(draw, 10):
        obj[draw(st.sampled_from(["x", "extra", "Payload", "password"]))] = draw(
            json_values | secretish_values
        )
    return obj


@st.composite
def lines(draw) -> bytes:
    obj = draw(envelopes())
    text = json.dumps(
        obj,
        ensure_ascii=_chance(draw, 20),
        separators=draw(st.sampled_from([(", ", ": "), (",", ":")])),
    )
    tweak = (
        "none"
        if _chance(draw, 70)
        else draw(st.sampled_from(["dup_type", "dup_key", "pad", "deep", "nan", "huge", "tail", "bom"]))
    )
    if tweak == "dup_type":
        text = text[:-1] + ', "event_type": "decision"}'
    elif tweak == "dup_key":
        key = draw(st.sampled_from(["occurred_at", "payload", "event_id", "session_id"]))
        text = text[:-1] + f', "{key}": ' + json.dumps(draw(json_values)) + "}"
    elif tweak == "pad":
        text = " \t" + text + " \r"
    elif tweak == "deep":
        depth = draw(st.integers(min_value=30, max_value=1200))
        text = text[:-1] + ', "d": ' + "[" * depth + "]" * depth + "}"
    elif tweak == "nan":
        text = (
            text[:-1]
            + ', "n": '
            + draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999"]))
            + "}"
        )
    elif tweak == "huge":
        text = text.replace('"payload": {', '"payload": {"big": 1e400, ', 1)
    elif tweak == "tail":
        text = text + draw(st.sampled_from(["x", "}", ",", "\x00"]))
    elif tweak == "bom":
        text = "\ufeff" + text
    raw = text.encode("utf-8")
    if _chance(draw, 3):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + b"\xff" + raw[at:]
    return raw


def _same(common, full) -> None:
    assert isinstance(full, ParsedEvent), full
    # repr tells 1 from 1.0 from True inside the payload, which == would not
    assert repr(common.parsed_event()) == repr(full)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines())
@example(
    b'{"event_id": "6f1c1e0a-3c4b-4d7e-9a10-2b3c4d5e6f70", "event_type": "decision", "occurred_at": "2026-06-01T11:00:00Z", "payload": {"rationale": "x", "v": 1e400}}'
)
@example(
    b'{"event_id": "6f1c1e0a-3c4b-4d7e-9a10-2b3c4d5e6f70", "event_type": "decision", "occurred_at": "2026-06-01T11:00:00Z", "payload": {"rationale": "x"}, "extra": 1e400}'
)
@example(
    b'{"event_id": "6f1c1e0a-3c4b-4d7e-9a10-2b3c4d5e6f70", "event_type": "metric", "occurred_at": "2026-06-01T11:00:00Z", "payload": {"name": "m", "value": 1'
    + b"0" * 400
    + b"}}"
)
def test_common_path_agrees_with_the_full_validator(raw):
    common = parse_common_line(raw, NOW)
    full = parse_line_validated(raw, now=NOW)
    if common is not None:
        _same(common, full)
    assert repr(parse_line(raw, now=NOW)) == repr(full)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_well_formed_lines_take_the_common_path(event_type):
    obj = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": "2026-06-01T11:00:00.5+02:00",
        "session_id": "s\t1\\x",
        "source": "orchestrator é 😀",
        "payload": {**_good_payload(event_type), "nested": {"list": [1, 2.5, None, True, "ok"]}},
    }
    if event_type == "error":
        obj["stage"] = "db"
    # (non-ASCII text written as \u escapes is left to the full validator: escapes can spell keys)
    for separators in ((", ", ": "), (",", ":")):
        raw = json.dumps(obj, ensure_ascii=False, separators=separators).encode()
        common = parse_common_line(raw, NOW)
        assert common is not None, raw
        _same(common, parse_line_validated(raw, now=NOW))


@pytest.mark.parametrize(
    "change",
    [
        {"event_id": None},
        {"payload_extra": {"password": "hunter2"}},
        {"payload_extra": {"note": "Bearer abcdefghijklmnop"}},
        {"payload_extra": {"url": "http:\\/\\/x"}},
        {"extra": 1},
        {"occurred_at": "2026-06-01T11:00:00"},
        {"occurred_at": "2026-06-03T12:00:00Z"},
        {"severity": " loud"},  # stored trimmed
        {"status": "ok\n"},
        {"status": "x" * 65},
    ],
)
def test_lines_needing_more_than_validation_are_declined(change):
    obj = {"event_id": str(uuid.uuid4()), "event_type": "decision", "occurred_at": "2026-06-01T11:00:00Z"}
    obj["payload"] = {"rationale": "r", **change.pop("payload_extra", {})}
    obj.update(change)
    if obj["event_id"] is None:
        del obj["event_id"]
    raw = json.dumps(obj).encode()
    assert parse_common_line(raw, NOW) is None


def _batch_lines() -> list[bytes]:
    objs = [
        {"event_type": t, "event_id": str(uuid.UUID(int=i + 1)), "occurred_at": "2026-06-01T11:00:00Z",
         "session_id": "s\t1", "payload": _good_payload(t), **({"stage": "db"} if t == "error" else {})}
        for i, t in enumerate(EVENT_TYPES)
    ]  # fmt: skip
    secret = {**objs[4], "event_id": str(uuid.UUID(int=99)), "payload": {"rationale": "r", "token": "t0p"}}
    escaped = {**objs[4], "event_id": str(uuid.UUID(int=98)), "payload": {"rationale": "caf\u00e9"}}
    return [json.dumps(o).encode() for o in (*objs, secret, escaped)] + [
        b"{bad",
        b'{"event_type": "decision"}',
    ]


def _same_batch(a, b) -> None:
    assert (a.lines, a.plain, a.errors, a.quarantine, a.quarantine_by_type, a.redactions) == (
        b.lines, b.plain, b.errors, b.quarantine, b.quarantine_by_type, b.redactions
    )  # fmt: skip


def test_a_batch_is_the_same_whichever_path_its_lines_take(monkeypatch):
    raws = _batch_lines()
    data = b"\n\n".join(raws) + b"\r\n"  # blank lines and a CR too
    block = LineBlock(data, 10, 1000)
    lines = block.lines()
    assert [x.raw for x in lines] == raws
    as_block = parse_batch(block, "/in/a\tb.jsonl", NOW, RUN_ID, "0" * 64)
    as_list = parse_batch(lines, "/in/a\tb.jsonl", NOW, RUN_ID, "0" * 64)
    monkeypatch.setattr(ingest_mod, "parse_common_line", lambda raw, now, unmarked=False: None)
    slow = parse_batch(lines, "/in/a\tb.jsonl", NOW, RUN_ID, "0" * 64)
    assert len(slow.plain) == len(EVENT_TYPES) + 1 and len(slow.errors) == 1 and len(slow.quarantine) == 2
    assert slow.redactions == 1
    _same_batch(as_block, slow)
    _same_batch(as_list, slow)


def _stored_decimal(text: str) -> tuple[Decimal, int]:
    """The value and display scale PostgreSQL numeric (hence jsonb) keeps for a JSON number."""
    value = Decimal(text)
    return value, max(0, -value.as_tuple().exponent)


@settings(max_examples=3000)
@given(st.floats(allow_nan=False, allow_infinity=False))
@example(1e16)
@example(1e-5)
@example(7.579544029403025e-05)
@example(1e22)
@example(123456789012345.6)
def test_payload_numbers_keep_their_digits(value):
    """encode_payload writes a float as json.dumps does, up to the exponent's spelling."""
    assert _stored_decimal(encode_payload({"v": value})[5:-1]) == _stored_decimal(json.dumps(value))


def test_common_event_keeps_what_parse_line_would():
    raw = json.dumps(
        {"event_id": str(uuid.UUID(int=5)), "event_type": "task_end", "occurred_at": "2026-06-01T11:00:00Z",
         "payload": {"success": False, "duration_ms": 7}}
    ).encode()  # fmt: skip
    common = parse_common_line(raw, NOW)
    assert common is not None and common.event_id == str(uuid.UUID(int=5)) and common.duration_ms == 7
    assert msgspec.structs.replace(common, payload_json="").parsed_event().payload == {
        "success": False,
        "duration_ms": 7,
    }
    assert NOW - common.occurred_at == timedelta(hours=1)
