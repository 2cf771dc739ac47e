"""The full validator (pydantic): any line, with the detail and JSON pointer of every rejection.

It also holds what both parse paths share: ids derived from content, error fingerprints, the
checks of what PostgreSQL can store (timestamps, escapes, numbers). :func:`parse_line_validated`
never raises on bad input.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from pydantic import (
    ValidationError,
)

from orchestration_pipeline.lib.canonical_json import json_has_nul
from orchestration_pipeline.lib.ingestion.duplicate_keys import may_repeat_a_key, repeated_key_pointer
from orchestration_pipeline.lib.ingestion.envelope import (
    _ADAPTERS,
    BIGINT_MAX,
    ENVELOPE_FIELDS,
    EVENT_ID_NAMESPACE,
    EVENT_TYPES,
    EXTRA_KEY,
    FUTURE_TOLERANCE,
    MAX_LINE_BYTES,
    ParsedEvent,
    Rejection,
    _Envelope,
)
from orchestration_pipeline.lib.redaction import (
    may_contain_secret,
    redact_raw_line,
    redact_text,
    redact_value,
)


def _pointer(loc: tuple[Any, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in loc)


_TYPE_ERRORS = re.compile(r"_type$")


def _classify(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "missing_field"
    if _TYPE_ERRORS.search(kind) or kind in ("model_type", "model_attributes_type"):
        return "wrong_type"
    return "invalid_value"


def _reject(
    failure: str,
    detail: str,
    pointer: str,
    raw: bytes,
    text: str | None = None,
    redactions: int = 0,
    counts: Counter | None = None,
) -> Rejection:
    if text is None:
        text = raw.decode("utf-8", errors="backslashreplace")
    redacted, n = redact_raw_line(text, counts)
    detail, n_detail = redact_text(detail, counts)
    return Rejection(
        failure, detail, pointer, redacted, hashlib.sha256(raw).hexdigest(), redactions + n + n_detail
    )


def derive_event_id(obj: dict[str, Any]) -> uuid.UUID:
    """A deterministic id from the content, so a re-sent line without an id is a duplicate."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return uuid.uuid5(EVENT_ID_NAMESPACE, canonical)


_NORMALISERS = (
    (re.compile(r"'(?:[^'\\]|\\.)*'"), "'?'"),
    (re.compile(r'"(?:[^"\\]|\\.)*"'), '"?"'),
    (
        re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
        "<uuid>",
    ),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<id>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def normalise_error_message(message: str) -> str:
    """Collapse what varies between repeats of one error: quoted values, ids, numbers, spacing."""
    for pattern, repl in _NORMALISERS:
        message = pattern.sub(repl, message)
    return message.strip()


def error_fingerprint(stage: str, message: str) -> tuple[str, str]:
    """(fingerprint, template) of an error: same stage + same normalised message ⇒ same group."""
    template = normalise_error_message(message)
    return hashlib.sha256(f"{stage}\x1f{template}".encode()).hexdigest(), template


def _unstorable_escape(obj: Any) -> str | None:
    """PostgreSQL text and jsonb cannot hold NUL or lone UTF-16 surrogates (valid JSON escapes)."""
    dumped = json.dumps(obj, ensure_ascii=False)
    if json_has_nul(dumped):
        return "string contains a NUL character (\\u0000), which PostgreSQL cannot store — strip it at the producer"
    try:
        dumped.encode("utf-8")
    except UnicodeEncodeError:
        return "string contains a lone UTF-16 surrogate escape (\\udXXX) — send valid Unicode"
    return None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON and cannot be stored — send null or a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"number {text[:40]} is out of range for a double — send a smaller number")
    return value


def _loads(text: str) -> Any:
    """json.loads that refuses NaN/Infinity and numbers that overflow a double (PostgreSQL can't store them)."""
    return json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)


def _too_large_detail(size: int) -> str:
    return f"line is {size} bytes; the limit is {MAX_LINE_BYTES} (1 MiB) — move large content to an artifact"


def reject_oversized(
    prefix: bytes, total_bytes: int, full_sha256: str, counts: Counter | None = None
) -> Rejection:
    """The rejection of a line too long to read whole: described by its real size and full hash.
    ``counts``, when given, is increased by the redactions of each rule id."""
    rejection = _reject(
        "payload_too_large", _too_large_detail(total_bytes), "/payload", prefix, counts=counts
    )
    return Rejection(
        rejection.failure_type,
        rejection.detail,
        rejection.json_pointer,
        rejection.raw_text,
        full_sha256,
        rejection.redactions,
    )


# RFC 3339 as both Python and PostgreSQL read it the same way: at most microseconds (Python would
# cut more digits, PostgreSQL round them) and offsets PostgreSQL accepts (up to 15:59).
_PLAIN_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-](?:0\d|1[0-5]):[0-5]\d)")


def storable_moment(moment: datetime) -> datetime | None:
    """``moment``, in UTC when its offset is one PostgreSQL refuses (beyond ±15:59; RFC 3339 and
    Python allow up to ±23:59). The instant is unchanged; only the way it is written differs.
    None when that instant falls outside years 1 to 9999 (0001-01-01T00:30:00+20:00)."""
    offset = moment.utcoffset()
    if offset is not None and (abs(offset) >= timedelta(hours=16) or (moment.year == 1 and offset)):
        try:
            utc = moment.astimezone(UTC)
        except OverflowError:  # before year 1 (or after 9999) in UTC: PostgreSQL stores it, nobody reads it
            return None
        return utc if abs(offset) >= timedelta(hours=16) else moment
    return moment


def payload_duration(payload: dict[str, Any]) -> int | None:
    """``payload.duration_ms`` for the duration_ms column, when it fits there (a bigint, not negative)."""
    duration = payload.get("duration_ms")
    if isinstance(duration, int) and not isinstance(duration, bool) and 0 <= duration <= BIGINT_MAX:
        return duration
    return None


def timestamp_text(text: str, moment: datetime) -> str:
    """``occurred_at`` as COPY text: the producer's own text when it is plain RFC 3339 (the same
    instant to PostgreSQL as ``moment``, and free to write), else ``str(moment)``."""
    return text if _PLAIN_TIMESTAMP.fullmatch(text) else str(moment)


def parse_line_validated(
    raw: bytes,
    *,
    now: datetime | None = None,
    event_id_if_absent: uuid.UUID | None = None,
    counts: Counter | None = None,
) -> ParsedEvent | Rejection:
    """The full validator (pydantic): any line, with the detail and JSON pointer of every rejection.
    ``counts``, when given, is increased by the redactions of each rule id."""
    ids: dict[str, uuid.UUID] = {}
    result = _parse_validated(raw, now, event_id_if_absent, ids, counts)
    if isinstance(result, Rejection) and "derived" in ids:
        return dataclasses.replace(result, derived_event_id=ids["derived"])
    return result


def _parse_validated(
    raw: bytes,
    now: datetime | None,
    event_id_if_absent: uuid.UUID | None,
    ids: dict[str, uuid.UUID],
    counts: Counter | None,
) -> ParsedEvent | Rejection:
    decoded = _decode_object(raw, counts)
    if isinstance(decoded, Rejection):
        return decoded
    obj, text = decoded
    # The id is derived from the original content; everything after this sees only redacted data.
    derived = None
    if obj.get("event_id") is None:
        derived = ids["derived"] = event_id_if_absent or derive_event_id(obj)
    redactions = 0
    if may_contain_secret(raw):
        obj, redactions = redact_value(obj, counts)
    if redactions:
        # what a rejection stores: the redacted object (escaped or camelCase keys included), not the raw text
        text = json.dumps(obj, ensure_ascii=False)

    def reject(failure: str, detail: str, pointer: str) -> Rejection:
        return _reject(failure, detail, pointer, raw, text, redactions, counts)

    model = _validated_model(obj, reject)
    if isinstance(model, Rejection):
        return model
    occurred = _occurred_at(model.occurred_at, now, reject)
    if isinstance(occurred, Rejection):
        return occurred
    payload = _payload_with_extra(obj, reject)
    if isinstance(payload, Rejection):
        return payload
    return _parsed_event(model, obj["event_type"], occurred, payload, derived, redactions)


_Reject = Callable[[str, str, str], Rejection]


def _decode_object(raw: bytes, counts: Counter | None = None) -> tuple[dict[str, Any], str] | Rejection:
    """The line as a JSON object (and its text), or why it is not one PostgreSQL can store."""
    if len(raw) > MAX_LINE_BYTES:
        return _reject("payload_too_large", _too_large_detail(len(raw)), "/payload", raw, counts=counts)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        detail = f"invalid UTF-8 at byte {exc.start} — write events as UTF-8"
        return _reject("invalid_utf8", detail, "", raw, counts=counts)
    try:
        obj = _loads(text)
    except (ValueError, RecursionError) as exc:
        detail = (
            f"malformed JSON: {exc}" if isinstance(exc, ValueError) else "malformed JSON: nested too deeply"
        )
        return _reject("malformed_json", detail, "", raw, text, counts=counts)
    if not isinstance(obj, dict):
        detail = f"expected a JSON object, got {type(obj).__name__}"
        return _reject("not_an_object", detail, "", raw, text, counts=counts)
    if may_repeat_a_key(raw, obj) and (pointer := repeated_key_pointer(text)):
        detail = (
            f"key {pointer.rsplit('/', 1)[1]!r} is given more than once in one object — give each key once"
        )
        return _reject("duplicate_key", detail, pointer, raw, text, counts=counts)
    if "\\u" in text and (problem := _unstorable_escape(obj)):
        return _reject("invalid_value", problem, "", raw, text, counts=counts)
    return obj, text


def _validated_model(obj: dict[str, Any], reject: _Reject) -> _Envelope | Rejection:
    """``obj`` validated by the model of its event type (the first error is the rejection)."""
    event_type = obj.get("event_type")
    if event_type is None:
        return reject("missing_field", "event_type is required", "/event_type")
    if not isinstance(event_type, str):
        return reject("wrong_type", "event_type must be a string", "/event_type")
    adapter = _ADAPTERS.get(event_type)
    if adapter is None:
        shown = event_type[:80]
        return reject(
            "unknown_event_type",
            f"unknown event_type {shown!r}; known: {', '.join(EVENT_TYPES)}",
            "/event_type",
        )
    try:
        return adapter.validate_python(obj)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = tuple(err["loc"])
        return reject(_classify(err), f"{_pointer(loc) or '/'}: {err['msg']}", _pointer(loc))
    except RecursionError:
        return reject("invalid_value", "payload nested too deeply", "/payload")


def _occurred_at(text: str, now: datetime | None, reject: _Reject) -> datetime | Rejection:
    """``occurred_at`` as a storable moment: RFC 3339 with a zone, at most a day ahead, from year 1."""
    try:  # parsed here rather than in a pydantic validator: once per line instead of twice
        occurred = datetime.fromisoformat(text)
    except ValueError:
        return reject(
            "invalid_value",
            "/occurred_at: must be an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z",
            "/occurred_at",
        )
    if occurred.tzinfo is None:
        return reject(
            "invalid_value", "/occurred_at: needs a timezone (e.g. 'Z' or '+02:00')", "/occurred_at"
        )
    if occurred > (now or datetime.now(UTC)) + FUTURE_TOLERANCE:
        return reject(
            "future_timestamp",
            f"occurred_at {text} is more than a day in the future — check the producer's clock",
            "/occurred_at",
        )
    if (occurred := storable_moment(occurred)) is None:
        return reject(
            "invalid_value",
            f"/occurred_at: {text} is before year 1 in UTC — check the producer's clock",
            "/occurred_at",
        )
    return occurred


def _payload_with_extra(obj: dict[str, Any], reject: _Reject) -> dict[str, Any] | Rejection:
    """The payload, with the line's top-level fields outside the envelope under ``envelope_extra``."""
    payload = obj.get("payload") or {}
    extra = {key: value for key, value in obj.items() if key not in ENVELOPE_FIELDS}
    if not extra:
        return payload
    # Fields outside the envelope are kept, not dropped: stored under payload.envelope_extra.
    if EXTRA_KEY in payload:
        return reject(
            "invalid_value",
            f"/payload/{EXTRA_KEY}: reserved for top-level fields the envelope does not define "
            f"({', '.join(sorted(extra)[:5])}) — move them into payload or rename this key",
            f"/payload/{EXTRA_KEY}",
        )
    return {**payload, EXTRA_KEY: extra}


def _parsed_event(
    model: _Envelope,
    event_type: str,
    occurred: datetime,
    payload: dict[str, Any],
    derived: uuid.UUID | None,
    redactions: int,
) -> ParsedEvent:
    duration = model.duration_ms if model.duration_ms is not None else payload_duration(payload)
    fingerprint = template = None
    if event_type == "error":
        fingerprint, template = error_fingerprint(model.stage or "", payload.get("message", ""))
    return ParsedEvent(
        event_id=model.event_id or derived,  # type: ignore[arg-type]
        event_type=event_type,
        occurred_at=occurred,
        session_id=model.session_id,
        task_id=model.task_id,
        source=model.source,
        stage=model.stage,
        severity=model.severity,
        status=model.status,
        duration_ms=duration,
        payload_json=encode_payload(payload),
        payload=payload,
        fingerprint=fingerprint,
        message_template=template,
        redactions=redactions,
        occurred_at_text=timestamp_text(model.occurred_at, occurred),
    )


_PAYLOAD_ENCODER = msgspec.json.Encoder()


def encode_payload(payload: dict[str, Any]) -> str:
    """The payload as JSON text for the ``jsonb`` column.

    The text differs from ``json.dumps`` (no spaces, UTF-8 rather than ``\\u`` escapes, ``1e16``
    rather than ``1e+16``) but holds the same values with the same digits, so the stored jsonb is
    identical; msgspec writes it several times faster.
    """
    return _PAYLOAD_ENCODER.encode(payload).decode()
