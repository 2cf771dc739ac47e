"""The SDK's own envelope code (kept pydantic-free) against the real models, and emit_one."""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestration_pipeline.emit import _envelope, emit_one
from orchestration_pipeline.lib.ingestion import envelope as models
from orchestration_pipeline.lib.ingestion.envelope import ParsedEvent
from orchestration_pipeline.lib.ingestion.events import parse_line
from orchestration_pipeline_tests.emit._support import read_events


def test_constants_mirror_the_event_models():
    for name in ("CORE_TYPES", "AGENT_TYPES", "EVENT_TYPES", "SEVERITIES", "STATUSES", "AGENT_STATUSES",
                 "AGENT_SEVERITIES", "MAX_LINE_BYTES"):  # fmt: skip
        assert getattr(_envelope, name) == getattr(models, name), name
    assert set(_envelope.EVENT_TYPES) == set(models.EVENT_MODELS)


def test_event_ids_are_unique_random_uuid4s_across_threads():
    ids: list[str] = []

    def take() -> None:
        ids.extend(_envelope.new_event_id() for _ in range(5_000))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == len(set(ids)) == 20_000
    for text in ids[::97]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_occurred_at_is_utc_rfc3339_with_microseconds():
    before = datetime.now(UTC)
    text = _envelope.utc_now()
    after = datetime.now(UTC)
    at = datetime.fromisoformat(text)
    assert text.endswith("+00:00") and len(text) == len("2026-01-31T12:00:00.123456+00:00")
    assert before - timedelta(milliseconds=1) <= at <= after + timedelta(milliseconds=1)


@pytest.mark.parametrize(
    "event_type, payload, extra",
    [
        ("task_start", {}, {}),
        ("task_end", {"success": False, "duration_ms": 0}, {"status": "failed"}),
        ("command_start", {"command_id": "c-1"}, {}),
        ("command_end", {"command_id": "c-1", "exit_code": -9, "duration_ms": 3}, {}),
        ("decision", {"rationale": "ünïcode ✓ and \"quotes\" and \\ backslashes\nand newlines"}, {}),
        ("artifact_emit", {"path": "/a", "size_bytes": 0, "sha256": "a" * 64}, {}),
        ("artifact_emit", {"path": "/a", "size_bytes": 0, "hash_skipped_reason": "too big"}, {}),
        ("error", {"message": "boom"}, {"stage": "db"}),
        ("metric", {"name": "m", "value": 1.5, "unit": "s", "tags": {"k": [1, None]}}, {}),
        ("policy_violation", {"host": "h", "file": "f", "policy": "p", "rule": "r"}, {"severity": "warning"}),
        *[(t, {"agent_type": "a", "agent_name": "b", "task_description": ""}, {"severity": "critical"})
          for t in _envelope.AGENT_TYPES],
    ],
)  # fmt: skip
def test_events_that_pass_the_sdk_checks_pass_the_parser(event_type, payload, extra):
    _envelope.check_event(event_type, payload, **extra)
    event = _envelope.build_event(event_type, payload, source="s", session_id="sess", task_id="T", **extra)
    line = _envelope.encode_line(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    parsed = parse_line(line[:-1])
    assert isinstance(parsed, ParsedEvent), parsed
    assert parsed.payload == payload and str(parsed.event_id) == event["event_id"]


def test_emit_one_writes_one_complete_file_atomically(tmp_path):
    landing = tmp_path / "new" / "landing"
    path = emit_one(landing, "decision", source="deploy.sh", session_id="sess-9", task_id="T-1",
                    stage="release", payload={"rationale": "green build"}, version="1.2.3")  # fmt: skip
    assert path.parent == landing and path.suffix == ".jsonl" and os.listdir(landing) == [path.name]
    (event,) = read_events(landing)
    assert event["payload"] == {"rationale": "green build", "version": "1.2.3"}
    assert (event["source"], event["session_id"], event["task_id"], event["stage"]) == (
        "deploy.sh", "sess-9", "T-1", "release",
    )  # fmt: skip
    second = emit_one(landing, "task_end", source="deploy.sh", session_id="sess-9", task_id="T-1",
                      status="succeeded", duration_ms=5, success=True)  # fmt: skip
    assert second != path and len(read_events(landing)) == 2
    ends = [e for e in read_events(landing) if e["event_type"] == "task_end"]
    assert ends[0]["duration_ms"] == ends[0]["payload"]["duration_ms"] == 5
    with pytest.raises(TypeError, match="duration_ms is required"):
        emit_one(landing, "task_end", source="deploy.sh", session_id="sess-9", success=True)
    with pytest.raises(ValueError, match="source"):
        emit_one(landing, "decision", source="", session_id="s", rationale="x")
    assert len(os.listdir(landing)) == 2


def test_emit_one_raises_when_it_cannot_write_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        emit_one(blocker / "landing", "decision", source="s", session_id="s", rationale="x")
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


def test_the_shipped_json_schema_accepts_sdk_output(tmp_path):
    """The schema producers may validate against names every field the SDK writes at top level."""
    schema_path = Path(models.__file__).parents[2] / "schemas" / "event_envelope.schema.json"
    schema = json.loads(schema_path.read_text())
    top_level = set()
    for branch in schema["$defs"].values():
        top_level |= set(branch.get("properties", {}))
    event = _envelope.build_event("task_end", {"success": True, "duration_ms": 1}, source="s", session_id="x",
                                  task_id="T", stage="st", severity="success", status="succeeded", duration_ms=1)  # fmt: skip
    assert set(event) <= top_level
