import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import orchestration_pipeline
from orchestration_pipeline.lib.ingestion.envelope import (
    EVENT_TYPES,
    ParsedEvent,
    Rejection,
    envelope_json_schema,
)
from orchestration_pipeline.lib.ingestion.events import parse_line
from orchestration_pipeline.lib.ingestion.validated import (
    derive_event_id,
    error_fingerprint,
    parse_line_validated,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def line(**fields) -> bytes:
    base = {"event_type": "decision", "occurred_at": "2026-06-01T11:00:00Z", "payload": {"rationale": "why"}}
    base.update(fields)
    return json.dumps(base).encode()


def test_shipped_schema_matches_the_models():
    shipped = Path(orchestration_pipeline.__file__).parent / "schemas" / "event_envelope.schema.json"
    assert json.loads(shipped.read_text()) == envelope_json_schema(), (
        "regenerate with: orchestration-pipeline events schema > orchestration_pipeline/schemas/event_envelope.schema.json"
    )
    assert {branch["$ref"].rsplit("/", 1)[-1] for branch in envelope_json_schema()["oneOf"]}.__len__() == len(
        EVENT_TYPES
    )


@pytest.mark.parametrize(
    "event_type, payload, extra",
    [
        ("task_start", {}, {}),
        ("task_end", {"success": False, "duration_ms": 12}, {}),
        ("command_start", {"command": "ls"}, {}),
        ("command_end", {"exit_code": 2, "duration_ms": 0}, {}),
        ("decision", {"rationale": "r"}, {}),
        ("artifact_emit", {"path": "a", "size_bytes": 1, "sha256": "0" * 64}, {}),
        ("artifact_emit", {"path": "a", "size_bytes": 1, "hash_skipped_reason": "too big"}, {}),
        ("error", {"message": "boom"}, {"stage": "db"}),
        ("metric", {"name": "m", "value": 1.5}, {}),
        ("policy_violation", {"host": "h", "file": None}, {}),
        (
            "agent.completed",
            {"agent_type": "coder", "agent_name": "a", "task_description": "t"},
            {"status": "completed", "severity": "success"},
        ),
    ],
)
def test_each_type_accepts_its_required_fields(event_type, payload, extra):
    result = parse_line(line(event_type=event_type, payload=payload, **extra), now=NOW)
    assert isinstance(result, ParsedEvent), result
    assert result.event_type == event_type


@pytest.mark.parametrize(
    "raw, failure, pointer",
    [
        (b"{not json", "malformed_json", ""),
        (b"\xff\xfe\x00", "invalid_utf8", ""),
        (b"[1]", "not_an_object", ""),
        (json.dumps({"occurred_at": "2026-06-01T11:00:00Z"}).encode(), "missing_field", "/event_type"),
        (line(occurred_at=None), "wrong_type", "/occurred_at"),
        (
            json.dumps({"event_type": "decision", "payload": {"rationale": "x"}}).encode(),
            "missing_field",
            "/occurred_at",
        ),
        (line(event_type="nope"), "unknown_event_type", "/event_type"),
        (line(event_type="task_end", payload={"success": True}), "missing_field", "/payload/duration_ms"),
        (
            line(event_type="task_end", payload={"success": "yes", "duration_ms": 1}),
            "wrong_type",
            "/payload/success",
        ),
        (
            line(event_type="command_end", payload={"exit_code": 0, "duration_ms": -1}),
            "invalid_value",
            "/payload/duration_ms",
        ),
        (
            line(event_type="artifact_emit", payload={"path": "a", "size_bytes": 1}),
            "invalid_value",
            "/payload",
        ),
        (line(event_type="error", payload={"message": "m"}), "missing_field", "/stage"),
        # outside agent.* events, any word of 1 to 64 characters after trimming (see test_status_words)
        (line(severity="x" * 65), "invalid_value", "/severity"),
        (line(status=" \t "), "invalid_value", "/status"),
        (line(status=5), "invalid_value", "/status"),
        (line(event_id="not-a-uuid"), "invalid_value", "/event_id"),
        (line(occurred_at="2026-06-01T11:00:00"), "invalid_value", "/occurred_at"),
        (line(occurred_at="2026-06-03T12:00:00Z"), "future_timestamp", "/occurred_at"),
        (line(payload={"rationale": "x" * (1024 * 1024)}), "payload_too_large", "/payload"),
        (
            line(
                event_type="agent.started",
                payload={"agent_type": "a", "agent_name": "b", "task_description": "c"},
                status="succeeded",
            ),
            "invalid_value",
            "/status",
        ),
        (
            line(
                event_type="agent.progress",
                payload={"agent_type": "a", "agent_name": "b", "task_description": "c"},
                severity="debug",
            ),
            "invalid_value",
            "/severity",
        ),
        # in UTC before year 1, or after 9999: Python cannot convert them; never a crash
        (line(occurred_at="0001-01-01T00:30:00+20:00"), "invalid_value", "/occurred_at"),
        (
            line(occurred_at="0001-01-01T00:30:00+10:00"),
            "invalid_value",
            "/occurred_at",
        ),  # stored, unreadable
        (line(occurred_at="9999-12-31T23:59:59-20:00"), "future_timestamp", "/occurred_at"),
    ],
)
def test_rejections_name_the_failure_and_field(raw, failure, pointer):
    result = parse_line(raw, now=NOW)
    assert isinstance(result, Rejection), result
    assert (result.failure_type, result.json_pointer) == (failure, pointer), result.detail
    assert result.detail and len(result.raw_sha256) == 64


def test_event_id_is_kept_or_derived_deterministically():
    explicit = uuid.uuid4()
    assert parse_line(line(event_id=str(explicit)), now=NOW).event_id == explicit
    a = parse_line(line(), now=NOW)
    b = parse_line(
        b"  " + json.dumps(json.loads(line()), indent=None, separators=(", ", ": ")).encode(), now=NOW
    )
    c = parse_line(line(payload={"rationale": "other"}), now=NOW)
    assert a.event_id == b.event_id != c.event_id
    assert a.event_id == derive_event_id(json.loads(line()))


def test_future_tolerance_is_one_day():
    assert isinstance(
        parse_line(line(occurred_at=(NOW + timedelta(hours=23)).isoformat()), now=NOW), ParsedEvent
    )
    assert isinstance(
        parse_line(line(occurred_at=(NOW + timedelta(hours=25)).isoformat()), now=NOW), Rejection
    )


def test_error_fingerprint_normalises_what_varies():
    fp1, template = error_fingerprint(
        "db",
        "insert into 'events' failed for id 123 after 45.6 ms (req 0b6f6a54-4d5e-4a57-9a4e-1b2c3d4e5f60)",
    )
    fp2, _ = error_fingerprint(
        "db", "insert into 'metrics' failed for id 9 after 1 ms (req 11111111-2222-3333-4444-555555555555)"
    )
    fp3, _ = error_fingerprint(
        "api",
        "insert into 'events' failed for id 123 after 45.6 ms (req 0b6f6a54-4d5e-4a57-9a4e-1b2c3d4e5f60)",
    )
    fp4, _ = error_fingerprint("db", "connection refused")
    assert fp1 == fp2
    assert fp1 != fp3  # same message, other stage
    assert fp1 != fp4
    assert template == "insert into '?' failed for id <n> after <n> ms (req <uuid>)"


def test_duration_is_copied_from_the_payload():
    ev = parse_line(line(event_type="task_end", payload={"success": True, "duration_ms": 42}), now=NOW)
    assert ev.duration_ms == 42


@pytest.mark.parametrize("parse", [parse_line, parse_line_validated])
def test_a_payload_duration_beyond_bigint_stays_in_the_payload_only(parse):
    # the duration_ms column is a bigint: a larger value there failed the whole file's COPY
    ev = parse(line(event_type="task_start", payload={"duration_ms": 2**63}), now=NOW)
    assert isinstance(ev, ParsedEvent) and ev.duration_ms is None
    assert json.loads(ev.payload_json)["duration_ms"] == 2**63


def test_top_level_fields_outside_the_envelope_are_kept_in_the_payload():
    raw = line(payload={"rationale": "why"}, attempt=2, host="build-7")
    ev = parse_line(raw, now=NOW)
    assert isinstance(ev, ParsedEvent)
    assert json.loads(ev.payload_json) == {
        "rationale": "why",
        "envelope_extra": {"attempt": 2, "host": "build-7"},
    }
    # the id is derived from the line as written, extra fields included
    assert ev.event_id == derive_event_id(json.loads(raw))
    plain = parse_line(line(payload={"rationale": "why"}), now=NOW)
    assert plain.event_id != ev.event_id


def test_a_payload_that_already_uses_the_reserved_key_is_quarantined_not_overwritten():
    rejection = parse_line(line(payload={"rationale": "why", "envelope_extra": 1}, host="build-7"), now=NOW)
    assert isinstance(rejection, Rejection)
    assert rejection.failure_type == "invalid_value" and rejection.json_pointer == "/payload/envelope_extra"


@pytest.mark.parametrize(
    "occurred_at, failure",
    [
        ("BAD", "invalid_value"),
        ("2026-06-01T11:00:00", "invalid_value"),
        ("2099-01-01T00:00:00Z", "future_timestamp"),
    ],
)
def test_a_rejected_line_counts_its_redactions_whatever_the_failure(occurred_at, failure):
    rejection = parse_line(
        line(occurred_at=occurred_at, payload={"rationale": "why", "password": "hunter2"}), now=NOW
    )
    assert isinstance(rejection, Rejection) and rejection.failure_type == failure
    assert "hunter2" not in rejection.raw_text and rejection.redactions == 1
