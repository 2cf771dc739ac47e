"""The event envelope: its types and fields, the pydantic models that define them, the JSON Schema
generated from those models, and what a parsed line becomes (:class:`ParsedEvent` or
:class:`Rejection`).

Envelope fields are top level; fields particular to one event type live in ``payload``.
``schemas/event_envelope.schema.json`` (shipped in the package) is generated from these models;
``orchestration-pipeline events schema`` prints it.

``status`` and ``severity`` are enums only on the ``agent.*`` events. On every other type they are
the producer's own word, stored as given after trimming whitespace, 1 to 64 characters
(:func:`~orchestration_pipeline.lib.ingestion.status_words.check_word`); what a word means is the
business of :mod:`~orchestration_pipeline.lib.ingestion.status_words`, not of the parser.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal, Union

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
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestration_pipeline.lib.ingestion.status_words import MAX_WORD_CHARS, WordError, check_word

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
