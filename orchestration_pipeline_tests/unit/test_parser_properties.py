"""Property-based tests of the line parser and the line splitter."""

import io
import json
from dataclasses import astuple
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestration_pipeline.lib.ingestion import files as line_files
from orchestration_pipeline.lib.ingestion.envelope import EVENT_TYPES, ParsedEvent, Rejection
from orchestration_pipeline.lib.ingestion.events import parse_line
from orchestration_pipeline.lib.ingestion.failure_types import FAILURE_TYPES
from orchestration_pipeline.lib.ingestion.files import LineBlock, iter_blocks, iter_lines

NOW = datetime(2026, 6, 1, tzinfo=UTC)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash(raw):
    result = parse_line(raw, now=NOW)
    assert isinstance(result, (ParsedEvent, Rejection))
    if isinstance(result, Rejection):
        assert result.failure_type in FAILURE_TYPES
        assert result.detail and len(result.raw_sha256) == 64


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "event_type",
                "occurred_at",
                "payload",
                "event_id",
                "session_id",
                "severity",
                "status",
                "stage",
                "duration_ms",
                "x",
            ]
        ),
        json_values,
        max_size=8,
    )
)
def test_arbitrary_objects_never_crash(obj):
    result = parse_line(json.dumps(obj).encode(), now=NOW)
    assert isinstance(result, (ParsedEvent, Rejection))
    if isinstance(result, ParsedEvent):
        assert result.event_type in EVENT_TYPES
        json.loads(result.payload_json)  # what is stored is valid JSON
        result.payload_json.encode("utf-8")  # and storable


@settings(max_examples=200)
@given(
    st.lists(st.binary(max_size=60).filter(lambda b: b"\n" not in b), max_size=30),
    st.sampled_from([b"\n", b"\r\n"]),
    st.booleans(),
)
def test_every_nonblank_line_is_yielded_once_with_its_number(lines, newline, trailing):
    data = newline.join(lines) + (newline if trailing else b"")
    got = list(iter_lines(io.BytesIO(data)))
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):  # a byte-order mark opening the file is skipped
        lines = [lines[0][3:], *lines[1:]]
    expected = [(i + 1, line.rstrip(b"\r")) for i, line in enumerate(lines) if line.rstrip(b"\r").strip()]
    assert [(g.number, g.raw) for g in got] == expected


@settings(max_examples=100)
@given(st.text(min_size=1, max_size=40), st.sampled_from(EVENT_TYPES))
def test_accounting_partition(text, event_type):
    """Each line is exactly one of accepted or rejected (never both, never neither)."""
    raw = json.dumps(
        {
            "event_type": event_type,
            "occurred_at": "2026-01-01T00:00:00Z",
            "payload": {"message": text, "rationale": text, "name": text, "value": 1},
            "stage": "s",
        }
    ).encode()
    result = parse_line(raw, now=NOW)
    assert isinstance(result, ParsedEvent) != isinstance(result, Rejection)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.binary(max_size=90).map(lambda b: b.replace(b"\n", b"")),
            st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\r\r\n", b" \n"]),
        ),
        max_size=14,
    ),
    st.booleans(),
    st.sampled_from([1, 2, 3, 1000]),
)
def test_blocks_hold_exactly_the_lines_iter_lines_reads(parts, trailing, max_lines):
    """Read in blocks (as for parse workers), a file gives the same lines, numbers, offsets and
    over-long-line cuts as read line by line; limits are shrunk so every path is taken."""
    data = b"".join(line + sep for line, sep in parts)
    if not trailing:
        data = data.rstrip(b"\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(line_files, "MAX_LINE_BYTES", 20)
        mp.setattr(line_files, "_BLOCK_BYTES", 64)
        expected = [astuple(line) for line in iter_lines(io.BytesIO(data))]
        got = []
        for block in iter_blocks(io.BytesIO(data), max_lines):
            if isinstance(block, LineBlock):
                assert len(block.data) <= 64
                assert block.data.count(b"\n") + (not block.data.endswith(b"\n")) <= max_lines
                got.extend(astuple(line) for line in block.lines())
            else:
                got.extend(astuple(line) for line in block)
    assert got == expected
