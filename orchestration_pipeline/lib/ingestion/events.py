"""The line parser: :func:`parse_line` turns one raw line into a :class:`ParsedEvent` or a
:class:`Rejection` (to be quarantined). It never raises on bad input.

Two validators share that contract. :func:`parse_common_line` (msgspec Structs, here) takes only
the common well-formed line, one it can prove the full validator would accept unchanged, and
answers None for anything else; :func:`~orchestration_pipeline.lib.ingestion.validated.parse_line_validated`
(pydantic) handles every line and is the one that words every rejection. :func:`parse_line` tries
the first and falls back to the second, so what is accepted, rejected, redacted and derived is the
same whichever path a line takes.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

import msgspec

from orchestration_pipeline.lib.ingestion.duplicate_keys import may_repeat_a_key
from orchestration_pipeline.lib.ingestion.envelope import (
    AGENT_SEVERITIES,
    AGENT_STATUSES,
    AGENT_TYPES,
    BIGINT_MAX,
    EVENT_TYPES,
    FLOAT8_MAX,
    FUTURE_TOLERANCE,
    MAX_LINE_BYTES,
    ParsedEvent,
    Rejection,
)
from orchestration_pipeline.lib.ingestion.status_words import MAX_WORD_CHARS
from orchestration_pipeline.lib.ingestion.validated import (
    encode_payload,
    error_fingerprint,
    parse_line_validated,
    payload_duration,
    storable_moment,
    timestamp_text,
)
from orchestration_pipeline.lib.redaction import (
    may_contain_secret,
)


def parse_line(
    raw: bytes,
    *,
    now: datetime | None = None,
    event_id_if_absent: uuid.UUID | None = None,
    counts: Counter | None = None,
) -> ParsedEvent | Rejection:
    """Validate and redact one line (without its newline). Never raises on bad input.

    ``event_id_if_absent``: the id for a line without an event_id instead of one derived from its
    content (a replay: see :attr:`Rejection.derived_event_id`). ``counts``, when given, is
    increased by the redactions of each rule id."""
    now = now or datetime.now(UTC)
    common = parse_common_line(raw, now)  # never a line without an event_id
    if common is not None:
        return common.parsed_event()
    return parse_line_validated(raw, now=now, event_id_if_absent=event_id_if_absent, counts=counts)


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
    payload: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET  # UNSET: the line has no payload


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
    braces = raw.count(b"{")
    if (
        len(raw) > MAX_LINE_BYTES
        or (not unmarked and may_contain_secret(raw))  # also every line with a \u or \/ escape
        or braces + raw.count(b"[") > _FAST_MAX_BRACKETS
    ):
        return None
    try:
        # decoding first rejects invalid UTF-8 anywhere, also in what msgspec would only skip over
        envelope = _FAST_DECODER.decode(raw.decode("utf-8"))
        event_type, payload_struct = _FAST_SPECS[type(envelope)]
        payload = {} if envelope.payload is msgspec.UNSET else envelope.payload
        if payload_struct is not None:
            checked = msgspec.convert(payload, payload_struct)
    except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    # msgspec keeps the last of a repeated key: a line that may repeat one is the full validator's
    # (an envelope field given as null also lands there: it counts as absent here)
    present = 1 + sum(  # 1: event_type, the tag
        value is not None and value is not msgspec.UNSET for value in msgspec.structs.astuple(envelope)
    )
    # braces == 2: the envelope's and the payload's, so the payload holds no nested object
    if may_repeat_a_key(raw, payload, extra_keys=present, flat=braces == 2):
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
