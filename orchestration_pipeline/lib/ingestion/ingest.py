"""Exactly-once ingestion of JSON-lines event files into ``events``.

How exactly-once holds:

* **Files** are identified by content (sha256). A file's rows, its quarantine rows, its error
  groups and its ``ingest_files`` ledger entry commit in **one transaction**, under an advisory
  lock on the file hash and one on its path (a grown file's bad lines already pending from an
  earlier version count as duplicates, so versions of one path are ingested one at a time). A
  re-dropped or renamed file finds its ledger entry and is skipped; a process killed mid-file
  leaves nothing, and the rerun ingests the whole file once.
* **Lines** have an ``event_id`` (given, or derived from the content). Rows are COPY'd into a
  session temp table and moved with ``INSERT … ON CONFLICT DO NOTHING``, so a line re-sent in
  another file counts as a duplicate. Error lines are tracked in ``error_occurrences`` so a
  re-sent error is a duplicate too, not a second count.

Every non-blank line ends up in exactly one bucket, so ``lines == accepted + quarantined +
duplicates + collapsed`` for each file and for the run.

For large files, parsing (CPU-bound Python) runs in worker processes that hand back COPY-ready
text, while this process writes the previous batch; a thread would fight the parser for the GIL.
This process reads the file in blocks of whole lines and sends each block as it is, so it does no
per-line work of its own. At most a few batches are in flight, so memory is bounded by the batch
size, whatever the file size.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg.types.json import Jsonb

from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.db import SchemaGate
from orchestration_pipeline.lib.ingestion.events import (
    MAX_LINE_BYTES,
    CommonEvent,
    ParsedEvent,
    Rejection,
    encode_payload,
    parse_common_line,
    parse_line_validated,
    reject_oversized,
)
from orchestration_pipeline.lib.ingestion.parse_worker import read_frame, write_frame
from orchestration_pipeline.lib.project_files import runtime_sql
from orchestration_pipeline.lib.redaction.patterns import REDACTED, lines_with_markers
from orchestration_pipeline.lib.telemetry import record_metric

INGEST_TABLES = (
    "events",
    "artifacts",
    "metrics",
    "ingest_files",
    "quarantine",
    "error_groups",
    "error_occurrences",
    "error_group_runs",
    "ingest_runs",
)
EVENT_FILE_SUFFIXES = (".jsonl", ".ndjson")  # matched case-insensitively
UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_BATCH_ROWS = 10_000
_FILE_ATTEMPTS = 3
_STORED_RAW_LIMIT = MAX_LINE_BYTES  # an over-long line keeps its first MiB plus its hash and offset

_STAGE_COLUMNS = (
    "event_id",
    "event_type",
    "occurred_at",
    "session_id",
    "task_id",
    "source",
    "stage",
    "severity",
    "status",
    "duration_ms",
    "payload",
    "source_file",
    "source_line",
    "fingerprint",
    "message_template",
)
_QUARANTINE_COLUMNS = (
    "run_id",
    "file_sha256",
    "source_file",
    "source_line",
    "byte_offset",
    "failure_type",
    "detail",
    "json_pointer",
    "raw_line",
    "raw_sha256",
    "raw_truncated",
    "derived_event_id",
)
_EVENT_COLUMNS = (
    "event_id, event_type, occurred_at, session_id, task_id, source, stage, severity, status, "
    "duration_ms, payload, source_file, source_line"
)

# Errors: record each new occurrence, fold them into their groups, and give each group one
# event per run that carries the run's count (inserted the first time, bumped afterwards).
MOVE_ERRORS_SQL = f"""
WITH staged AS (
    SELECT DISTINCT ON (event_id, occurred_at) *
    FROM ingest_stage WHERE fingerprint IS NOT NULL
    ORDER BY event_id, occurred_at, source_line
), fresh AS (
    INSERT INTO error_occurrences (event_id, occurred_at, fingerprint, run_id)
    SELECT event_id, occurred_at, fingerprint, %(run_id)s FROM staged
    ON CONFLICT DO NOTHING
    RETURNING event_id, occurred_at
), rows AS (
    SELECT s.*, row_number() OVER w AS rn, count(*) OVER (PARTITION BY s.fingerprint) AS n
    FROM staged s JOIN fresh USING (event_id, occurred_at)
    WINDOW w AS (PARTITION BY s.fingerprint ORDER BY s.occurred_at, s.source_line, s.event_id)
), grouped AS (
    INSERT INTO error_groups AS g (fingerprint, stage, message_template, sample_message, count,
                                   first_seen, last_seen, sample_event_ids)
    SELECT fingerprint, min(stage), min(message_template), min(payload->>'message') FILTER (WHERE rn = 1),
           max(n), min(occurred_at), max(occurred_at),
           (array_agg(event_id ORDER BY rn) FILTER (WHERE rn <= 5))
    FROM rows GROUP BY fingerprint
    ON CONFLICT (fingerprint) DO UPDATE SET
        count = g.count + EXCLUDED.count,
        first_seen = least(g.first_seen, EXCLUDED.first_seen),
        last_seen = greatest(g.last_seen, EXCLUDED.last_seen),
        sample_event_ids = (g.sample_event_ids || EXCLUDED.sample_event_ids)[1:5]
), per_run AS (
    INSERT INTO error_group_runs AS r (fingerprint, run_id, event_id, occurred_at, count)
    SELECT fingerprint, %(run_id)s, event_id, occurred_at, n FROM rows WHERE rn = 1
    ON CONFLICT (fingerprint, run_id) DO UPDATE SET count = r.count + EXCLUDED.count
    RETURNING fingerprint, event_id, occurred_at, count, (xmax = 0) AS created
), represented AS (
    INSERT INTO events ({_EVENT_COLUMNS})
    SELECT rows.event_id, rows.event_type, rows.occurred_at, rows.session_id, rows.task_id, rows.source,
           rows.stage, rows.severity, rows.status, rows.duration_ms,
           rows.payload || jsonb_build_object('count', p.count, 'error_group', rows.fingerprint,
                                              'message_template', rows.message_template),
           rows.source_file, rows.source_line
    FROM per_run p JOIN rows ON rows.fingerprint = p.fingerprint AND rows.rn = 1
    WHERE p.created
    ON CONFLICT DO NOTHING
    RETURNING 1
), bumped AS (
    UPDATE events e SET payload = jsonb_set(e.payload, '{{count}}', to_jsonb(p.count))
    FROM per_run p
    WHERE NOT p.created AND e.event_id = p.event_id AND e.occurred_at = p.occurred_at
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM represented), (SELECT count(*) FROM bumped)
"""


@dataclass
class Counts:
    """The line accounting of a file or a run."""

    lines: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    collapsed: int = 0
    redactions: int = 0

    def add(self, other: Counts) -> None:
        for name in ("lines", "accepted", "quarantined", "duplicates", "collapsed", "redactions"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def balanced(self) -> bool:
        return self.lines == self.accepted + self.quarantined + self.duplicates + self.collapsed


@dataclass
class FileResult:
    path: str
    sha256: str
    size_bytes: int
    counts: Counts = field(default_factory=Counts)
    skipped: bool = False  # already in the ledger (re-dropped or renamed)
    parse_ms: int = 0
    quarantine_by_type: Counter = field(default_factory=Counter)
    superseded: list[int] = field(default_factory=list)  # quarantine ids of partial lines now read in full


@dataclass
class IngestSummary:
    run_id: uuid.UUID
    started_at: datetime
    finished_at: datetime | None = None
    files: int = 0
    skipped_files: int = 0
    counts: Counts = field(default_factory=Counts)
    quarantine_by_type: Counter = field(default_factory=Counter)
    write_latencies_ms: list[float] = field(default_factory=list)
    file_results: list[FileResult] = field(default_factory=list)
    # files that could not be read (permissions, removed meanwhile): {"path", "error"}; each
    # rolled back whole, and the next run tries it again
    unreadable_files: list[dict[str, str]] = field(default_factory=list)

    @property
    def write_latency_p95_ms(self) -> float:
        return percentile(self.write_latencies_ms, 95)

    def as_dict(self) -> dict[str, Any]:
        """The summary printed by ``ingest --json`` and stored in ``ingest_runs``."""
        elapsed = ((self.finished_at or datetime.now(UTC)) - self.started_at).total_seconds()
        return {
            "run_id": str(self.run_id),
            "files": self.files,
            "skipped_files": self.skipped_files,
            "unreadable_files": list(self.unreadable_files),
            **asdict(self.counts),
            "quarantine_by_type": dict(sorted(self.quarantine_by_type.items())),
            # quarantined partial last lines of files that were still being written, now read in full
            "superseded_quarantine": sum(len(r.superseded) for r in self.file_results),
            "balanced": self.counts.balanced,
            "elapsed_s": round(elapsed, 3),
            "lines_per_s": round(self.counts.lines / elapsed) if elapsed > 0 else None,
            "telemetry": {
                # per-file values are in the metrics table (name ParseDuration, tag file)
                "ParseDuration_ms": {
                    "files": len(parsed := [r.parse_ms for r in self.file_results if not r.skipped]),
                    "total": sum(parsed),
                    "max": max(parsed, default=0),
                    "p95": percentile([float(p) for p in parsed], 95),
                },
                "RowsWritten": self.counts.accepted,
                "SkippedDuplicate": self.counts.duplicates,
                "DatabaseWriteLatency_p95_ms": round(self.write_latency_p95_ms, 2),
            },
        }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


class NotARegularFile(OrchError):
    """An explicit ingest path is a device, FIFO or socket, which cannot be ingested."""


def has_event_file_name(path: Path, root: Path | None = None) -> bool:
    """True for a name that directory ingestion picks up (and the landing sensor sees).

    The suffix is ``.jsonl`` or ``.ndjson`` in any case. Hidden files, and files in hidden
    directories below ``root``, are skipped: producers commonly write in-progress files there.
    In-progress spool files (``*.tmp``) never match the suffix.
    """
    if path.suffix.lower() not in EVENT_FILE_SUFFIXES:
        return False
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return not any(part.startswith(".") for part in parts)


def is_event_file(path: Path, root: Path | None = None) -> bool:
    """A regular file (or a link to one) with an event file's name (:func:`has_event_file_name`)."""
    return has_event_file_name(path, root) and path.is_file()


def discover_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files to ingest: explicit files as given; directories searched for event files.

    See :func:`is_event_file` for what a directory search picks up. An explicit path that is
    neither a regular file nor a directory (``/dev/null``, a FIFO) is refused.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if is_event_file(p, path))
        elif path.is_file():
            found.append(path)
        elif path.exists():
            raise NotARegularFile(
                f"{path} is not a regular file (a device, FIFO or socket) — give event files or directories"
            )
        else:
            raise FileNotFoundError(f"no such file or directory: {path} — check the path")
    return list(dict.fromkeys(p.resolve() for p in found))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _lock_key(sha: str) -> int:
    return int(sha[:16], 16) - (1 << 63)


def _path_lock_keys(path: str) -> tuple[int, int]:
    """Two int4 advisory-lock keys for a path (a key space apart from the file hashes' bigint keys)."""
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:4], "big", signed=True), int.from_bytes(digest[4:8], "big", signed=True)


@dataclass(slots=True)
class _Line:
    number: int
    offset: int
    raw: bytes
    truncated_total: int | None = None  # set when the line exceeded the read limit: its full size
    full_sha256: str | None = None  # and the hash of the whole line


def _read_line(handle: BinaryIO) -> tuple[bytes, int, int | None, str | None] | None:
    """The next line without its newline, the bytes it took, and for an over-long line its full
    size and sha256 (only its first part is kept); None at the end of the file."""
    chunk = handle.readline(MAX_LINE_BYTES + 2)
    if not chunk:
        return None
    taken = len(chunk)
    total = digest = None
    if not chunk.endswith(b"\n") and len(chunk) > MAX_LINE_BYTES:
        # drain the rest of the over-long line, measuring and hashing it without holding it
        digest = hashlib.sha256(chunk)
        total = len(chunk)
        while True:
            more = handle.readline(1 << 20)
            if not more:
                break
            taken += len(more)
            if more.endswith(b"\n"):
                more = more.rstrip(b"\r\n")
                total += len(more)
                digest.update(more)
                break
            total += len(more)
            digest.update(more)
    return chunk.rstrip(b"\r\n"), taken, total, digest.hexdigest() if digest else None


def _skip_bom(handle: BinaryIO) -> int:
    """Step over a UTF-8 byte-order mark at the handle's position; returns the bytes skipped.

    Called only at the start of a file (offset 0): a BOM anywhere else is data.
    """
    head = handle.read(len(UTF8_BOM))
    if head == UTF8_BOM:
        return len(head)
    if head:
        handle.seek(-len(head), io.SEEK_CUR)
    return 0


def iter_lines(handle: BinaryIO, number: int = 0, offset: int = 0) -> Iterator[_Line]:
    """Non-blank lines with their 1-based numbers and byte offsets, in bounded memory.

    A line longer than the read limit yields its first part (enough to quarantine it as too
    large) and the rest is skipped without being held in memory. ``number`` and ``offset`` are
    the lines and bytes of the file before ``handle``'s position. At the start of a file
    (both 0) a UTF-8 BOM is skipped: line 1 then starts at byte 3. ``handle`` must be seekable.
    """
    if number == 0 and offset == 0:
        offset = _skip_bom(handle)
    while (line := _read_line(handle)) is not None:
        raw, taken, total, full_sha256 = line
        number += 1
        if raw.strip():
            yield _Line(number, offset, raw, total, full_sha256)
        offset += taken


@dataclass(slots=True)
class LineBlock:
    """Consecutive whole lines of a file as one bytes object: what a parse worker is sent.

    Splitting it into lines is left to the worker, so the ingesting process handles no line
    one at a time. ``lines()`` gives exactly what :func:`iter_lines` gives for the same bytes.
    """

    data: bytes
    number: int  # lines of the file before this block
    offset: int  # bytes of the file before this block

    def lines(self) -> list[_Line]:
        pieces = self.data.split(b"\n")
        last = pieces.pop()  # after the last newline: nothing, or a last line without one
        # lines iter_lines would cut (its read limit counts the newline), or a BOM it would skip
        if (
            max(map(len, pieces), default=0) > MAX_LINE_BYTES + 1
            or len(last) > MAX_LINE_BYTES
            or (self.offset == 0 and self.number == 0 and self.data.startswith(UTF8_BOM))
        ):
            return list(iter_lines(io.BytesIO(self.data), self.number, self.offset))
        if last:
            pieces.append(last)
        out = []
        number, offset = self.number, self.offset
        for piece in pieces:
            number += 1
            raw = piece.rstrip(b"\r")
            if raw.strip():
                out.append(_Line(number, offset, raw))
            offset += len(piece) + 1
        return out


_BLOCK_BYTES = 8 * 1024 * 1024  # read size and largest block; must exceed MAX_LINE_BYTES + 2


def iter_blocks(handle: BinaryIO, max_lines: int) -> Iterator[LineBlock | list[_Line]]:
    """The file in order as blocks of at most ``max_lines`` whole lines and ``_BLOCK_BYTES`` bytes.

    A line too long to fit a block comes alone, already cut as :func:`iter_lines` cuts it (a list
    of that one line, or an empty list if it is blank), so memory stays bounded whatever the line
    and file sizes. ``handle`` must be seekable and at the start of the file; a UTF-8 BOM there is
    skipped (line 1 starts at byte 3), as :func:`iter_lines` skips it.
    """
    if max_lines < 1:
        raise ValueError(f"max_lines must be at least 1, got {max_lines}")
    number = 0
    offset = _skip_bom(handle)
    carry = b""  # the start of a line not yet complete
    while True:
        data = handle.read(_BLOCK_BYTES - len(carry))
        if carry:
            data, carry = carry + data, b""
        if not data:
            return
        if len(data) < _BLOCK_BYTES:  # the end of the file: the last line needs no newline
            cut = len(data)
        else:
            cut = data.rfind(b"\n") + 1
            if not cut:  # one line fills the whole block: read it again as iter_lines does
                handle.seek(offset)
                raw, taken, total, full_sha256 = _read_line(handle)  # type: ignore[misc]
                number += 1
                if raw.strip():
                    yield [_Line(number, offset, raw, total, full_sha256)]
                offset += taken
                continue
        lines = data.count(b"\n", 0, cut) + (data[cut - 1] != 0x0A)
        if lines > max_lines:  # end the block after its max_lines-th newline
            end = -1
            for _ in range(max_lines):
                end = data.index(b"\n", end + 1)
            cut, lines = end + 1, max_lines
        block, carry = (data, b"") if cut == len(data) else (data[:cut], data[cut:])
        yield LineBlock(block, number, offset)
        number += lines
        offset += cut


# --- parsing a batch (in-process, or in a worker process for large files) ------------------


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
    # (event_id, occurred_at in epoch microseconds, events COPY line, "metric"|"artifact"|None, extra COPY line)
    plain: list[tuple[str, int, bytes, str | None, bytes | None]] = field(default_factory=list)
    errors: list[tuple] = field(default_factory=list)  # ingest_stage rows
    quarantine: list[tuple] = field(default_factory=list)
    quarantine_by_type: Counter = field(default_factory=Counter)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def parse_batch(
    lines: list[_Line] | LineBlock, source_file: str, now: datetime, run_id: uuid.UUID, sha: str
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
    plain = out.plain
    for i, line in enumerate(lines):
        if line.truncated_total is not None:
            parsed = reject_oversized(line.raw, line.truncated_total, line.full_sha256 or "")
        elif marked is not None and i in marked:  # may hold a secret: the full validator redacts
            parsed = parse_line_validated(line.raw, now=now)
        elif (common := parse_common_line(line.raw, now, unmarked=marked is not None)) is not None:
            if common.event_type == "error":
                add_event(out, common.parsed_event(), source_file, line.number, source_text)
            else:  # no ParsedEvent (nor UUID object) for the common line
                plain.append(_plain_row(common, common.event_id, source_text, line.number))
            continue
        else:
            parsed = parse_line_validated(line.raw, now=now)
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


class ParseWorkerDied(RuntimeError):
    """A parse worker process exited mid-file; the file's transaction is rolled back."""


class _ParsePool:
    """Worker processes that parse batches while this process writes the previous one.

    Parsing is CPU-bound Python and writing waits on PostgreSQL, so on a multi-core machine the
    two overlap. Each worker is ``python -m orchestration_pipeline.lib.ingestion.parse_worker`` fed over its
    stdin/stdout, with one batch in flight per worker (no pipe deadlock, bounded memory). A worker
    that dies (e.g. OOM-killed) fails the file at once; workers exit when this process dies.
    """

    def __init__(self, workers: int):
        import subprocess
        import sys

        self.broken = False
        self._procs = [
            subprocess.Popen(
                [sys.executable, "-m", "orchestration_pipeline.lib.ingestion.parse_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
            for _ in range(max(1, workers))
        ]

    def _send(self, proc, job: tuple) -> None:
        try:
            write_frame(proc.stdin, pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, OSError):
            raise ParseWorkerDied(self._death(proc)) from None

    def _receive(self, proc) -> ParsedBatch:
        frame = read_frame(proc.stdout)
        if frame is None:
            raise ParseWorkerDied(self._death(proc))
        status, value = pickle.loads(frame)
        if status != "ok":
            raise RuntimeError(f"parse worker failed: {value}")
        return value

    @staticmethod
    def _death(proc) -> str:
        try:
            code = proc.wait(timeout=5)
        except Exception:
            code = None
        return (
            f"parse worker {proc.pid} exited mid-file (exit code {code}); nothing from this file was "
            "committed — rerun the ingestion, or pass parse_workers=0 if workers are being killed for memory"
        )

    def map(self, jobs: Iterable[tuple]) -> Iterator[ParsedBatch]:
        """Results in job order. A worker gets its next job before its result is handed on, so
        every worker parses while the caller writes (one worker is enough to overlap the two)."""
        jobs = iter(jobs)
        in_flight: deque = deque()  # workers with a job, in submission order
        completed = False
        try:
            for proc in self._procs:
                job = next(jobs, None)
                if job is None:
                    break
                self._send(proc, job)
                in_flight.append(proc)
            while in_flight:
                proc = in_flight.popleft()
                result = self._receive(proc)
                job = next(jobs, None)
                if job is not None:
                    self._send(proc, job)
                    in_flight.append(proc)
                yield result
            completed = True
        finally:
            if not completed:  # results still in flight would be read by the next file: start afresh
                self.broken = True

    def close(self) -> None:
        for proc in self._procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except Exception:
                proc.kill()
                proc.wait()
            proc.stdout.close()


# --- writing a batch ------------------------------------------------------------------------

_EVENT_COPY = f"COPY events ({_EVENT_COLUMNS}) FROM STDIN"
_ARTIFACT_COPY = (
    "COPY artifacts (event_id, occurred_at, session_id, task_id, path, size_bytes, sha256, "
    "hash_skipped_reason) FROM STDIN"
)
_METRIC_COPY = "COPY metrics (name, value, unit, tags, session_id, task_id, event_id, recorded_at) FROM STDIN"
_QUARANTINE_COPY = f"COPY quarantine ({', '.join(_QUARANTINE_COLUMNS)}) FROM STDIN"


def copy_events(
    cur: psycopg.Cursor, plain: list[tuple[str, int, bytes, str | None, bytes | None]], counts: Counts
) -> list[tuple]:
    """COPY non-error events straight into ``events`` (plus artifacts and metrics), minus duplicates.

    Repeats within the batch are held back here. The batch is then COPY'd optimistically under a
    savepoint; only if that hits a stored id (unique violation) is it rolled back to the savepoint,
    the stored ids looked up with one indexed query, and the rest COPY'd. New data, the common
    case, therefore pays for COPY alone. Lines held back (stored or repeated) are then compared
    with the stored row: the same content is a duplicate; different content is a conflicting
    second version of the event, returned (see :data:`CONFLICTS_SQL`) and not counted here.
    """
    fresh: dict[tuple[str, int], tuple] = {}
    held: list[tuple] = []  # lines whose (event_id, occurred_at) is already stored, or taken in this batch
    for item in plain:
        key = (item[0], item[1])
        if key in fresh:
            held.append(item)
        else:
            fresh[key] = item
    try:
        with cur.connection.transaction():
            _copy_rows(cur, fresh)
    except psycopg.errors.UniqueViolation:
        stored = cur.execute(
            "SELECT event_id::text, (extract(epoch FROM occurred_at) * 1000000)::bigint FROM events "
            "WHERE event_id = ANY(%s::uuid[])",
            (list({key[0] for key in fresh}),),
        ).fetchall()
        for key in stored:
            if (item := fresh.pop(key, None)) is not None:
                held.append(item)
        _copy_rows(cur, fresh)
    conflicts = _conflicts(cur, held) if held else []
    counts.duplicates += len(held) - len(conflicts)
    counts.accepted += len(fresh)
    return conflicts


# The held-back lines whose content differs from the stored event with their id and time: both
# versions' fields, where the stored one came from, and the line rebuilt as JSON.
# An event's content: its stored columns but the identity (event_id, occurred_at) and provenance.
_CONFLICT_FIELDS = tuple(
    c for c in _STAGE_COLUMNS[: _STAGE_COLUMNS.index("source_file")] if c not in ("event_id", "occurred_at")
)
# The line of a staged row ``r``, rebuilt as JSON (what a conflicting line is quarantined as).
_REBUILT_LINE = """jsonb_build_object(
           'event_id', r.event_id, 'event_type', r.event_type,
           'occurred_at', to_char(r.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'session_id', r.session_id, 'task_id', r.task_id, 'source', r.source, 'stage', r.stage,
           'severity', r.severity, 'status', r.status, 'duration_ms', r.duration_ms,
           'payload', r.payload)::text"""
CONFLICTS_SQL = f"""
SELECT r.event_id::text, r.source_file, r.source_line, e.source_file, e.source_line,
       jsonb_build_array({", ".join(f"r.{f}" for f in _CONFLICT_FIELDS)}),
       jsonb_build_array({", ".join(f"e.{f}" for f in _CONFLICT_FIELDS)}),
       {_REBUILT_LINE}
FROM ingest_repeats r
JOIN events e ON e.event_id = r.event_id AND e.occurred_at = r.occurred_at
WHERE ({", ".join(f"r.{f}" for f in _CONFLICT_FIELDS)})
      IS DISTINCT FROM ({", ".join(f"e.{f}" for f in _CONFLICT_FIELDS)})
ORDER BY r.source_line
"""


def same_but_for_redaction(new: Any, stored: Any) -> bool:
    """Equal, or different only where one side holds a redaction: the same line parsed by another
    version of the redaction rules, or by the quarantine path, is not a second version of it."""
    if new == stored:
        return True
    if isinstance(new, str) and isinstance(stored, str):
        return REDACTED in new or REDACTED in stored
    if isinstance(new, str) and new == REDACTED or isinstance(stored, str) and stored == REDACTED:
        return True  # a whole object or list redacted on one side
    if isinstance(new, dict) and isinstance(stored, dict):
        return new.keys() == stored.keys() and all(same_but_for_redaction(new[k], stored[k]) for k in new)
    if isinstance(new, list) and isinstance(stored, list):
        return len(new) == len(stored) and all(map(same_but_for_redaction, new, stored))
    return False


def _conflicts(cur: psycopg.Cursor, held: list[tuple]) -> list[tuple]:
    """(event_id, file, line, stored file, stored line, differing fields, rebuilt JSON) of each
    held-back line that is a second version of its stored event."""
    with cur.copy(f"COPY ingest_repeats ({_EVENT_COLUMNS}) FROM STDIN") as copy:
        copy.write(b"".join(item[2] for item in held))
    rows = cur.execute(CONFLICTS_SQL).fetchall()
    cur.execute("TRUNCATE ingest_repeats")
    conflicts = []
    for event_id, file, line, stored_file, stored_line, new, stored, rebuilt in rows:
        differing = [
            f
            for f, a, b in zip(_CONFLICT_FIELDS, new, stored, strict=True)
            if not same_but_for_redaction(a, b)
        ]
        if differing:
            conflicts.append((event_id, file, line, stored_file, stored_line, ", ".join(differing), rebuilt))
    return conflicts


def conflict_detail(row: tuple) -> str:
    """Why a conflicting line was quarantined, and what to do."""
    event_id, _file, _line, stored_file, stored_line, differing, _json = row
    if stored_file:
        where = f"from {stored_file} line {stored_line}"
    else:
        where = f"from a replay, line {stored_line}" if stored_line else "by an earlier ingestion"
    return (
        f"event_id {event_id} is already stored for this occurred_at with a different {differing} "
        f"({where}); the stored version is kept — give this event its own event_id (or leave "
        "event_id out to derive one from the content), or fix the producer that reuses ids"
    )


# Staged error lines whose (event_id, occurred_at) already names something else, removed from the
# stage and returned as conflict rows (see conflict_detail): an event of another kind (a stored
# task_start: folding the error into its group would rewrite that event's payload), an error of
# another group (recorded in error_occurrences), or, in this batch, an earlier error line of
# another group. The same error sent again (same group) stays: it counts as a duplicate.
ERROR_CONFLICTS_SQL = f"""
WITH firsts AS (
    SELECT DISTINCT ON (event_id, occurred_at) event_id, occurred_at, fingerprint, source_file, source_line
    FROM ingest_stage ORDER BY event_id, occurred_at, source_line
), conflicting AS (
    SELECT r.ctid AS row_ref,
           CASE WHEN o.fingerprint IS NOT NULL AND o.fingerprint <> r.fingerprint
                     THEN 'error stage or message (another error group)'
                WHEN o.fingerprint IS NULL AND e.event_id IS NOT NULL
                     THEN 'event_type (' || e.event_type || ', not error)'
                WHEN o.fingerprint IS NULL AND e.event_id IS NULL AND f.fingerprint <> r.fingerprint
                     THEN 'error stage or message (another error group)' END AS differing,
           CASE WHEN o.fingerprint IS NOT NULL OR e.event_id IS NOT NULL THEN e.source_file
                ELSE f.source_file END AS stored_file,
           CASE WHEN o.fingerprint IS NOT NULL OR e.event_id IS NOT NULL THEN e.source_line
                ELSE f.source_line END AS stored_line
    FROM ingest_stage r
    JOIN firsts f USING (event_id, occurred_at)
    LEFT JOIN error_occurrences o USING (event_id, occurred_at)
    LEFT JOIN events e USING (event_id, occurred_at)
)
DELETE FROM ingest_stage r USING conflicting c
WHERE r.ctid = c.row_ref AND c.differing IS NOT NULL
RETURNING r.event_id::text, r.source_file, r.source_line, c.stored_file, c.stored_line, c.differing,
          {_REBUILT_LINE}
"""


def _copy_rows(cur: psycopg.Cursor, fresh: dict[tuple[str, int], tuple]) -> None:
    if not fresh:
        return
    with cur.copy(_EVENT_COPY) as copy:
        copy.write(b"".join(item[2] for item in fresh.values()))
    metrics = [item[4] for item in fresh.values() if item[3] == "metric"]
    artifacts = [item[4] for item in fresh.values() if item[3] == "artifact"]
    if metrics:
        with cur.copy(_METRIC_COPY) as copy:
            copy.write(b"".join(metrics))
    if artifacts:
        with cur.copy(_ARTIFACT_COPY) as copy:
            copy.write(b"".join(artifacts))


def move_errors(cur: psycopg.Cursor, rows: list[tuple], run_id: uuid.UUID, counts: Counts) -> list[tuple]:
    """Stage error events and fold them into their groups (one event per group per run).

    Adds to ``counts``: accepted (new group-run events), collapsed and duplicates. Error lines whose
    id and time already name something else are not folded in: they are returned, as
    :func:`copy_events` returns conflicting lines, and not counted here. The caller owns the
    transaction and must have created the stage table (``sql/runtime/ingest_stage.sql``).
    """
    with cur.copy(f"COPY ingest_stage ({', '.join(_STAGE_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    conflicts = sorted(cur.execute(ERROR_CONFLICTS_SQL).fetchall(), key=lambda row: row[2] or 0)
    fresh, represented, _bumped = cur.execute(MOVE_ERRORS_SQL, {"run_id": run_id}).fetchone()
    counts.accepted += represented
    counts.collapsed += fresh - represented
    counts.duplicates += len(rows) - len(conflicts) - fresh
    cur.execute("TRUNCATE ingest_stage")
    return conflicts


def write_batch(
    cur: psycopg.Cursor,
    batch: ParsedBatch,
    run_id: uuid.UUID,
    counts: Counts,
    *,
    file_sha256: str | None = None,
    quarantine_conflicts: bool = True,
) -> list[tuple]:
    """Write one parsed batch inside the caller's transaction, adding to ``counts``.

    Conflicting second versions of stored events are quarantined (``conflicting_duplicate``) and
    returned; with ``quarantine_conflicts=False`` (a replay) they are only returned and not counted.
    Such a quarantine row holds the event as parsed and redacted, rebuilt as JSON (its raw_sha256
    is of that text), and byte_offset 0: the writer no longer has the line's bytes or offset.
    """
    conflicts: list[tuple] = []
    quarantine = batch.quarantine
    if batch.plain:
        conflicts = copy_events(cur, batch.plain, counts)
    if batch.errors:
        conflicts += move_errors(cur, batch.errors, run_id, counts)
    if conflicts and quarantine_conflicts:
        batch.quarantine_by_type["conflicting_duplicate"] += len(conflicts)
        quarantine = quarantine + [
            (run_id, file_sha256, row[1] or "", row[2] or 1, 0, "conflicting_duplicate",
             conflict_detail(row), "/event_id", row[6],
             hashlib.sha256(row[6].encode("utf-8")).hexdigest(), False, None)
            for row in conflicts
        ]  # fmt: skip
    if quarantine:
        quarantine = _not_quarantined_before(cur, quarantine, file_sha256, batch.quarantine_by_type, counts)
        with cur.copy(_QUARANTINE_COPY) as copy:
            for row in quarantine:
                copy.write_row(row)
        counts.quarantined += len(quarantine)
    counts.lines += batch.lines
    counts.redactions += batch.redactions
    return conflicts


# Pending quarantine rows that earlier versions of this path left in the range of a batch's lines:
# the file grew or was rewritten, and those lines were read again (the caller compares numbers and
# bytes). A range on the index's second column (quarantine_pending_line_idx) reads only the rows of
# the batch's own lines, whatever the statistics or a generic plan say; a batch never scans every
# pending row of the path, which made re-reading a file with many bad lines quadratic. (Matching
# the batch's lines here as an array or a join was worse: a generic plan does not hash the array.)
_QUARANTINED_BEFORE_SQL = """
SELECT source_line, raw_sha256 FROM quarantine
WHERE source_file = %s AND replayed_at IS NULL AND file_sha256 <> %s
  AND source_line BETWEEN %s::integer AND %s::integer
"""


def quarantined_before_query(rows: list[tuple], file_sha256: str) -> tuple[str, tuple]:
    """The query (and its parameters) for the pending rows earlier versions of the file left in the
    range of the lines of ``rows`` (quarantine rows of one batch of one file): (source_line, raw_sha256)."""
    lines = [r[3] for r in rows]
    return _QUARANTINED_BEFORE_SQL, (rows[0][2], file_sha256, min(lines), max(lines))


def _not_quarantined_before(
    cur: psycopg.Cursor, rows: list[tuple], file_sha256: str | None, by_type: Counter, counts: Counts
) -> list[tuple]:
    """The quarantine rows of a batch minus the lines an earlier version of the same file already
    has pending; those count as duplicates, so a file that grows is not quarantined again and again."""
    if file_sha256 is None:  # a replay: its rows are the pending ones themselves
        return rows
    before = {(line, sha.rstrip()) for line, sha in cur.execute(*quarantined_before_query(rows, file_sha256))}
    if not before:
        return rows
    kept = []
    for row in rows:
        if (row[3], row[9]) in before:
            counts.duplicates += 1
            by_type[row[5]] -= 1
            if by_type[row[5]] <= 0:
                del by_type[row[5]]
        else:
            kept.append(row)
    return kept


# Pending quarantine rows from earlier versions of this path whose line was the file's unterminated
# last line (it ran to the end of that version), with that version's size.
_PARTIAL_LINES_SQL = """
SELECT DISTINCT ON (q.file_sha256)
       q.quarantine_id, q.source_line, q.byte_offset, f.size_bytes - q.byte_offset, q.raw_sha256
FROM quarantine q
JOIN ingest_files f ON f.file_sha256 = q.file_sha256
WHERE q.source_file = %(path)s AND q.replayed_at IS NULL AND NOT q.raw_truncated
  AND q.failure_type <> 'conflicting_duplicate'
  AND q.file_sha256 <> %(sha)s
  AND f.size_bytes - q.byte_offset BETWEEN 1 AND %(max_line)s
ORDER BY q.file_sha256, q.byte_offset DESC
"""


def supersede_partial_lines(cur: psycopg.Cursor, path: Path, source_file: str, sha256: str) -> list[int]:
    """Resolve the quarantined partial last line of an earlier version of this file.

    A producer still writing a file when it was ingested leaves its last line cut off; that line
    was quarantined. When the grown file is ingested, the same bytes start the line at the same
    offset, and this ingestion has just processed that line in full (accepted, a duplicate, or
    quarantined afresh). The old row is then marked as resolved (``replayed_at``, with the reason
    in ``last_replay_detail``) instead of staying pending forever. Returns the resolved ids.
    """
    rows = cur.execute(
        _PARTIAL_LINES_SQL, {"path": source_file, "sha": sha256, "max_line": MAX_LINE_BYTES}
    ).fetchall()
    resolved = []
    if rows:
        with open(path, "rb") as handle:
            for quarantine_id, line, offset, length, raw_sha256 in rows:
                handle.seek(offset)
                head = handle.read(length + 1)
                # the same bytes, and the line goes on in this version (it was cut, not complete)
                if len(head) == length + 1 and head[-1:] not in (b"\n", b"\r"):
                    if hashlib.sha256(head[:length]).hexdigest() == raw_sha256:
                        resolved.append((quarantine_id, line))
    if not resolved:
        return []
    # Only rows still pending: a replay may have resolved one since it was read above (it held the
    # row's lock; this waited for it and must not overwrite its outcome).
    updated = cur.execute(
        """UPDATE quarantine q SET replayed_at = now(), last_replay_detail = r.detail
           FROM unnest(%s::bigint[], %s::text[]) AS r(quarantine_id, detail)
           WHERE q.quarantine_id = r.quarantine_id AND q.replayed_at IS NULL
           RETURNING q.quarantine_id""",
        (
            [quarantine_id for quarantine_id, _ in resolved],
            [
                f"superseded: {source_file} grew after this partial last line was read; line {line} "
                f"was ingested in full from the longer file (sha256 {sha256[:12]}…)"
                for _, line in resolved
            ],
        ),
    ).fetchall()
    return sorted(r[0] for r in updated)


def stage_sql() -> str:
    """DDL of the session temp table that error events are staged in."""
    return runtime_sql("ingest_stage.sql")


ProgressCallback = Callable[[dict[str, Any]], None]


def describe_progress(info: dict[str, Any]) -> str:
    """One human line for a progress report (per batch while reading, per file when done)."""
    if not info.get("final"):
        return f"{info['file']}: {info['lines']:,} lines read"
    if "unreadable" in info:
        return (
            f"[{info['file_index']}/{info['file_count']}] {info['file']}: NOT INGESTED, cannot be read "
            f"({info['unreadable']}); nothing of it was stored — fix its permissions and run again"
        )
    result: FileResult = info["result"]
    c = result.counts
    what = "already ingested (skipped)" if result.skipped else (
        f"{c.lines} lines: {c.accepted} accepted, {c.quarantined} quarantined, "
        f"{c.duplicates} duplicates, {c.collapsed} collapsed"
    )  # fmt: skip
    return f"[{info['file_index']}/{info['file_count']}] {info['file']}: {what}"


class Ingestor:
    """Ingests files into the orchestration DB on one connection.

    >>> with connection(dsn) as conn:
    ...     summary = Ingestor(conn).ingest_paths(["landing/"])

    Files of at least ``parallel_min_bytes`` are parsed by ``parse_workers`` worker processes
    while this process writes (0: always parse in-process). The default is one fewer than the
    cores (at least 1, at most 4): one worker parses faster than PostgreSQL writes, and a local
    server needs a core of its own.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        *,
        run_id: uuid.UUID | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        progress: ProgressCallback | None = None,
        progress_every_s: float = 2.0,
        now: Callable[[], datetime] | None = None,
        source: str = "orchestration-pipeline.ingest",
        parse_workers: int | None = None,
        parallel_min_bytes: int = 16 * 1024 * 1024,
    ):
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        self.conn = conn
        self.run_id = run_id or uuid.uuid4()
        self.batch_rows = batch_rows
        self.progress = progress
        self.progress_every_s = progress_every_s
        self.now = now or (lambda: datetime.now(UTC))
        # On 2 cores with the server local, 1 worker measured 20-30% faster than 2: two workers
        # parsing at once take the server's core.
        self.parse_workers = (
            max(1, min((os.cpu_count() or 1) - 1, 4)) if parse_workers is None else parse_workers
        )
        self.parallel_min_bytes = parallel_min_bytes
        self.gate = SchemaGate(INGEST_TABLES, source=source)
        self.summary = IngestSummary(run_id=self.run_id, started_at=self.now())
        self._last_progress = 0.0
        self._pool: _ParsePool | None = None

    # -- public ----------------------------------------------------------------------------

    def ingest_paths(self, paths: Iterable[str | os.PathLike[str]]) -> IngestSummary:
        """Ingest every file under ``paths``; returns the run summary (also stored in ``ingest_runs``)."""
        files = discover_files(paths)
        self.gate.check(self.conn)
        try:
            for index, path in enumerate(files, 1):
                try:
                    result = self.ingest_file(path)
                except OSError as exc:  # this file only: it rolled back whole, the others go on
                    if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        self.conn.rollback()
                    error = f"{type(exc).__name__}: {exc.strerror or exc}"
                    self.summary.unreadable_files.append({"path": str(path), "error": error})
                    self._report(
                        final=True, file=str(path), file_index=index, file_count=len(files), unreadable=error
                    )
                    continue
                self._report(
                    final=True, file=str(path), file_index=index, file_count=len(files), result=result
                )
        finally:
            self.close()
        return self.finish()

    def ingest_file(self, path: Path) -> FileResult:
        """Ingest one file in one transaction; a file already in the ledger is skipped."""
        self.gate.check(self.conn)
        path = Path(path)
        sha = file_sha256(path)
        result = FileResult(path=str(path), sha256=sha, size_bytes=path.stat().st_size)
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.commit()
        for attempt in range(1, _FILE_ATTEMPTS + 1):
            try:
                with self.conn.transaction():
                    self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(sha),))
                    # and one version of a path at a time: a grown file's bad lines are looked up
                    # among those its earlier versions left (two keys: a lock space of its own)
                    self.conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _path_lock_keys(str(path)))
                    if self.conn.execute(
                        "SELECT 1 FROM ingest_files WHERE file_sha256 = %s", (sha,)
                    ).fetchone():
                        result.skipped = True
                    else:
                        self._ingest_into_transaction(path, result)
                break
            except psycopg.errors.UniqueViolation:
                # Another ingester committed some of the same events meanwhile; the whole file
                # rolled back, and the retry sees them as duplicates.
                if attempt == _FILE_ATTEMPTS:
                    raise
                result.quarantine_by_type.clear()
        self.summary.file_results.append(result)
        self.summary.files += 1
        if result.skipped:
            self.summary.skipped_files += 1
        else:
            self.summary.counts.add(result.counts)
            self.summary.quarantine_by_type.update(result.quarantine_by_type)
        return result

    def finish(self) -> IngestSummary:
        """Record the run (summary row and DatabaseWriteLatency telemetry)."""
        self.summary.finished_at = self.now()
        body = self.summary.as_dict()
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.commit()  # so the block below is its own (committed) transaction
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO ingest_runs (run_id, started_at, finished_at, summary) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (run_id) DO UPDATE SET finished_at = EXCLUDED.finished_at, summary = EXCLUDED.summary",
                (self.run_id, self.summary.started_at, self.summary.finished_at, Jsonb(body)),
            )
            if self.summary.write_latencies_ms:
                self._metric("DatabaseWriteLatency", self.summary.write_latency_p95_ms, "ms", {"stat": "p95"})
        return self.summary

    def close(self) -> None:
        """Stop the parse workers, if any were started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- internals -------------------------------------------------------------------------

    def _metric(self, name: str, value: float, unit: str, tags: dict[str, Any]) -> None:
        record_metric(self.conn, name, value, unit, {"run_id": str(self.run_id), **tags})

    def _parsed(self, handle: BinaryIO, result: FileResult, now: datetime) -> Iterator[ParsedBatch]:
        jobs = (
            (batch, result.path, now, self.run_id, result.sha256)
            for batch in iter_blocks(handle, self.batch_rows)
        )
        if self.parse_workers > 0 and result.size_bytes >= self.parallel_min_bytes:
            if self._pool is not None and self._pool.broken:
                self.close()
            if self._pool is None:
                self._pool = _ParsePool(self.parse_workers)
            return self._pool.map(jobs)  # ParseWorkerDied propagates: the file's transaction rolls back
        return (parse_batch(*job) for job in jobs)

    def _ingest_into_transaction(self, path: Path, result: FileResult) -> None:
        self.conn.execute(stage_sql())
        cur = self.conn.cursor()
        counts = Counts()
        started = time.perf_counter()
        with open(path, "rb") as handle:
            for batch in self._parsed(handle, result, self.now()):
                write_started = time.perf_counter()
                write_batch(cur, batch, self.run_id, counts, file_sha256=result.sha256)
                self.summary.write_latencies_ms.append((time.perf_counter() - write_started) * 1000)
                result.quarantine_by_type.update(batch.quarantine_by_type)
                self._report(file=result.path, lines=counts.lines)
        result.counts = counts
        result.parse_ms = int((time.perf_counter() - started) * 1000)
        result.superseded = supersede_partial_lines(cur, path, result.path, result.sha256)
        if not counts.balanced:  # a bug, never bad input: refuse to commit an unbalanced file
            raise RuntimeError(f"line accounting does not balance for {path}: {counts}")
        self.conn.execute(
            """INSERT INTO ingest_files (file_sha256, path, size_bytes, run_id, lines, accepted, quarantined,
                                         duplicates, collapsed, redactions, parse_ms)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                result.sha256,
                result.path,
                result.size_bytes,
                self.run_id,
                counts.lines,
                counts.accepted,
                counts.quarantined,
                counts.duplicates,
                counts.collapsed,
                counts.redactions,
                result.parse_ms,
            ),
        )
        tags = {"file": result.path, "file_sha256": result.sha256}
        self._metric("ParseDuration", result.parse_ms, "ms", tags)
        self._metric("RowsWritten", counts.accepted, "rows", tags)
        self._metric("SkippedDuplicate", counts.duplicates, "rows", tags)

    def _report(self, final: bool = False, **info: Any) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not final and now - self._last_progress < self.progress_every_s:
            return
        self._last_progress = now
        self.progress({"final": final, **info})


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


def _quarantine_row(rej: Rejection, line: _Line, run_id: uuid.UUID, sha: str, source_file: str) -> tuple:
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
