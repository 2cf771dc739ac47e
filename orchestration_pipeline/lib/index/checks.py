"""The verifications of the vector index, as :class:`Verdict` values (the asset checks wrap them)."""

from __future__ import annotations

import random
import time

import psycopg

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.index.embedders import Embedder
from orchestration_pipeline.lib.index.location import FILTER_FIELDS, VectorIndex
from orchestration_pipeline.lib.telemetry import percentile
from orchestration_pipeline.lib.verdict import Verdict
from orchestration_pipeline.lib.wording import plural


def index_drift_zero(conn: psycopg.Connection) -> Verdict:
    """The latest reconciliation left no drift between the decisions and the index."""
    row = conn.execute(
        """SELECT run_id, finished_at, missing_in_index + stale_version + orphan_in_index,
                  repairs_enqueued, remaining_drift, samples->'remaining', error
           FROM index_reconcile_runs ORDER BY run_id DESC LIMIT 1"""
    ).fetchone()
    end_read(conn)
    if row is None:
        return Verdict(False, "no reconciliation of the index has run: materialize qdrant_index_state")
    run_id, finished_at, found, repairs, remaining, samples, error = row
    if error:
        return Verdict(
            False,
            f"the latest reconciliation (run {run_id}) could not finish: {error[:300]}",
            {"run_id": run_id, "finished_at": finished_at.isoformat(), "error": error[:2000]},
        )
    metadata = {
        "run_id": run_id,
        "finished_at": finished_at.isoformat(),
        "drift_found": found,
        "repairs_enqueued": repairs,
        "remaining_drift": remaining,
        "remaining_samples": samples or {},
    }
    if remaining:
        return Verdict(
            False,
            f"{plural(remaining, 'decision')} still differ between Postgres and the index after the repair "
            f"(run {run_id}): see the samples; is the index reachable? (`orchestration-pipeline index status`)",
            metadata,
        )
    return Verdict(True, f"no drift after run {run_id} ({plural(found, 'repair')} made)", metadata)


def no_dead_letters(conn: psycopg.Connection) -> Verdict:
    """No outbox item has spent its retries (dead letters waiting for a replay)."""
    rows = conn.execute(
        """SELECT d.fingerprint, min(e.message_template), count(*), (array_agg(d.entity_id ORDER BY d.dead_letter_id))[1:5]
           FROM search_dead_letters d JOIN search_dead_letter_errors e USING (fingerprint)
           WHERE d.replayed_at IS NULL GROUP BY d.fingerprint ORDER BY count(*) DESC"""
    ).fetchall()
    end_read(conn)
    total = sum(r[2] for r in rows)
    if not total:
        return Verdict(True, "no dead letters", {"dead_letters": 0})
    metadata = {
        "dead_letters": total,
        "fingerprints": len(rows),
        "by_error": [
            {"fingerprint": r[0], "error": r[1], "count": r[2], "sample_ids": r[3]} for r in rows[:5]
        ],
    }
    return Verdict(
        False,
        f"{plural(total, 'dead letter')} ({rows[0][1]}); fix the cause, then "
        "`orchestration-pipeline index replay-dead-letters --reason …`",
        metadata,
    )


def outbox_freshness(
    conn: psycopg.Connection, *, window_hours: float = 24.0, within_s: float = 30.0, min_share: float = 0.95
) -> Verdict:
    """At least ``min_share`` of the window's outbox items were searchable within ``within_s`` of
    their commit; an item still pending after ``within_s`` counts as late."""
    rows = conn.execute(
        """SELECT extract(epoch FROM coalesce(searchable_at, now()) - enqueued_at)::float8, done_at IS NULL
           FROM search_outbox
           WHERE enqueued_at > now() - %s * interval '1 hour'
             AND (done_at IS NOT NULL AND outcome <> 'dead'
                  OR done_at IS NULL AND enqueued_at < now() - %s * interval '1 second'
                  OR outcome = 'dead')""",
        (window_hours, within_s),
    ).fetchall()
    end_read(conn)
    if not rows:
        return Verdict(True, f"no outbox items in the last {window_hours:g} h", {"items": 0})
    ages = [r[0] for r in rows]
    on_time = sum(1 for age, pending in rows if not pending and age <= within_s)
    share = on_time / len(rows)
    p95 = percentile(ages, 95)
    metadata = {
        "items": len(rows),
        "on_time": on_time,
        "share_on_time": round(share, 4),
        "freshness_p95_s": round(p95, 3),
        "pending_late": sum(1 for _, pending in rows if pending),
        "within_s": within_s,
    }
    passed = share >= min_share
    text = f"{share:.1%} of {plural(len(rows), 'item')} searchable within {within_s:g} s (p95 {p95:.2f} s)"
    if passed:
        return Verdict(True, text, metadata)
    return Verdict(False, f"{text}, under {min_share:.0%}: is the index sync running?", metadata)


def payload_indexes_present(index: VectorIndex) -> Verdict:
    """Every field a search filters on has a payload index of its type."""
    present = dict(index.payload_indexes())
    missing = sorted(f for f in FILTER_FIELDS if f not in present)
    wrong = sorted(f for f, kind in FILTER_FIELDS.items() if f in present and present[f] != kind)
    metadata = {"present": present, "missing": missing, "wrong_type": wrong}
    if missing or wrong:
        problems = ", ".join(
            [f"{f} missing" for f in missing] + [f"{f} not {FILTER_FIELDS[f]}" for f in wrong]
        )
        return Verdict(
            False,
            f"payload indexes: {problems}; filtered searches scan every point — "
            "`orchestration-pipeline index sync` creates them",
            metadata,
        )
    return Verdict(True, f"all {len(FILTER_FIELDS)} filter fields have payload indexes", metadata)


def search_slo(
    conn: psycopg.Connection,
    index: VectorIndex,
    embedder: Embedder,
    *,
    probes: int = 20,
    k: int = 10,
    p95_ms: float = 150.0,
    min_recall: float = 0.98,
    seed: int | None = None,
) -> Verdict:
    """A small live probe: the p95 of whole searches (embedding included) and recall@k against
    exact search, on rationales sampled from the decisions."""
    texts = _sample_rationales(conn, probes, seed)
    if not texts:
        return Verdict(True, "no decisions to probe yet", {"probes": 0})
    # untimed: the first embedding loads the model (seconds), which is not what a search costs
    index.search(embedder.embed([_paraphrase(texts[0])])[0], k)
    latencies, found, wanted = [], 0, 0
    for text in texts:
        started = time.perf_counter()
        vector = embedder.embed([_paraphrase(text)])[0]
        hits = index.search(vector, k)
        latencies.append((time.perf_counter() - started) * 1000)
        exact = index.search(vector, k, exact=True, quantization=False)
        truth = {h.decision_id for h in exact}
        found += len(truth & {h.decision_id for h in hits})
        wanted += len(truth)
    recall = found / wanted if wanted else 1.0
    p95 = percentile(latencies, 95)
    metadata = {"probes": len(texts), "p95_ms": round(p95, 2), "recall_at_k": round(recall, 4), "k": k}
    problems = []
    if p95 > p95_ms:
        problems.append(f"p95 {p95:.1f} ms over {p95_ms:g} ms")
    if recall < min_recall:
        problems.append(f"recall@{k} {recall:.3f} under {min_recall:g}")
    if problems:
        return Verdict(False, "search SLO missed: " + "; ".join(problems), metadata)
    return Verdict(True, f"p95 {p95:.1f} ms, recall@{k} {recall:.3f} over {len(texts)} probes", metadata)


def _sample_rationales(conn: psycopg.Connection, probes: int, seed: int | None) -> list[str]:
    """About ``probes`` rationales drawn at random (a Bernoulli sample: no scan of an offset)."""
    count = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    texts: list[str] = []
    if count:
        percent = min(100.0, 100.0 * probes * 3 / count)
        texts = [
            r[0]
            for r in conn.execute(
                "SELECT rationale FROM decisions TABLESAMPLE BERNOULLI (%s) REPEATABLE (%s) LIMIT %s",
                (percent, seed if seed is not None else random.randrange(2**31), probes),
            )
        ]
    end_read(conn)
    return texts


def _paraphrase(text: str) -> str:
    """A query shaped like a person's: the first words of the rationale, as a question."""
    words = text.split()
    return "why " + " ".join(words[: max(4, len(words) // 2)])
