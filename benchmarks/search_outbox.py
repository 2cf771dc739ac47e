"""The outbox section of ``benchmarks/search.py``: a full reindex through the search outbox, and
freshness (commit to searchable) for a trickle of decisions."""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import search_dataset as ds
from _scratch import Scratch
from search_common import Run, log

from orchestration_pipeline.lib.db import connection, migrate
from orchestration_pipeline.lib.index.decisions import put_decisions
from orchestration_pipeline.lib.index.edge import EdgeIndex
from orchestration_pipeline.lib.index.embedders import Embedder, default_embedder
from orchestration_pipeline.lib.index.location import CollectionSettings
from orchestration_pipeline.lib.index.open import open_local_index
from orchestration_pipeline.lib.index.sync import SyncReport, SyncSettings, sync_outbox

# ---------------------------------------------------------------- the outbox


class CachedEmbedder:
    """The documents' vectors (the embedding cache) by text, under the live embedder's name: the
    same vector space, so the outbox machinery is measured without embedding 100k texts again.
    A text not among the documents is embedded live; ``hits`` and ``misses`` count both."""

    def __init__(self, live: Embedder, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.live, self.vectors = live, vectors
        self.name, self.dimension = live.name, live.dimension
        self.rows = {text: i for i, text in enumerate(texts)}
        self.hits = self.misses = 0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self.rows]
        fresh = iter(self.live.embed(missing) if missing else ())
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        return [self.vectors[self.rows[t]].tolist() if t in self.rows else next(fresh) for t in texts]


def decision_rows(items: Sequence[ds.Decision]) -> list[dict[str, Any]]:
    """Dataset decisions as ``put_decisions`` takes them."""
    return [
        {
            "decision_id": d.decision_id,
            "rationale": d.text,
            "org_id": d.org_id,
            "policy_id": d.policy_id,
            "status": d.status,
            "created_at": datetime.fromtimestamp(d.created_at, UTC),
        }
        for d in items
    ]


def spread_s(samples: Sequence[float]) -> dict[str, float]:
    """p50/p95/max of durations in seconds."""
    if not samples:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    p50, p95 = np.percentile(np.asarray(samples, dtype=np.float64), [50, 95])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "max": round(max(samples), 3),
        "n": len(samples),
    }


def outbox_reindex(
    run: Run, conn: psycopg.Connection, index: EdgeIndex, embedder: Embedder
) -> dict[str, Any]:
    """Every decision committed through ``put_decisions`` (the triggers enqueue the outbox rows),
    then one ``sync_outbox`` drains the outbox into the empty index, then ``optimize``; each timed."""
    n, batch = len(run.decisions), run.args.outbox_commit_batch
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        put_decisions(conn, decision_rows(run.decisions[start : start + batch]))
        conn.commit()
        if (start // batch) % max(1, n // batch // 10) == 0:
            log(f"outbox: committed {min(start + batch, n)}/{n} decisions")
    commit_s = time.perf_counter() - t0
    logged = [0]

    def progress(report: SyncReport) -> None:
        if report.claimed - logged[0] >= n / 10 or report.claimed >= n:
            logged[0] = report.claimed
            log(f"outbox: synced {report.claimed}/{n} ({report.claimed / report.elapsed_s:.0f} items/s)")

    settings = SyncSettings(batch_size=run.args.outbox_sync_batch, optimize_after=sys.maxsize)
    t0 = time.perf_counter()
    sync = sync_outbox(conn, index, embedder, settings, progress=progress)
    sync_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.optimize()
    optimize_s = time.perf_counter() - t0
    log(f"outbox reindex: commit {commit_s:.1f}s, sync {sync_s:.1f}s, optimize {optimize_s:.1f}s")
    body = sync.as_dict()
    return {
        "decisions": n,
        "commit_batch": batch,
        "commit_s": round(commit_s, 2),
        "commit_items_per_s": round(n / commit_s, 1),
        "sync_s": round(sync_s, 2),
        "sync_items_per_s": round(n / sync_s, 1),
        "sync": {
            k: body[k] for k in ("batches", "indexed", "embed_s", "index_s", "retrying", "dead_lettered")
        }
        | {"batch_size": settings.batch_size, "backlog_pending": body["backlog_pending"]},
        "optimize_s": round(optimize_s, 2),
        # from the first commit to the last item searchable (before optimize: searches scan meanwhile)
        "end_to_end_items_per_s": round(n / (commit_s + sync_s), 1),
        "total_s": round(commit_s + sync_s + optimize_s, 2),
        "points": index.count(),
        "shard": index.info(),
    }


def projected_reindex(run: Run, reindex: dict[str, Any]) -> dict[str, Any]:
    """The reindex with every text embedded live: the measured time minus the outbox embedder's
    own embedding time, plus N over the embedding throughput measured in ``embeddings``."""
    emb = run.results["embeddings"]
    embed_s = reindex["decisions"] / emb["throughput_texts_per_s"]
    outbox_s = reindex["total_s"] - reindex["sync"]["embed_s"]
    return {
        "projected": True,
        "how": "not measured: N / measured embedding throughput + the reindex time measured without embedding",
        "embedder": emb["embedder"],
        "throughput_texts_per_s": emb["throughput_texts_per_s"],
        "embed_s": round(embed_s, 1),
        "outbox_s": round(outbox_s, 2),
        "total_s": round(embed_s + outbox_s, 1),
    }


def trickle_writer(
    dsn: str, batches: list[list[ds.Decision]], interval_s: float, errors: list[BaseException]
) -> None:
    """Commit one batch every ``interval_s`` (on a fixed schedule) through its own connection."""
    try:
        with connection(dsn) as conn:
            start = time.perf_counter()
            for i, batch in enumerate(batches):
                time.sleep(max(0.0, start + i * interval_s - time.perf_counter()))
                put_decisions(conn, decision_rows(batch))
                conn.commit()
    except BaseException as exc:  # re-raised by the sync loop's thread
        errors.append(exc)


def outbox_trickle(
    run: Run, conn: psycopg.Connection, dsn: str, index: EdgeIndex, embedder: Embedder
) -> dict[str, Any]:
    """New decisions (1-5 per commit, seeded) committed every ``--outbox-trickle-interval-ms`` for
    ``--outbox-trickle-s`` by a writer thread, while this thread runs ``sync_outbox`` over and over
    as a sensor would (sleeping ``--outbox-idle-s`` when a sync found nothing). The freshness of
    each new decision is what its settled outbox row records: ``searchable_at - enqueued_at``."""
    args = run.args
    interval = args.outbox_trickle_interval_ms / 1000
    rng = random.Random(args.seed)
    sizes = [rng.randint(1, 5) for _ in range(max(1, round(args.outbox_trickle_s / interval)))]
    items = ds.decisions(sum(sizes), args.seed + 2_000_003)  # ids and texts unlike the reindexed ones
    bounds = np.cumsum([0, *sizes]).tolist()
    batches = [items[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    errors: list[BaseException] = []
    writer = threading.Thread(target=trickle_writer, args=(dsn, batches, interval, errors), daemon=True)
    syncs = idle = 0
    work = dict.fromkeys(("batches", "embedded", "embed_s", "index_s"), 0.0)
    deadline = time.perf_counter() + args.outbox_trickle_s + 120
    t0 = time.perf_counter()
    writer.start()
    while time.perf_counter() < deadline:
        writing = writer.is_alive()  # read before the sync: a sync after the last commit follows
        report = sync_outbox(conn, index, embedder)
        syncs += 1
        for key in work:
            work[key] += getattr(report, key)
        if not writing and report.backlog.pending == 0:
            break
        if report.claimed == 0:
            idle += 1
            time.sleep(args.outbox_idle_s)
    elapsed = time.perf_counter() - t0
    writer.join()
    if errors:
        raise errors[0]
    # a row still pending counts with its age so far (a lower bound): it cannot flatter the result
    rows = conn.execute(
        "SELECT extract(epoch FROM coalesce(searchable_at, clock_timestamp()) - enqueued_at)::float8, "
        "done_at IS NULL FROM search_outbox WHERE entity_id = ANY(%s)",
        ([d.decision_id for d in items],),
    ).fetchall()
    conn.rollback()
    fresh = [r[0] for r in rows]
    log(f"outbox trickle: {len(items)} decisions in {len(sizes)} commits, freshness {spread_s(fresh)}")
    return {
        "duration_s": round(elapsed, 2),
        "commits": len(sizes),
        "decisions": len(items),
        "interval_ms": args.outbox_trickle_interval_ms,
        "syncs": syncs,
        "idle_syncs": idle,
        # what the syncs spent their time on: embedding throughput here bounds the freshness
        "sync": {k: round(v, 3) for k, v in work.items()}
        | {"embed_texts_per_s": round(work["embedded"] / work["embed_s"], 1) if work["embed_s"] else None},
        "pending_at_end": sum(1 for r in rows if r[1]),
        "freshness_s": spread_s(fresh),
        "points": index.count(),
    }


def section_outbox(run: Run) -> dict[str, Any]:
    """The outbox pipeline end to end on a scratch PostgreSQL: a full reindex of the dataset into
    a fresh shard, then freshness under a trickle of new decisions into that shard."""
    if run.args.no_outbox:
        return {"skipped": "--no-outbox"}
    if run.args.outbox_embedder == "cached":
        texts = [d.text for d in run.decisions]
        embedder: Embedder = CachedEmbedder(run.embedder, texts, run.doc_vectors)
    else:
        embedder = default_embedder(run.args.outbox_embedder)
    scratch = Scratch.open(run.args.dsn, "orchestration")
    index = open_local_index(run.work / "edge-outbox", indexing_threshold_kb=run.args.indexing_threshold_kb)
    try:
        index.ensure_collection(
            CollectionSettings(dimension=embedder.dimension, embedder=embedder.name, hnsw_ef=run.args.hnsw_ef)
        )
        dsn = scratch.dsns["orchestration"]
        with connection(dsn) as conn:
            migrate(conn, "orchestration")
            reindex = outbox_reindex(run, conn, index, embedder)
            hits = getattr(embedder, "hits", None)
            trickle = outbox_trickle(run, conn, dsn, index, embedder)
    finally:
        index.close()
        shutil.rmtree(run.work / "edge-outbox", ignore_errors=True)
        scratch.close()
    return {
        "embedder": embedder.name,
        "embedder_mode": run.args.outbox_embedder,
        "database": "server (--dsn)" if run.args.dsn else "embedded, temporary",
        # cached mode: reindexed texts come from the cache, the trickle's new texts are embedded live
        "cache": {"hits": embedder.hits, "misses": embedder.misses, "reindex_hits": hits}
        if isinstance(embedder, CachedEmbedder)
        else None,
        "reindex": reindex,
        "reindex_projected_live_embedding": projected_reindex(run, reindex),
        "trickle": trickle,
    }


def add_outbox_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("outbox")
    group.add_argument("--no-outbox", action="store_true", help="skip the outbox section")
    group.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded, temporary)")
    group.add_argument(
        "--outbox-embedder",
        choices=("cached", "minilm", "hashing"),
        default="cached",
        help="cached: the documents' cached vectors (new texts embedded live); else embed everything live",
    )
    group.add_argument("--outbox-commit-batch", type=int, default=1_000, help="decisions per commit")
    group.add_argument(
        "--outbox-sync-batch", type=int, default=SyncSettings.batch_size, help="outbox rows per claim"
    )
    group.add_argument("--outbox-trickle-s", type=float, default=20.0, help="how long the trickle writes")
    group.add_argument("--outbox-trickle-interval-ms", type=float, default=100.0, help="between commits")
    group.add_argument("--outbox-idle-s", type=float, default=0.2, help="sync loop's sleep when idle")
