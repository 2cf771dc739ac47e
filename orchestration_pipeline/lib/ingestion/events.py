"""The event envelope: models, the line parser, and error fingerprints.

Envelope fields are top level; fields particular to one event type live in ``payload``.
``schemas/event_envelope.schema.json`` (shipped in the package) is generated from these models;
``orchestration-pipeline events schema`` prints it.

:func:`parse_line` turns one raw line into either a :class:`ParsedEvent` or a
:class:`Rejection` (to be quarantined). It never raises on bad input.

Two validators share that contract. :func:`parse_common_line` (msgspec Structs) takes only the
common well-formed line, one it can prove the full validator would accept unchanged, and answers
None for anything else; :func:`parse_line_validated` (pydantic) handles every line and is the one
that words every rejection. :func:`parse_line` tries the first and falls back to the second, so
what is accepted, rejected, redacted and derived is the same whichever path a line takes.

``status`` and ``severity`` are enums only on the ``agent.*`` events. On every other type they are
the producer's own word, stored as given after trimming whitespace, 1 to 64 characters
(:func:`~orchestration_pipeline.lib.ingestion.status_words.check_word`); what a word means is the
business of :mod:`~orchestration_pipeline.lib.ingestion.status_words`, not of the parser.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal, Union

import msgspec
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestration_pipeline.lib.canonical_json import json_has_nul
from orchestration_pipeline.lib.ingestion.status_words import MAX_WORD_CHARS, WordError, check_word
from orchestration_pipeline.lib.redaction import (
    may_contain_secret,
    redact_raw_line,
    redact_text,
    redact_value,
)

MAX_LINE_BYTES = 1024 * 1024  # a line (hence a payload) over 1 MiB is quarantined
FUTURE_TOLERANCE = timedelta(days=1)
EVENT_ID_NAMESPACE = uuid.UUID("6f1c1e0a-3c4b-5d7e-9a10-2b3c4d5e6f70")

CORE_TYPES = ("task_start", "task_end", "command_start", "command_end")
AGENT_TYPES = (
    "agent.started",
    "agent.progress",
    "agent.completed",
    "agent.conflict_detected",
    "agent.paused",
    "agent.error",
)
EVENT_TYPES = (*CORE_TYPES, "decision", "artifact_emit", "error", "metric", "policy_violation", *AGENT_TYPES)
# The severities the pipeline writes itself (also the meanings severity words are mapped to), and
# the status words it writes itself; outside agent.* events, producers may write any word.
SEVERITIES = ("debug", "info", "success", "warning", "error", "critical")
STATUSES = ("started", "in_progress", "completed", "succeeded", "paused", "failed", "conflict", "skipped")
# agent.* events: these enums, and nothing else
AGENT_STATUSES = ("started", "in_progress", "completed", "paused", "failed", "conflict")
AGENT_SEVERITIES = ("info", "success", "warning", "error", "critical")


BIGINT_MAX = 2**63 - 1  # columns like duration_ms and size_bytes are bigint
FLOAT8_MAX = 1.7976931348623157e308  # metric values are stored as float8
NonNegInt = Annotated[StrictInt, Field(ge=0, le=BIGINT_MAX)]
Number = Annotated[StrictInt, Field(ge=-int(FLOAT8_MAX), le=int(FLOAT8_MAX))] | StrictFloat


def _producer_word(value: Any) -> str:
    try:
        return check_word(value, "the word")
    except WordError as exc:
        raise PydanticCustomError("producer_word", "{detail}", {"detail": str(exc)}) from None


#: A status or severity outside the agent.* events: the producer's own word, stored trimmed.
ProducerWord = Annotated[
    str,
    PlainValidator(_producer_word),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_WORD_CHARS,
            "description": (
                f"The producer's own word (e.g. ok, SUCCESS, failure), at most {MAX_WORD_CHARS} characters "
                "after trimming whitespace; stored as given (trimmed). A synonym map gives it a meaning."
            ),
        }
    ),
]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow")


class TaskEndPayload(_Payload):
    success: StrictBool
    duration_ms: NonNegInt


class CommandEndPayload(_Payload):
    exit_code: StrictInt
    duration_ms: NonNegInt


class DecisionPayload(_Payload):
    rationale: Annotated[StrictStr, Field(min_length=1)]


class ArtifactPayload(_Payload):
    path: Annotated[StrictStr, Field(min_length=1)]
    size_bytes: NonNegInt
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    hash_skipped_reason: StrictStr | None = None

    @model_validator(mode="after")
    def _hash_or_reason(self) -> ArtifactPayload:
        if self.sha256 is None and not self.hash_skipped_reason:
            raise ValueError("artifact_emit needs sha256 or hash_skipped_reason")
        return self


class ErrorPayload(_Payload):
    message: Annotated[StrictStr, Field(min_length=1)]


class MetricPayload(_Payload):
    name: Annotated[StrictStr, Field(min_length=1)]
    value: Number
    unit: StrictStr | None = None
    tags: dict[str, Any] | None = None


class PolicyViolationPayload(_Payload):
    # Accepted with nulls so nothing is lost; the policy_violations_complete check names the producer.
    host: StrictStr | None = None
    file: StrictStr | None = None
    policy: StrictStr | None = None
    rule: StrictStr | None = None


class AgentPayload(_Payload):
    agent_type: Annotated[StrictStr, Field(min_length=1)]
    agent_name: Annotated[StrictStr, Field(min_length=1)]
    task_description: StrictStr
    project_id: StrictStr | None = None


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    event_id: uuid.UUID | None = None
    occurred_at: Annotated[StrictStr, Field(json_schema_extra={"format": "date-time"})]
    session_id: StrictStr | None = None
    task_id: StrictStr | None = None
    source: StrictStr | None = None
    stage: StrictStr | None = None
    severity: ProducerWord | None = None
    status: ProducerWord | None = None
    duration_ms: NonNegInt | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


def _typed(event_type: str, payload_model: type[_Payload] | None, **extra: Any) -> type[_Envelope]:
    fields: dict[str, Any] = {"event_type": (Literal[event_type], ...)}
    if payload_model is not None:
        fields["payload"] = (payload_model, ...)
    fields.update(extra)
    from pydantic import create_model

    name = "".join(part.capitalize() for part in re.split(r"[._]", event_type)) + "Event"
    return create_model(name, __base__=_Envelope, **fields)


_AGENT_EXTRA = {
    "status": (Literal[AGENT_STATUSES] | None, None),  # type: ignore[valid-type]
    "severity": (Literal[AGENT_SEVERITIES] | None, None),  # type: ignore[valid-type]
}
EVENT_MODELS: dict[str, type[_Envelope]] = {
    "task_start": _typed("task_start", None),
    "task_end": _typed("task_end", TaskEndPayload),
    "command_start": _typed("command_start", None),
    "command_end": _typed("command_end", CommandEndPayload),
    "decision": _typed("decision", DecisionPayload),
    "artifact_emit": _typed("artifact_emit", ArtifactPayload),
    "error": _typed("error", ErrorPayload, stage=(Annotated[StrictStr, Field(min_length=1)], ...)),
    "metric": _typed("metric", MetricPayload),
    "policy_violation": _typed("policy_violation", PolicyViolationPayload),
    **{t: _typed(t, AgentPayload, **_AGENT_EXTRA) for t in AGENT_TYPES},
}
_ADAPTERS = {t: TypeAdapter(m) for t, m in EVENT_MODELS.items()}
ENVELOPE_FIELDS = frozenset(_Envelope.model_fields) | {"event_type"}
EXTRA_KEY = "envelope_extra"  # where a line's top-level fields outside the envelope are kept


@lru_cache(maxsize=1)
def envelope_json_schema() -> dict[str, Any]:
    """The JSON Schema of the envelope: one ``oneOf`` branch per event type."""
    adapter = TypeAdapter(Annotated[Union[tuple(EVENT_MODELS.values())], Field(discriminator="event_type")])  # noqa: UP007
    schema = adapter.json_schema(ref_template="#/$defs/{model}")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://orchestration-pipeline.dev/schemas/event_envelope.schema.json"
    schema["title"] = "orchestration-pipeline event envelope"
    schema["description"] = (
        "One JSON object per line. event_type and occurred_at (RFC 3339 with a timezone) are required; "
        "event_id (UUID) is derived from the content when absent. Type-specific fields live in payload. "
        f"Top-level fields the envelope does not define are kept, under payload.{EXTRA_KEY}. "
        "status and severity are enums on agent.* events; on every other type they are the producer's "
        f"own word (1 to {MAX_WORD_CHARS} characters after trimming whitespace), stored as given."
    )
    return schema


# --- parsing ------------------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: frozen dataclasses are measurably slower to build on this hot path
class ParsedEvent:
    """A valid, redacted event ready to stage."""

    event_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    session_id: str | None
    task_id: str | None
    source: str | None
    stage: str | None
    severity: str | None
    status: str | None
    duration_ms: int | None
    payload_json: str
    payload: dict[str, Any]
    fingerprint: str | None  # error events only
    message_template: str | None
    redactions: int
    occurred_at_text: str  # occurred_at as COPY text (see timestamp_text)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A line that must be quarantined, with why and where."""

    failure_type: str
    detail: str
    json_pointer: str
    raw_text: str  # redacted; invalid UTF-8 bytes appear as \\xNN escapes
    raw_sha256: str
    redactions: int
    # the id derived from the original content of a JSON object without an event_id: a replay of
    # the (redacted) stored line must use it, not one derived from the redacted text
    derived_event_id: uuid.UUID | None = None


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
    failure: str, detail: str, pointer: str, raw: bytes, text: str | None = None, redactions: int = 0
) -> Rejection:
    if text is None:
        text = raw.decode("utf-8", errors="backslashreplace")
    redacted, n = redact_raw_line(text)
    detail, n_detail = redact_text(detail)
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


def reject_oversized(prefix: bytes, total_bytes: int, full_sha256: str) -> Rejection:
    """The rejection of a line too long to read whole: described by its real size and full hash."""
    rejection = _reject("payload_too_large", _too_large_detail(total_bytes), "/payload", prefix)
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


def parse_line(
    raw: bytes, *, now: datetime | None = None, event_id_if_absent: uuid.UUID | None = None
) -> ParsedEvent | Rejection:
    """Validate and redact one line (without its newline). Never raises on bad input.

    ``event_id_if_absent``: the id for a line without an event_id instead of one derived from its
    content (a replay: see :attr:`Rejection.derived_event_id`)."""
    now = now or datetime.now(UTC)
    common = parse_common_line(raw, now)  # never a line without an event_id
    if common is not None:
        return common.parsed_event()
    return parse_line_validated(raw, now=now, event_id_if_absent=event_id_if_absent)


def parse_line_validated(
    raw: bytes, *, now: datetime | None = None, event_id_if_absent: uuid.UUID | None = None
) -> ParsedEvent | Rejection:
    """The full validator (pydantic): any line, with the detail and JSON pointer of every rejection."""
    ids: dict[str, uuid.UUID] = {}
    result = _parse_validated(raw, now, event_id_if_absent, ids)
    if isinstance(result, Rejection) and "derived" in ids:
        return dataclasses.replace(result, derived_event_id=ids["derived"])
    return result


def _parse_validated(
    raw: bytes, now: datetime | None, event_id_if_absent: uuid.UUID | None, ids: dict[str, uuid.UUID]
) -> ParsedEvent | Rejection:
    decoded = _decode_object(raw)
    if isinstance(decoded, Rejection):
        return decoded
    obj, text = decoded
    # The id is derived from the original content; everything after this sees only redacted data.
    derived = None
    if obj.get("event_id") is None:
        derived = ids["derived"] = event_id_if_absent or derive_event_id(obj)
    redactions = 0
    if may_contain_secret(raw):
        obj, redactions = redact_value(obj)
    if redactions:
        # what a rejection stores: the redacted object (escaped or camelCase keys included), not the raw text
        text = json.dumps(obj, ensure_ascii=False)

    def reject(failure: str, detail: str, pointer: str) -> Rejection:
        return _reject(failure, detail, pointer, raw, text, redactions)

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


def _decode_object(raw: bytes) -> tuple[dict[str, Any], str] | Rejection:
    """The line as a JSON object (and its text), or why it is not one PostgreSQL can store."""
    if len(raw) > MAX_LINE_BYTES:
        return _reject("payload_too_large", _too_large_detail(len(raw)), "/payload", raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _reject("invalid_utf8", f"invalid UTF-8 at byte {exc.start} — write events as UTF-8", "", raw)
    try:
        obj = _loads(text)
    except (ValueError, RecursionError) as exc:
        detail = (
            f"malformed JSON: {exc}" if isinstance(exc, ValueError) else "malformed JSON: nested too deeply"
        )
        return _reject("malformed_json", detail, "", raw, text)
    if not isinstance(obj, dict):
        return _reject("not_an_object", f"expected a JSON object, got {type(obj).__name__}", "", raw, text)
    if "\\u" in text and (problem := _unstorable_escape(obj)):
        return _reject("invalid_value", problem, "", raw, text)
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


# --- the common path ------------------------------------------------------------------------
#
# msgspec decodes and validates a line straight into a Struct of the envelope fields, with the
# payload fields its type requires checked by converting the payload to a second Struct. It
# mirrors the pydantic models above and is narrower than them: whatever it cannot vouch for goes
# to parse_line_validated, which then accepts or words the rejection exactly as before. Sent on:
# a line that may hold a secret or any escape sequence (redaction, NUL and surrogate checks,
# escaped keys), a field outside the envelope, deep nesting, no event_id or one not in canonical
# form (the id is then derived or normalised), a timestamp without a zone or in the future, a
# status or severity word with whitespace to trim, and every invalid line.

_PAYLOAD_ENCODER = msgspec.json.Encoder()


def encode_payload(payload: dict[str, Any]) -> str:
    """The payload as JSON text for the ``jsonb`` column.

    The text differs from ``json.dumps`` (no spaces, UTF-8 rather than ``\\u`` escapes, ``1e16``
    rather than ``1e+16``) but holds the same values with the same digits, so the stored jsonb is
    identical; msgspec writes it several times faster.
    """
    return _PAYLOAD_ENCODER.encode(payload).decode()


_FAST_MAX_BRACKETS = 64  # an upper bound of the nesting depth, far below any recursion limit
_UUID_TEXT = r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z"  # str(uuid.UUID(x)) == x
_FastNonNegInt = Annotated[int, msgspec.Meta(ge=0, le=BIGINT_MAX)]
_FastNonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
# Python's re: "$" would also match before a trailing newline, pydantic's pattern does not; \Z does not.
_FastSha256 = Annotated[str, msgspec.Meta(pattern=r"\A[0-9a-f]{64}\Z")]
_FAST_INT_FLOAT_MAX = int(FLOAT8_MAX)  # msgspec bounds must fit an int64: metric values are checked by hand
# a producer's status or severity word; one with whitespace to trim is left to the full validator
_FastWord = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_WORD_CHARS)]


class _FastEnvelope(msgspec.Struct, tag_field="event_type", forbid_unknown_fields=True, kw_only=True):
    event_id: Annotated[str, msgspec.Meta(pattern=_UUID_TEXT)]
    occurred_at: str
    session_id: str | None = None
    task_id: str | None = None
    source: str | None = None
    stage: str | None = None
    severity: _FastWord | None = None
    status: _FastWord | None = None
    duration_ms: _FastNonNegInt | None = None
    payload: dict[str, Any] = {}


class _FastTaskEnd(msgspec.Struct):
    success: bool
    duration_ms: _FastNonNegInt


class _FastCommandEnd(msgspec.Struct):
    exit_code: int
    duration_ms: _FastNonNegInt


class _FastDecision(msgspec.Struct):
    rationale: _FastNonEmpty


class _FastArtifact(msgspec.Struct):
    path: _FastNonEmpty
    size_bytes: _FastNonNegInt
    sha256: _FastSha256 | None = None
    hash_skipped_reason: str | None = None


class _FastError(msgspec.Struct):
    message: _FastNonEmpty


class _FastMetric(msgspec.Struct):
    name: _FastNonEmpty
    value: int | float
    unit: str | None = None
    tags: dict[str, Any] | None = None


class _FastPolicyViolation(msgspec.Struct):
    host: str | None = None
    file: str | None = None
    policy: str | None = None
    rule: str | None = None


class _FastAgent(msgspec.Struct):
    agent_type: _FastNonEmpty
    agent_name: _FastNonEmpty
    task_description: str
    project_id: str | None = None


_FAST_PAYLOADS: dict[str, type[msgspec.Struct] | None] = {
    "task_start": None,
    "task_end": _FastTaskEnd,
    "command_start": None,
    "command_end": _FastCommandEnd,
    "decision": _FastDecision,
    "artifact_emit": _FastArtifact,
    "error": _FastError,
    "metric": _FastMetric,
    "policy_violation": _FastPolicyViolation,
    **dict.fromkeys(AGENT_TYPES, _FastAgent),
}


def _fast_type(event_type: str, payload_struct: type[msgspec.Struct] | None) -> type[_FastEnvelope]:
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    if payload_struct is not None:
        fields.append(("payload", dict[str, Any]))  # required, as in the pydantic model
    if event_type == "error":
        fields.append(("stage", _FastNonEmpty))
    if event_type in AGENT_TYPES:
        fields.append(("severity", Literal[AGENT_SEVERITIES] | None, None))  # type: ignore[valid-type]
        fields.append(("status", Literal[AGENT_STATUSES] | None, None))  # type: ignore[valid-type]
    name = "Fast" + "".join(part.capitalize() for part in re.split(r"[._]", event_type))
    return msgspec.defstruct(name, fields, bases=(_FastEnvelope,), tag=event_type, kw_only=True)


_FAST_TYPES = {t: _fast_type(t, _FAST_PAYLOADS[t]) for t in EVENT_TYPES}
# (event_type, payload Struct) by envelope Struct, so the tag needs no attribute of its own
_FAST_SPECS = {cls: (t, _FAST_PAYLOADS[t]) for t, cls in _FAST_TYPES.items()}
_FAST_DECODER = msgspec.json.Decoder(Union[tuple(_FAST_TYPES.values())])  # noqa: UP007 (a runtime tuple)


class CommonEvent(msgspec.Struct, gc=False):
    """A line accepted by :func:`parse_common_line`: valid, nothing to redact, ``event_id`` given.

    ``event_id`` is the canonical text of the id (what ``str(uuid.UUID(...))`` gives), so the
    writer need not build a UUID object per line. (A Struct: cheaper to build than a dataclass.)
    """

    event_id: str
    event_type: str
    occurred_at: datetime
    occurred_at_text: str
    session_id: str | None
    task_id: str | None
    source: str | None
    stage: str | None
    severity: str | None
    status: str | None
    duration_ms: int | None
    payload_json: str
    payload: dict[str, Any]

    def parsed_event(self) -> ParsedEvent:
        """The same event as :func:`parse_line_validated` returns it."""
        fingerprint = template = None
        if self.event_type == "error":
            fingerprint, template = error_fingerprint(self.stage or "", self.payload.get("message", ""))
        return ParsedEvent(
            event_id=uuid.UUID(self.event_id),
            event_type=self.event_type,
            occurred_at=self.occurred_at,
            session_id=self.session_id,
            task_id=self.task_id,
            source=self.source,
            stage=self.stage,
            severity=self.severity,
            status=self.status,
            duration_ms=self.duration_ms,
            payload_json=self.payload_json,
            payload=self.payload,
            fingerprint=fingerprint,
            message_template=template,
            redactions=0,
            occurred_at_text=self.occurred_at_text,
        )


def parse_common_line(raw: bytes, now: datetime, *, unmarked: bool = False) -> CommonEvent | None:
    """The common well-formed line, validated by msgspec; None means "ask parse_line_validated".

    Never raises on bad input. Whenever it returns an event, :func:`parse_line_validated` would
    return the same event with nothing redacted (the property tests hold the two together).
    ``unmarked=True`` tells it that ``may_contain_secret(raw)`` is already known to be false.
    """
    if (
        len(raw) > MAX_LINE_BYTES
        or (not unmarked and may_contain_secret(raw))  # also every line with a \u or \/ escape
        or raw.count(b"{") + raw.count(b"[") > _FAST_MAX_BRACKETS
    ):
        return None
    try:
        # decoding first rejects invalid UTF-8 anywhere, also in what msgspec would only skip over
        envelope = _FAST_DECODER.decode(raw.decode("utf-8"))
        event_type, payload_struct = _FAST_SPECS[type(envelope)]
        payload = envelope.payload
        if payload_struct is not None:
            checked = msgspec.convert(payload, payload_struct)
    except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if event_type == "artifact_emit":
        if checked.sha256 is None and not checked.hash_skipped_reason:
            return None
    elif event_type == "metric":
        if type(checked.value) is int and not -_FAST_INT_FLOAT_MAX <= checked.value <= _FAST_INT_FLOAT_MAX:
            return None
    severity, status = envelope.severity, envelope.status
    if (severity is not None and (severity[0].isspace() or severity[-1].isspace())) or (
        status is not None and (status[0].isspace() or status[-1].isspace())
    ):
        return None  # stored trimmed: the full validator trims it
    text = envelope.occurred_at
    try:
        occurred = datetime.fromisoformat(text)
    except ValueError:
        return None
    if occurred.tzinfo is None or occurred > now + FUTURE_TOLERANCE:
        return None
    if (occurred := storable_moment(occurred)) is None:
        return None
    duration = envelope.duration_ms
    if duration is None:
        duration = payload_duration(payload)
    return CommonEvent(
        envelope.event_id,
        event_type,
        occurred,
        timestamp_text(text, occurred),
        envelope.session_id,
        envelope.task_id,
        envelope.source,
        envelope.stage,
        severity,
        status,
        duration,
        encode_payload(payload),
        payload,
    )
