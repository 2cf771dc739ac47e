"""The event envelope on the producer side: constants, field checks, stamping and encoding.

Kept free of pydantic (and of everything in ``orchestration_pipeline.lib``) so that importing the
SDK stays cheap. The constants mirror :mod:`orchestration_pipeline.lib.ingestion.events`; the tests hold
them equal and validate real output with its ``parse_line``.

Every check raises :class:`ValueError` or :class:`TypeError` naming the event type, the field and
the fix: a missing or malformed field is the caller's programming error, reported at once.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from orchestration_pipeline.lib.canonical_json import json_has_nul

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
SEVERITIES = ("debug", "info", "success", "warning", "error", "critical")
STATUSES = ("started", "in_progress", "completed", "succeeded", "paused", "failed", "conflict", "skipped")
# agent.* events take these enums; every other type takes the producer's own word (require_word)
AGENT_STATUSES = ("started", "in_progress", "completed", "paused", "failed", "conflict")
AGENT_SEVERITIES = ("info", "success", "warning", "error", "critical")
MAX_WORD_CHARS = 64  # a status or severity word, after trimming; ingestion quarantines longer ones
MAX_LINE_BYTES = 1024 * 1024  # ingestion quarantines longer lines
BIGINT_MAX = 2**63 - 1  # duration_ms and size_bytes are stored as bigint
FLOAT8_MAX = 1.7976931348623157e308  # metric values are stored as float8

_SHA256 = re.compile(r"[0-9a-f]{64}")


# --- stamping -----------------------------------------------------------------------------

_ID_BATCH = 256
_ids: deque[str] = deque()
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))  # byte 6: version nibble 4
_VARIANT_1 = bytes((b & 0x3F) | 0x80 for b in range(256))  # byte 8: RFC 4122 variant bits 10
# where hex digit j of a UUID goes in its 36-character text form (8-4-4-4-12)
_HEX_TO_TEXT = tuple(j + (j >= 8) + (j >= 12) + (j >= 16) + (j >= 20) for j in range(32))


def _refill_ids() -> None:
    """Format a batch of random UUIDs with a few C-level slice operations instead of one f-string each."""
    raw = bytearray(os.urandom(16 * _ID_BATCH))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT_1)
    digits = raw.hex().encode("ascii")
    text = bytearray(b"-" * (37 * _ID_BATCH))
    for j, at in enumerate(_HEX_TO_TEXT):
        text[at::37] = digits[j::32]
    text[36::37] = b" " * _ID_BATCH
    _ids.extend(text.decode("ascii").split())


def new_event_id() -> str:
    """A random (version 4) UUID string.

    Ids come from ``os.urandom`` in batches of 256 (one syscall instead of one per event);
    ``deque.popleft`` is atomic, so threads never share an id, and a forked child discards the
    ids it inherited (see :func:`_forget_ids_in_child`).
    """
    while True:
        try:
            return _ids.popleft()
        except IndexError:
            _refill_ids()


def _forget_ids_in_child() -> None:
    _ids.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_ids_in_child)

_second: list[tuple[int, str]] = [(-1, "")]  # (unix second, its text up to the dot); replaced whole
_last_stamp: list[str] = [""]


def utc_now(_time_ns=time.time_ns) -> str:  # the default binds time_ns once, for speed
    """Now, in UTC, as RFC 3339 with microseconds: ``2026-01-31T12:00:00.123456+00:00``.

    Never earlier than the last stamp this process handed out: when the wall clock steps back
    (NTP), stamps hold still until it catches up, so a task_end is never stamped before its
    task_start (the projection keeps the later status event)."""
    seconds, micros = divmod(_time_ns() // 1000, 1_000_000)
    cached = _second[0]
    if cached[0] != seconds:
        cached = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds)))
        _second[0] = cached
    stamp = "%s%06d+00:00" % (cached[1], micros)  # noqa: UP031 - faster than an f-string format spec
    if stamp < _last_stamp[0]:  # one fixed-width format: text order is time order
        return _last_stamp[0]
    _last_stamp[0] = stamp
    return stamp


# --- encoding -----------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)  # paths, enums, UUIDs, decimals: their text


def _make_encoder() -> Callable[[Any], str]:
    """A compact, non-ASCII-escaping, NaN-refusing JSON encoder, built once.

    ``json.dumps`` builds a new C encoder on every call; reusing one halves the cost of a small
    event. It has no circular-reference check (a cycle ends in RecursionError, caught below).
    """
    from json import encoder

    if encoder.c_make_encoder is None:  # no C accelerator (e.g. PyPy): the plain path
        return json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
        ).encode
    iterencode = encoder.c_make_encoder(
        None, _json_default, encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def encode(value: Any) -> str:
        return "".join(iterencode(value, 0))

    return encode


_encode = _make_encoder()


def encode_line(event: Mapping[str, Any]) -> bytes:
    """One envelope as a UTF-8 JSON line (with its newline) that ingestion will accept.

    Values JSON cannot hold are written as text (paths, datetimes, UUIDs). Raises ValueError for
    what ingestion would quarantine: NaN/Infinity, NUL characters, lone surrogates, lines over 1 MiB.
    """
    try:
        text = _encode(event)
    except (ValueError, RecursionError) as exc:
        raise ValueError(
            f"{event.get('event_type')}: event fields must be finite JSON values ({exc}) — "
            "replace NaN/Infinity with null or a number, and break circular references"
        ) from None
    if json_has_nul(text):
        raise ValueError(
            f"{event.get('event_type')}: a string contains a NUL character, which PostgreSQL cannot store "
            "— strip '\\x00' before emitting"
        )
    try:
        data = (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{event.get('event_type')}: a string contains a lone UTF-16 surrogate — send valid Unicode "
            "(decode bytes with errors='replace')"
        ) from None
    if len(data) > MAX_LINE_BYTES:
        raise ValueError(
            f"{event.get('event_type')}: the event is {len(data)} bytes; the limit is {MAX_LINE_BYTES} "
            "(1 MiB) — move large content to a file and emit it with artifact()"
        )
    return data


# --- checks -------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def require_str(event_type: str, field: str, value: Any, fix: str, *, empty_ok: bool = False) -> str:
    if value is None:
        raise TypeError(f"{event_type}: {field} is required (a string) — {fix}")
    if not isinstance(value, str):
        raise TypeError(
            f"{event_type}: {field} must be a string, got {type(value).__name__} {_shown(value)} — {fix}"
        )
    if not empty_ok and not value.strip():
        raise ValueError(f"{event_type}: {field} must not be empty — {fix}")
    return value


def optional_str(event_type: str, field: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(
            f"{event_type}: {field} must be a string or None, got {type(value).__name__} {_shown(value)} "
            f"— pass str({field}) or leave it out"
        )
    return value


def require_int(
    event_type: str, field: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    if value is None:
        raise TypeError(f"{event_type}: {field} is required (an int)")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{event_type}: {field} must be an int, got {type(value).__name__} {_shown(value)} — pass int({field})"
        )
    if minimum is not None and value < minimum:
        raise ValueError(f"{event_type}: {field} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{event_type}: {field} must be <= {maximum}, got {_shown(value)}")
    return value


def require_bool(event_type: str, field: str, value: Any) -> bool:
    if value is None:
        raise TypeError(f"{event_type}: {field} is required (True or False)")
    if not isinstance(value, bool):
        raise TypeError(
            f"{event_type}: {field} must be True or False, got {type(value).__name__} {_shown(value)} "
            f"— pass bool({field})"
        )
    return value


def require_number(event_type: str, field: str, value: Any) -> int | float:
    if value is None:
        raise TypeError(f"{event_type}: {field} is required (an int or float)")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{event_type}: {field} must be an int or float, got {type(value).__name__} {_shown(value)} "
            f"— pass a number, e.g. float({field})"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{event_type}: {field} must be finite, got {value} — skip the metric or send 0")
    elif not -FLOAT8_MAX <= value <= FLOAT8_MAX:
        raise ValueError(
            f"{event_type}: {field} {_shown(value)} does not fit a double — send a smaller number"
        )
    return value


def require_choice(event_type: str, field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(
            f"{event_type}: {field} {_shown(value)} is not allowed; use one of {', '.join(allowed)}"
        )
    return value


def require_word(event_type: str, field: str, value: Any) -> str:
    """A status or severity outside the agent.* events: any word of 1 to 64 characters after
    trimming whitespace (``ok``, ``SUCCESS``, ``upstream_failed``); ingestion stores it trimmed."""
    if not isinstance(value, str):
        raise TypeError(
            f"{event_type}: {field} must be a string (a word of 1 to {MAX_WORD_CHARS} characters), "
            f"got {type(value).__name__} {_shown(value)}"
        )
    word = value.strip()
    if not word:
        raise ValueError(
            f"{event_type}: {field} must not be empty — leave it out or pass a word such as 'ok'"
        )
    if len(word) > MAX_WORD_CHARS:
        raise ValueError(
            f"{event_type}: {field} is {len(word)} characters; the limit is {MAX_WORD_CHARS} — pass a short "
            "word (e.g. 'ok', 'failed') and put details in the payload"
        )
    return value


def require_mapping(event_type: str, field: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{event_type}: {field} must be a dict, got {type(value).__name__} {_shown(value)}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(
                f"{event_type}: {field} keys must be strings, got {type(key).__name__} {_shown(key)}"
            )
    return value


def merge_fields(event_type: str, payload: dict[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` plus the caller's extra ``fields``; a field the helper sets itself is refused."""
    for key in fields:
        if key in payload:
            raise ValueError(
                f"{event_type}: {key!r} is set by the helper from its own argument — do not pass it as an extra field"
            )
    payload.update(fields)
    return payload


def _check_artifact(payload: Mapping[str, Any]) -> None:
    require_str("artifact_emit", "payload.path", payload.get("path"), "pass the artifact's file path")
    require_int(
        "artifact_emit", "payload.size_bytes", payload.get("size_bytes"), minimum=0, maximum=BIGINT_MAX
    )
    sha, reason = payload.get("sha256"), payload.get("hash_skipped_reason")
    if sha is not None:
        if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
            raise ValueError(
                "artifact_emit: payload.sha256 must be 64 lowercase hex digits — use hashlib's hexdigest()"
            )
    elif not (isinstance(reason, str) and reason.strip()):
        raise ValueError(
            "artifact_emit: needs payload.sha256 or payload.hash_skipped_reason — use writer.artifact(path), "
            "which hashes the file or says why it did not"
        )


def _check_agent(event_type: str, payload: Mapping[str, Any]) -> None:
    require_str(
        event_type, "payload.agent_type", payload.get("agent_type"), "name the kind of agent, e.g. 'coder'"
    )
    require_str(event_type, "payload.agent_name", payload.get("agent_name"), "name the agent instance")
    require_str(
        event_type,
        "payload.task_description",
        payload.get("task_description"),
        "describe what the agent works on",
        empty_ok=True,
    )
    optional_str(event_type, "payload.project_id", payload.get("project_id"))


def check_event(
    event_type: Any,
    payload: Any,
    *,
    stage: Any = None,
    severity: Any = None,
    status: Any = None,
    duration_ms: Any = None,
    task_id: Any = None,
) -> None:
    """Check one event's envelope fields and the payload fields its type requires."""
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event_type {_shown(event_type)}; use one of {', '.join(EVENT_TYPES)}")
    require_mapping(event_type, "payload", payload)
    optional_str(event_type, "task_id", task_id)
    optional_str(event_type, "stage", stage)
    agent = event_type in AGENT_TYPES
    if severity is not None:
        if agent:
            require_choice(event_type, "severity", severity, AGENT_SEVERITIES)
        else:
            require_word(event_type, "severity", severity)
    if status is not None:
        if agent:
            require_choice(event_type, "status", status, AGENT_STATUSES)
        else:
            require_word(event_type, "status", status)
    if duration_ms is not None:
        require_int(event_type, "duration_ms", duration_ms, minimum=0, maximum=BIGINT_MAX)

    if event_type == "task_end":
        require_bool(event_type, "payload.success", payload.get("success"))
        require_int(
            event_type, "payload.duration_ms", payload.get("duration_ms"), minimum=0, maximum=BIGINT_MAX
        )
    elif event_type == "command_end":
        require_int(event_type, "payload.exit_code", payload.get("exit_code"))
        require_int(
            event_type, "payload.duration_ms", payload.get("duration_ms"), minimum=0, maximum=BIGINT_MAX
        )
    elif event_type == "decision":
        require_str(
            event_type, "payload.rationale", payload.get("rationale"), "say why the decision was made"
        )
    elif event_type == "artifact_emit":
        _check_artifact(payload)
    elif event_type == "error":
        require_str(event_type, "stage", stage, "name the stage that failed, e.g. 'db_insert'")
        require_str(event_type, "payload.message", payload.get("message"), "say what went wrong")
    elif event_type == "metric":
        require_str(event_type, "payload.name", payload.get("name"), "name the metric, e.g. 'rows_inserted'")
        require_number(event_type, "payload.value", payload.get("value"))
        optional_str(event_type, "payload.unit", payload.get("unit"))
        if payload.get("tags") is not None:
            require_mapping(event_type, "payload.tags", payload["tags"])
    elif event_type == "policy_violation":
        for field in ("host", "file", "policy", "rule"):
            require_str(
                event_type,
                f"payload.{field}",
                payload.get(field),
                "the policy_violations_complete check needs it",
            )
    elif agent:
        _check_agent(event_type, payload)


def build_event(
    event_type: str,
    payload: dict[str, Any],
    *,
    source: str,
    session_id: str,
    task_id: str | None = None,
    stage: str | None = None,
    severity: str | None = None,
    status: str | None = None,
    duration_ms: int | None = None,
) -> dict[str, Any]:
    """A stamped envelope (fresh ``event_id``, ``occurred_at`` now); fields that are None are left out."""
    event: dict[str, Any] = {
        "event_id": new_event_id(),
        "event_type": event_type,
        "occurred_at": utc_now(),
        "session_id": session_id,
        "source": source,
    }
    if task_id is not None:
        event["task_id"] = task_id
    if stage is not None:
        event["stage"] = stage
    if severity is not None:
        event["severity"] = severity
    if status is not None:
        event["status"] = status
    if duration_ms is not None:
        event["duration_ms"] = duration_ms
    event["payload"] = payload
    return event


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def file_stem(source: str, pid: int, counter: int, random_hex: str) -> str:
    """A file name unique across processes and hosts: source, UTC time, pid, a counter and random hex."""
    safe = _UNSAFE.sub("-", source).strip("-")[:40] or "events"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{safe}.{stamp}.{pid}.{counter:06d}.{random_hex}"
