"""The outbox processor: claim, embed, write to the index, and only then mark done.

One round: claim a batch under a lease (a short transaction), read the claimed decisions'
current rows (the source of truth: a claimed row whose decision has moved on is indexed at the
decision's current version), embed their rationales in batches, write to the index, and settle
the rows in a second short transaction. No transaction is open while embedding or writing to
the index; the connection runs in autocommit mode between those transactions.

A batch that fails is split in halves until the failing item is isolated, so one poison item
never holds back the others; an unreachable index (:class:`IndexUnavailable`) fails the whole
batch at once instead (nothing to isolate). Each failed item counts one attempt; after the last
it moves to the dead letters (:mod:`outbox`).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from orchestration_pipeline.lib.index import outbox
from orchestration_pipeline.lib.index.decisions import Decision, load_decisions
from orchestration_pipeline.lib.index.embedders import Embedder
from orchestration_pipeline.lib.index.location import IndexPoint, IndexUnavailable, VectorIndex
from orchestration_pipeline.lib.telemetry import percentile, record_metric


@dataclass(frozen=True)
class SyncSettings:
    batch_size: int = 100  # outbox rows per claim
    embed_batch: int = 64
    lease_s: float = 300.0  # longer than a batch can take; an expired lease is claimed again
    retry: outbox.RetryPolicy = field(default_factory=outbox.RetryPolicy)
    max_batches: int | None = None  # stop after this many claims (None: until the outbox is drained)
    optimize_after: int = 5_000  # index writes in one sync after which the index is optimized


@dataclass
class SyncReport:
    owner: str
    claimed: int = 0
    indexed: int = 0
    deleted: int = 0
    superseded: int = 0
    stale: int = 0
    retrying: int = 0
    dead_lettered: int = 0
    batches: int = 0
    embedded: int = 0
    embed_s: float = 0.0
    index_s: float = 0.0
    elapsed_s: float = 0.0
    optimized: bool = False
    freshness_s: list[float] = field(default_factory=list)
    backlog: outbox.Backlog | None = None

    def as_dict(self) -> dict[str, Any]:
        body = {k: v for k, v in self.__dict__.items() if k not in ("freshness_s", "backlog")}
        body["freshness_p50_s"] = round(percentile(self.freshness_s, 50), 3)
        body["freshness_p95_s"] = round(percentile(self.freshness_s, 95), 3)
        body["items_per_s"] = round(self.claimed / self.elapsed_s, 1) if self.elapsed_s else 0.0
        if self.backlog is not None:
            body["backlog_pending"] = self.backlog.pending
            body["backlog_oldest_age_s"] = round(self.backlog.oldest_age_s, 3)
        for key in ("embed_s", "index_s", "elapsed_s"):
            body[key] = round(body[key], 3)
        return body


@dataclass(frozen=True)
class _Work:
    item: outbox.OutboxItem
    decision: Decision | None  # None for a delete


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def sync_outbox(
    conn: psycopg.Connection,
    index: VectorIndex,
    embedder: Embedder,
    settings: SyncSettings | None = None,
    *,
    progress: Callable[[SyncReport], None] | None = None,
) -> SyncReport:
    """Drain the outbox into the index (or ``max_batches`` claims of it); returns what it did.

    ``conn`` must not be inside a transaction: it runs in autocommit mode meanwhile (each step is
    its own short transaction) and gets its mode back at the end.
    """
    settings = settings or SyncSettings()
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError(
            "sync_outbox needs a connection outside any transaction (commit or roll back first)"
        )
    autocommit, conn.autocommit = conn.autocommit, True
    try:
        return _drain(conn, index, embedder, settings, progress)
    finally:
        conn.autocommit = autocommit


def _drain(
    conn: psycopg.Connection,
    index: VectorIndex,
    embedder: Embedder,
    settings: SyncSettings,
    progress: Callable[[SyncReport], None] | None,
) -> SyncReport:
    report = SyncReport(owner=new_owner())
    started = time.perf_counter()
    tried: set[str] = set()  # entities that failed in this run: retried by a later run, not this one
    while settings.max_batches is None or report.batches < settings.max_batches:
        claim = _fresh(
            conn, report.owner, tried, outbox.claim(conn, report.owner, settings.batch_size, settings.lease_s)
        )
        if not claim.winners:
            break
        report.batches += 1
        report.claimed += claim.size
        tried.update(_process(conn, index, embedder, settings, claim, report))
        report.elapsed_s = time.perf_counter() - started
        if progress:
            progress(report)
    if report.indexed + report.deleted >= settings.optimize_after:
        index.optimize()
        report.optimized = True
    report.elapsed_s = time.perf_counter() - started
    report.backlog = outbox.backlog(conn)
    _record(conn, report)
    return report


def _fresh(conn: psycopg.Connection, owner: str, tried: set[str], claim: outbox.Claim) -> outbox.Claim:
    """The claim minus the entities this run has already failed on (released for a later run)."""
    again = [i for i in claim.winners + claim.superseded if i.entity_id in tried]
    if not again:
        return claim
    outbox.release(conn, owner, [i.outbox_id for i in again])
    return outbox.Claim(
        [w for w in claim.winners if w.entity_id not in tried],
        [i for i in claim.superseded if i.entity_id not in tried],
    )


def _process(
    conn: psycopg.Connection,
    index: VectorIndex,
    embedder: Embedder,
    settings: SyncSettings,
    claim: outbox.Claim,
    report: SyncReport,
) -> set[str]:
    """Handle one claim; returns the entities that failed."""
    upserts = [w.entity_id for w in claim.winners if w.op == "upsert"]
    current = load_decisions(conn, upserts)
    work, outcomes = [], []
    for winner in claim.winners:
        if winner.op == "upsert" and winner.entity_id not in current:
            outcomes.append((winner.outbox_id, "superseded"))  # deleted since: its delete row follows
            report.superseded += 1
        else:
            work.append(_Work(winner, current.get(winner.entity_id) if winner.op == "upsert" else None))
    done: dict[str, str] = {}
    failures: list[outbox.Failure] = []
    _apply_split(index, embedder, settings, work, done, failures, report)
    for w in work:
        if w.item.entity_id in done:
            outcomes.append((w.item.outbox_id, done[w.item.entity_id]))
    failed = {f.item.entity_id for f in failures}
    for item in claim.superseded:
        if item.entity_id not in failed:
            outcomes.append((item.outbox_id, "superseded"))
            report.superseded += 1
    report.freshness_s.extend(outbox.settle(conn, report.owner, outcomes))
    if failures:
        retrying, dead = outbox.fail(conn, report.owner, failures, settings.retry)
        report.retrying += retrying
        report.dead_lettered += dead
        outbox.release(conn, report.owner, [i.outbox_id for i in claim.superseded if i.entity_id in failed])
    return failed


def _apply_split(
    index: VectorIndex,
    embedder: Embedder,
    settings: SyncSettings,
    work: Sequence[_Work],
    done: dict[str, str],
    failures: list[outbox.Failure],
    report: SyncReport,
) -> None:
    """Write ``work`` to the index; on an error, split it in halves until the failing items are
    isolated (each then fails alone). An unreachable index fails the whole group at once."""
    if not work:
        return
    try:
        done.update(_apply(index, embedder, settings, work, report))
    except IndexUnavailable as exc:
        failures.extend(outbox.Failure(w.item, type(exc).__name__, str(exc)) for w in work)
    except Exception as exc:  # every error class counts: a poison item is isolated, then retried
        if len(work) == 1:
            failures.append(outbox.Failure(work[0].item, type(exc).__name__, str(exc) or repr(exc)))
            return
        middle = len(work) // 2
        _apply_split(index, embedder, settings, work[:middle], done, failures, report)
        _apply_split(index, embedder, settings, work[middle:], done, failures, report)


def _apply(
    index: VectorIndex, embedder: Embedder, settings: SyncSettings, work: Sequence[_Work], report: SyncReport
) -> dict[str, str]:
    """Embed and write one group; returns each entity's outcome."""
    outcomes: dict[str, str] = {}
    upserts = [w for w in work if w.decision is not None]
    deletes = [w for w in work if w.decision is None]
    if upserts:
        started = time.perf_counter()
        vectors: list[list[float]] = []
        for i in range(0, len(upserts), settings.embed_batch):
            chunk = upserts[i : i + settings.embed_batch]
            vectors.extend(embedder.embed([w.decision.rationale for w in chunk]))
        report.embed_s += time.perf_counter() - started
        report.embedded += len(upserts)
        points = [
            IndexPoint(
                decision_id=w.decision.decision_id,
                version=w.decision.version,
                content_hash=w.decision.content_hash,
                vector=vector,
                payload=w.decision.index_payload(),
            )
            for w, vector in zip(upserts, vectors, strict=True)
        ]
        started = time.perf_counter()
        written = index.upsert(points)
        report.index_s += time.perf_counter() - started
        stale = set(written.stale_ids)
        for w in upserts:
            outcomes[w.item.entity_id] = "stale" if w.item.entity_id in stale else "indexed"
    if deletes:
        started = time.perf_counter()
        written = index.delete([(w.item.entity_id, w.item.version) for w in deletes])
        report.index_s += time.perf_counter() - started
        stale = set(written.stale_ids)
        for w in deletes:
            outcomes[w.item.entity_id] = "stale" if w.item.entity_id in stale else "deleted"
    report.indexed += sum(1 for v in outcomes.values() if v == "indexed")
    report.deleted += sum(1 for v in outcomes.values() if v == "deleted")
    report.stale += sum(1 for v in outcomes.values() if v == "stale")
    return outcomes


def _record(conn: psycopg.Connection, report: SyncReport) -> None:
    """Metrics of one sync: throughput, freshness (commit to searchable) and the backlog left."""
    body = report.as_dict()
    tags = {"owner": report.owner}
    with conn.transaction():
        for name, value, unit in (
            ("index.sync.items", report.claimed, "items"),
            ("index.sync.items_per_s", body["items_per_s"], "items/s"),
            ("index.sync.dead_lettered", report.dead_lettered, "items"),
            ("index.sync.retrying", report.retrying, "items"),
            ("index.freshness.p95_s", body["freshness_p95_s"], "s"),
            ("index.backlog.pending", body.get("backlog_pending", 0), "items"),
            ("index.backlog.oldest_age_s", body.get("backlog_oldest_age_s", 0.0), "s"),
        ):
            record_metric(conn, name, value, unit, tags)
