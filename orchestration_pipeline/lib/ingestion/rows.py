"""Turning a block of lines into COPY-ready rows: events, metrics, artifacts, staged errors, quarantine.

``parse_batch`` is what a parse worker runs; it does no I/O of its own.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestration_pipeline.lib.ingestion.envelope import MAX_LINE_BYTES, ParsedEvent, Rejection
from orchestration_pipeline.lib.ingestion.events import CommonEvent, parse_common_line
from orchestration_pipeline.lib.ingestion.files import Line, LineBlock
from orchestration_pipeline.lib.ingestion.validated import (
    encode_payload,
    parse_line_validated,
    reject_oversized,
)
from orchestration_pipeline.lib.redaction import lines_with_markers

_STORED_RAW_LIMIT = MAX_LINE_BYTES  # an over-long line keeps its first MiB plus its hash and offset


_NULL = "\\N"


def copy_text_line(values: Iterable[Any]) -> bytes:
    """One row in PostgreSQL COPY text format (tab-separated, ``\\N`` for NULL, escapes applied)."""
    return (
        "\t".join(_copy_escape(v if v is None or isinstance(v, str) else str(v)) for v in values) + "\n"
    ).encode()


def _copy_escape(text: str | None) -> str:
    if text is None:
        return _NULL
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def _event_copy_line(
    ev: ParsedEvent | CommonEvent, event_id: str, source_text: str, line_number: int
) -> bytes:
    """The ``events`` COPY row of one event; only free-text fields need escaping (enums, ids and numbers don't)."""
    session, task, source, stage, payload = ev.session_id, ev.task_id, ev.source, ev.stage, ev.payload_json
    free = f"{session}{task}{source}{stage}{payload}"  # one check for all five, as most need no escape
    if "\\" in free or "\t" in free or "\n" in free or "\r" in free:
        session, task, source, stage, payload = map(_copy_escape, (session, task, source, stage, payload))
    else:
        session = _NULL if session is None else session
        task = _NULL if task is None else task
        source = _NULL if source is None else source
        stage = _NULL if stage is None else stage
    duration = _NULL if ev.duration_ms is None else ev.duration_ms
    return (
        f"{event_id}\t{ev.event_type}\t{ev.occurred_at_text}\t{session}\t{task}\t{source}\t{stage}\t"
        f"{ev.severity or _NULL}\t{ev.status or _NULL}\t{duration}\t{payload}\t{source_text}\t{line_number}\n"
    ).encode()


@dataclass
class ParsedBatch:
    """What the writer needs from one batch of lines; cheap to pass between processes."""

    lines: int = 0
    redactions: int = 0
    redactions_by_rule: Counter = field(default_factory=Counter)  # redaction rule id -> redactions
    # (event_id, occurred_at in epoch microseconds, events COPY line, "metric"|"artifact"|"decision"|None,
    #  extra COPY line)
    plain: list[tuple[str, int, bytes, str | None, bytes | None]] = field(default_factory=list)
    errors: list[tuple] = field(default_factory=list)  # ingest_stage rows
    quarantine: list[tuple] = field(default_factory=list)
    quarantine_by_type: Counter = field(default_factory=Counter)
    status_words: Counter = field(default_factory=Counter)  # lines per (source, status word as written)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def parse_batch(
    lines: list[Line] | LineBlock, source_file: str, now: datetime, run_id: uuid.UUID, sha: str
) -> ParsedBatch:
    """Parse, validate and redact a batch of lines into COPY-ready rows (pure: no database).

    Each line goes through :func:`parse_common_line` first and, if that declines it, through
    :func:`parse_line_validated`: together, :func:`parse_line`.
    """
    if isinstance(lines, LineBlock):
        block, lines = lines, lines.lines()
        base = block.offset
        marked = lines_with_markers(
            block.data, [(x.offset - base, x.offset - base + len(x.raw)) for x in lines]
        )
    else:
        marked = None
    out = ParsedBatch(lines=len(lines))
    source_text = _copy_escape(source_file)
    plain, by_rule = out.plain, out.redactions_by_rule
    for i, line in enumerate(lines):
        if line.truncated_total is not None:
            parsed = reject_oversized(line.raw, line.truncated_total, line.full_sha256 or "", by_rule)
        elif marked is not None and i in marked:  # may hold a secret: the full validator redacts
            parsed = parse_line_validated(line.raw, now=now, counts=by_rule)
        elif (common := parse_common_line(line.raw, now, unmarked=marked is not None)) is not None:
            if common.event_type == "error":
                add_event(out, common.parsed_event(), source_file, line.number, source_text)
            else:  # no ParsedEvent (nor UUID object) for the common line
                plain.append(_plain_row(common, common.event_id, source_text, line.number))
                if common.status is not None:
                    out.status_words[common.source, common.status] += 1
            continue
        else:
            parsed = parse_line_validated(line.raw, now=now, counts=by_rule)
        out.redactions += parsed.redactions
        if isinstance(parsed, Rejection):
            out.quarantine_by_type[parsed.failure_type] += 1
            out.quarantine.append(_quarantine_row(parsed, line, run_id, sha, source_file))
        else:
            add_event(out, parsed, source_file, line.number, source_text)
    return out


def add_event(
    batch: ParsedBatch, ev: ParsedEvent, source_file: str, line_number: int, source_text: str | None = None
) -> None:
    """Add a valid event to ``batch``: errors to the staged rows, everything else as COPY lines."""
    if ev.status is not None:
        batch.status_words[ev.source, ev.status] += 1
    if ev.fingerprint is not None:
        batch.errors.append(stage_row(ev, source_file, line_number))
        return
    batch.plain.append(
        _plain_row(ev, str(ev.event_id), source_text or _copy_escape(source_file), line_number)
    )


def _plain_row(
    ev: ParsedEvent | CommonEvent, event_id: str, source_text: str, line_number: int
) -> tuple[str, int, bytes, str | None, bytes | None]:
    """A non-error event as an item of :attr:`ParsedBatch.plain`."""
    row = _event_copy_line(ev, event_id, source_text, line_number)
    if ev.event_type == "metric":
        kind, extra = "metric", _metric_copy_line(ev, event_id)
    elif ev.event_type == "artifact_emit":
        kind, extra = "artifact", _artifact_copy_line(ev, event_id)
    elif ev.event_type == "decision":
        kind, extra = "decision", None
    else:
        kind = extra = None
    return (event_id, _micros(ev.occurred_at), row, kind, extra)


def _metric_copy_line(ev: ParsedEvent | CommonEvent, event_id: str) -> bytes:
    p = ev.payload
    tags = p.get("tags")
    tags_json = encode_payload(tags if isinstance(tags, dict) else {})  # jsonb, as the payload
    return (
        f"{_copy_escape(p['name'])}\t{float(p['value'])!r}\t{_copy_escape(p.get('unit'))}\t"
        f"{_copy_escape(tags_json)}\t{_copy_escape(ev.session_id)}\t{_copy_escape(ev.task_id)}\t"
        f"{event_id}\t{ev.occurred_at_text}\n"
    ).encode()


def _artifact_copy_line(ev: ParsedEvent | CommonEvent, event_id: str) -> bytes:
    p = ev.payload
    return copy_text_line((
        event_id, ev.occurred_at_text, ev.session_id, ev.task_id, p["path"], p["size_bytes"],
        p.get("sha256"), p.get("hash_skipped_reason"),
    ))  # fmt: skip


def stage_row(event: ParsedEvent, source_file: str, line_number: int) -> tuple:
    return (
        event.event_id,
        event.event_type,
        event.occurred_at,
        event.session_id,
        event.task_id,
        event.source,
        event.stage,
        event.severity,
        event.status,
        event.duration_ms,
        event.payload_json,
        source_file,
        line_number,
        event.fingerprint,
        event.message_template,
    )


def _quarantine_row(rej: Rejection, line: Line, run_id: uuid.UUID, sha: str, source_file: str) -> tuple:
    raw_text = rej.raw_text
    truncated = line.truncated_total is not None or len(raw_text) > _STORED_RAW_LIMIT
    if truncated:
        total = line.truncated_total if line.truncated_total is not None else len(line.raw)
        raw_text = (
            raw_text[:_STORED_RAW_LIMIT]
            + f"…[truncated: line is {total} bytes; full line at byte {line.offset} of the source file]"
        )
    raw_text = raw_text.replace("\x00", "\\x00")  # PostgreSQL text cannot hold NUL
    return (
        run_id,
        sha,
        source_file,
        line.number,
        line.offset,
        rej.failure_type,
        rej.detail[:2000],
        rej.json_pointer,
        raw_text,
        rej.raw_sha256,
        truncated,
        rej.derived_event_id,
    )
