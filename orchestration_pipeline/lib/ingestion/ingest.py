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
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg.types.json import Jsonb

from orchestration_pipeline.lib.db import SchemaGate
from orchestration_pipeline.lib.ingestion.batches import (
    Counts,
    stage_sql,
    supersede_partial_lines,
    write_batch,
)
from orchestration_pipeline.lib.ingestion.files import discover_files, file_sha256, iter_blocks
from orchestration_pipeline.lib.ingestion.notify import notify_new_events
from orchestration_pipeline.lib.ingestion.parse_pool import ParsePool
from orchestration_pipeline.lib.ingestion.rows import ParsedBatch, parse_batch
from orchestration_pipeline.lib.ingestion.status_words import UnknownStatusWords
from orchestration_pipeline.lib.retention.partitions import ensure_ahead
from orchestration_pipeline.lib.telemetry import percentile, record_metric
from orchestration_pipeline.lib.wording import plural

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


DEFAULT_BATCH_ROWS = 10_000
# A file's transaction is tried again when it collides with another ingester writing the same
# events: a unique violation (the other committed first), a deadlock or a serialization failure.
_FILE_ATTEMPTS = 6
_RETRYABLE = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)


@dataclass
class FileResult:
    path: str
    sha256: str
    size_bytes: int
    counts: Counts = field(default_factory=Counts)
    skipped: bool = False  # already in the ledger (re-dropped or renamed)
    parse_ms: int = 0
    quarantine_by_type: Counter = field(default_factory=Counter)
    unknown_status_words: UnknownStatusWords = field(default_factory=UnknownStatusWords)
    redactions_by_rule: Counter = field(default_factory=Counter)  # redaction rule id -> redactions
    superseded: list[int] = field(default_factory=list)  # quarantine ids of partial lines now read in full
    retries: int = 0  # transactions rolled back after a collision with another ingester, and tried again


@dataclass
class IngestSummary:
    run_id: uuid.UUID
    started_at: datetime
    finished_at: datetime | None = None
    files: int = 0
    skipped_files: int = 0
    counts: Counts = field(default_factory=Counts)
    quarantine_by_type: Counter = field(default_factory=Counter)
    # status words the synonym map does not know, per producer (lib/ingestion/status_words.py)
    unknown_status_words: UnknownStatusWords = field(default_factory=UnknownStatusWords)
    # redactions by the id of the rule that made them (lib/redaction/rules.toml)
    redactions_by_rule: Counter = field(default_factory=Counter)
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
            "unknown_status_words": self.unknown_status_words.as_dict(),
            "redactions_by_rule": dict(sorted(self.redactions_by_rule.items())),
            # quarantined partial last lines of files that were still being written, now read in full
            "superseded_quarantine": sum(len(r.superseded) for r in self.file_results),
            # file transactions tried again after colliding with another ingester (deadlock, ...)
            "transaction_retries": sum(r.retries for r in self.file_results),
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


def _lock_key(sha: str) -> int:
    return int(sha[:16], 16) - (1 << 63)


def _path_lock_keys(path: str) -> tuple[int, int]:
    """Two int4 advisory-lock keys for a path (a key space apart from the file hashes' bigint keys)."""
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:4], "big", signed=True), int.from_bytes(digest[4:8], "big", signed=True)


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
    if result.retries:
        what += f" (tried {plural(result.retries + 1, 'time')}: another ingester wrote the same events)"
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
        self._pool: ParsePool | None = None

    # -- public ----------------------------------------------------------------------------

    def ingest_paths(self, paths: Iterable[str | os.PathLike[str]]) -> IngestSummary:
        """Ingest every file under ``paths``; returns the run summary (also stored in ``ingest_runs``)."""
        files = discover_files(paths)
        self.gate.check(self.conn)
        if files:
            ensure_ahead(self.conn, self.now().date())  # today's partitions exist before its events arrive
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
            except _RETRYABLE:
                # Another ingester wrote some of the same events meanwhile (committed first, or
                # deadlocked with this one): the whole file rolled back, and the retry sees its
                # events as duplicates. Backoff with jitter, so the two do not collide again.
                if attempt == _FILE_ATTEMPTS:
                    raise
                result.retries += 1
                result.quarantine_by_type.clear()
                result.unknown_status_words.clear()
                result.redactions_by_rule.clear()
                time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5))
        self.summary.file_results.append(result)
        self.summary.files += 1
        if result.skipped:
            self.summary.skipped_files += 1
        else:
            self.summary.counts.add(result.counts)
            self.summary.quarantine_by_type.update(result.quarantine_by_type)
            self.summary.unknown_status_words.update(result.unknown_status_words)
            self.summary.redactions_by_rule.update(result.redactions_by_rule)
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
                self._pool = ParsePool(self.parse_workers)
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
                result.unknown_status_words.add(batch.status_words)
                result.redactions_by_rule.update(batch.redactions_by_rule)
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
        if counts.accepted:
            notify_new_events(self.conn, result.sha256[:16])  # delivered at commit: wakes the live feed
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
