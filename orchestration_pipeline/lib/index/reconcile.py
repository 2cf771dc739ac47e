"""Reconciling the index with PostgreSQL: find drift, enqueue repairs, record the outcome.

Expected: every current decision's (id, version, content_hash). Actual: a scroll of the index.
Drift classes:

- ``missing_in_index``: a decision the index does not hold;
- ``stale_version``: the index holds another version or content hash of it;
- ``orphan_in_index``: a point whose decision no longer exists.

A drifting decision with a pending outbox row not yet attempted is ``in_flight`` (the sync has
not reached it yet) and gets no second repair; one whose row failed and waits for a retry is
drift like any other (repaired again, and counted). The rest get a repair row in ``search_outbox`` (cause ``repair``):
an upsert at the decision's version, or a delete of the orphan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.index import outbox
from orchestration_pipeline.lib.index.decisions import expected_states
from orchestration_pipeline.lib.index.embedders import Embedder
from orchestration_pipeline.lib.index.location import VectorIndex
from orchestration_pipeline.lib.index.sync import SyncSettings, sync_outbox
from orchestration_pipeline.lib.telemetry import record_metric

DRIFT_CLASSES = ("missing_in_index", "stale_version", "orphan_in_index")
SAMPLE_SIZE = 10


@dataclass
class IndexDrift:
    expected: int = 0
    indexed: int = 0
    ids: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in DRIFT_CLASSES})
    in_flight: int = 0
    compare_s: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.ids.items()}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def samples(self) -> dict[str, list[str]]:
        return {k: sorted(v)[:SAMPLE_SIZE] for k, v in self.ids.items()}


def compare(conn: psycopg.Connection, index: VectorIndex) -> IndexDrift:
    """Compare the decisions with what the index holds; in-flight entities are left out of the
    drift (counted in ``in_flight``)."""
    started = time.perf_counter()
    expected = expected_states(conn)
    pending = {
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT entity_id FROM search_outbox WHERE done_at IS NULL AND attempts = 0"
        )
    }
    end_read(conn)  # no transaction stays open across the index scroll
    drift = IndexDrift(expected=len(expected))
    seen: set[str] = set()
    for state in index.states():
        drift.indexed += 1
        seen.add(state.decision_id)
        want = expected.get(state.decision_id)
        if want is None:
            kind = "orphan_in_index"
        elif want != (state.version, state.content_hash):
            kind = "stale_version"
        else:
            continue
        _classify(drift, kind, state.decision_id, pending)
    for decision_id in expected.keys() - seen:
        _classify(drift, "missing_in_index", decision_id, pending)
    drift.compare_s = time.perf_counter() - started
    return drift


def _classify(drift: IndexDrift, kind: str, decision_id: str, pending: set[str]) -> None:
    if decision_id in pending:
        drift.in_flight += 1
    else:
        drift.ids[kind].append(decision_id)


def enqueue_repairs(conn: psycopg.Connection, drift: IndexDrift) -> int:
    """One repair row per drifting decision, in one transaction: upserts at the decision's current
    version, deletes of orphans (at a version above any the index may hold)."""
    upsert_ids = drift.ids["missing_in_index"] + drift.ids["stale_version"]
    with conn.transaction():
        rows = conn.execute(
            "SELECT decision_id, version, content_hash FROM decisions WHERE decision_id = ANY(%s)",
            (upsert_ids,),
        ).fetchall()
        items = [(r[0], int(r[1]), "upsert", r[2]) for r in rows]
        orphans = drift.ids["orphan_in_index"]
        if orphans:
            top = conn.execute("SELECT nextval('decision_version_seq')").fetchone()[0]
            items += [(decision_id, int(top), "delete", None) for decision_id in orphans]
        return outbox.enqueue(conn, items, "repair")


@dataclass(frozen=True)
class ReconcileResult:
    run_id: int
    found: IndexDrift
    repairs_enqueued: int
    remaining: IndexDrift | None
    started_at: datetime

    @property
    def remaining_drift(self) -> int | None:
        return None if self.remaining is None else self.remaining.total

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "expected": self.found.expected,
            "indexed": self.found.indexed,
            **self.found.counts,
            "in_flight": self.found.in_flight,
            "drift": self.found.total,
            "repairs_enqueued": self.repairs_enqueued,
            "remaining_drift": self.remaining_drift,
            "remaining_in_flight": None if self.remaining is None else self.remaining.in_flight,
            "samples": self.found.samples(),
            "remaining_samples": None if self.remaining is None else self.remaining.samples(),
            "compare_s": round(self.found.compare_s, 3),
        }


def record_reconcile(
    conn: psycopg.Connection,
    started_at: datetime,
    found: IndexDrift,
    repairs: int,
    remaining: IndexDrift | None,
    error: str | None = None,
) -> ReconcileResult:
    """Store one reconciliation and its metrics (drift per class, repairs, what remained, or why it
    could not finish)."""
    samples = {"found": found.samples(), "remaining": remaining.samples() if remaining else None}
    with conn.transaction():
        run_id = conn.execute(
            """INSERT INTO index_reconcile_runs (started_at, expected, indexed, missing_in_index,
                   stale_version, orphan_in_index, in_flight, repairs_enqueued, remaining_drift, samples, error)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING run_id""",
            (started_at, found.expected, found.indexed, *(found.counts[k] for k in DRIFT_CLASSES),
             found.in_flight, repairs, None if remaining is None else remaining.total, Jsonb(samples), error),
        ).fetchone()[0]  # fmt: skip
        for kind, count in found.counts.items():
            record_metric(conn, "index.drift", count, "items", {"class": kind, "run_id": run_id})
        record_metric(conn, "index.repairs_enqueued", repairs, "items", {"run_id": run_id})
        if remaining is not None:
            record_metric(conn, "index.drift_remaining", remaining.total, "items", {"run_id": run_id})
    return ReconcileResult(run_id, found, repairs, remaining, started_at)


def reconcile_index(
    conn: psycopg.Connection,
    index: VectorIndex,
    embedder: Embedder,
    settings: SyncSettings | None = None,
) -> ReconcileResult:
    """The whole cycle: drain the outbox, compare, enqueue repairs, sync them, compare again, and
    record what was found and what remained."""
    started_at = datetime.now(UTC)
    found, repairs = IndexDrift(), 0
    try:
        sync_outbox(conn, index, embedder, settings)
        found = compare(conn, index)
        repairs = enqueue_repairs(conn, found) if found.total else 0
        remaining = found
        if repairs:
            sync_outbox(conn, index, embedder, settings)
            remaining = compare(conn, index)
    except Exception as exc:  # recorded (the drift check then fails, naming it), then raised
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        record_reconcile(conn, started_at, found, repairs, None, error=f"{type(exc).__name__}: {exc}")
        raise
    return record_reconcile(conn, started_at, found, repairs, remaining)
