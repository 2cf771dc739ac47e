"""Search SLO: semantic search over decisions, in-process qdrant-edge against exact search.

    python benchmarks/search.py [--decisions 100000] [--queries 200] [--embedder minilm|hashing]
                                [--seed 1] [--hnsw-ef 128] [--no-baseline] [--cache-dir DIR]
                                [--no-outbox] [--dsn postgresql://...] [--outbox-embedder cached|minilm|hashing]
                                [--outbox-trickle-s 20] [--outbox-trickle-interval-ms 100]

A fixed replay dataset (``search_dataset.py``: seeded, ~all texts distinct, 20 orgs, 50
policies, 6 statuses, 90 days) is embedded (document vectors are cached in ``--cache-dir``,
keyed by a hash of the texts and the embedder's name; embedding throughput is measured on a
fresh 1,000-text sample every run), loaded into an ``EdgeIndex`` in a temporary directory
(scalar int8 quantization on) and optimized. Then, per query:

- the index query alone, unfiltered and filtered (a broad filter of ~10% and a narrow one of
  ~1% of the points; their measured selectivity is reported), p50/p95/p99 in ms;
- recall@10 against exact search (``exact=True``): searched with quantization (rescored) and
  without (``quantization=False``); the exact results are themselves checked against numpy;
- a second shard built without quantization (``--no-unquantized-shard`` skips it);
- the whole search: query embedding plus index query, p50/p95/p99 in ms;
- a baseline: qdrant-client local mode (``:memory:``, brute force) through ``ServerIndex``, on
  the first ``--baseline-points`` decisions (default 20,000: local mode warns above that and
  every query scans all points), reported as ``baseline_points``.

Then the outbox (``outbox``), on a scratch PostgreSQL (embedded and temporary, or a fresh
database on the ``--dsn`` server, dropped at the end) migrated like the orchestration DB:

- a full reindex: every decision committed through ``put_decisions`` in batches (the triggers
  write the outbox rows), one ``sync_outbox`` draining them into a fresh shard, then
  ``optimize``; commit rate, the sync's items/s, commit-to-searchable items/s, total time.
  ``--outbox-embedder cached`` (the default) serves the documents' cached vectors, so the
  machinery is measured without re-embedding; ``reindex_projected_live_embedding`` adds N over
  the measured embedding throughput to the time measured without embedding (projected, not
  measured); ``minilm`` or ``hashing`` embed everything live instead;
- freshness under a trickle: a writer thread commits 1-5 new decisions (seeded) every 100 ms
  for 20 s while ``sync_outbox`` runs over and over (sleeping 0.2 s when it found nothing), as
  a sensor would; p50/p95/max of ``searchable_at - enqueued_at`` of their outbox rows. Their
  texts are new, so the cached embedder embeds them live.

Targets (``targets`` in the JSON, each with its value and a pass boolean): index query alone
p95 <= 2 ms unfiltered and filtered; recall@10 >= 0.99 against exact; whole search p95 <= 50 ms;
outbox freshness p95 <= 2 s under the trickle (absent with ``--no-outbox``).
Prints one JSON line on stdout; progress goes to stderr. The temporary directory is removed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import search_dataset as ds
from qdrant_client import QdrantClient
from search_common import Run, embed, log, peak_rss_mb, settings
from search_outbox import add_outbox_args, section_outbox

from orchestration_pipeline.lib.index.edge import EdgeIndex
from orchestration_pipeline.lib.index.embedders import Embedder, default_embedder
from orchestration_pipeline.lib.index.location import (
    CollectionSettings,
    IndexPoint,
    SearchFilter,
    VectorIndex,
)
from orchestration_pipeline.lib.index.open import open_local_index
from orchestration_pipeline.lib.index.server import ServerIndex

HERE = Path(__file__).resolve().parent
K = 10
TARGETS = {
    "index_p95_ms": 2.0,
    "recall_at_10": 0.99,
    "whole_search_p95_ms": 50.0,
    "outbox_freshness_p95_s": 2.0,
}


# ---------------------------------------------------------------- measurement helpers


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 of durations in seconds, in milliseconds."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "n": len(ms),
    }


def search_filter(q: ds.Query) -> SearchFilter | None:
    if q.kind == "none":
        return None
    return SearchFilter(
        org_id=q.org_id,
        policy_id=q.policy_id,
        status=q.status,
        created_from=q.created_from,
        created_to=q.created_to,
    )


def numpy_top_k(run: Run, vectors: np.ndarray, limit: int = K) -> list[list[str]]:
    """The exact top-``limit`` ids per query by brute force over the first ``len(vectors)``
    decisions (cosine: the vectors are normalized here, whatever the embedder returns)."""
    docs = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    n = len(docs)
    out = []
    for q, qv in zip(run.queries, run.query_vectors, strict=True):
        scores = docs @ (qv / max(float(np.linalg.norm(qv)), 1e-12))
        scores[~run.columns.mask(q)[:n]] = -np.inf
        top = np.argpartition(-scores, min(limit, n - 1))[:limit]
        top = top[np.argsort(-scores[top])]
        out.append([run.decisions[i].decision_id for i in top if np.isfinite(scores[i])])
    return out


def recall(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    """Mean recall@K: the share of each exact top-K found, averaged over the queries."""
    shares = [len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True) if t]
    return round(float(np.mean(shares)), 4) if shares else 1.0


def timed_searches(
    run: Run, index: VectorIndex, rounds: int, **options: Any
) -> tuple[list[list[str]], dict[str, list[float]]]:
    """Every query through ``index.search`` (one warm-up pass, then ``rounds`` timed passes):
    the ids found, and the durations in seconds by query kind."""
    found = []
    for q, qv in zip(run.queries, run.query_vectors, strict=True):
        hits = index.search(qv.tolist(), K, search_filter(q), **options)
        found.append([h.decision_id for h in hits])
    times: dict[str, list[float]] = {"none": [], "broad": [], "narrow": []}
    vectors = [qv.tolist() for qv in run.query_vectors]
    filters = [search_filter(q) for q in run.queries]
    for _ in range(rounds):
        for q, vector, flt in zip(run.queries, vectors, filters, strict=True):
            t0 = time.perf_counter()
            index.search(vector, K, flt, **options)
            times[q.kind].append(time.perf_counter() - t0)
    return found, times


def latency_report(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        "unfiltered": percentiles(times["none"]),
        "filtered": percentiles(times["broad"] + times["narrow"]),
        "broad": percentiles(times["broad"]),
        "narrow": percentiles(times["narrow"]),
    }


def recall_report(run: Run, found: list[list[str]], truth: list[list[str]]) -> dict[str, float]:
    by_kind = {
        kind: recall(
            [f for f, q in zip(found, run.queries, strict=True) if q.kind == kind],
            [t for t, q in zip(truth, run.queries, strict=True) if q.kind == kind],
        )
        for kind in ("none", "broad", "narrow")
    }
    return {
        "all": recall(found, truth),
        **{"unfiltered" if k == "none" else k: v for k, v in by_kind.items()},
    }


# ---------------------------------------------------------------- embeddings


def embed_query(embedder: Embedder, text: str) -> list[float]:
    return embedder.embed([text])[0]


def cached_document_vectors(run: Run) -> tuple[np.ndarray, bool, Path | None, float | None]:
    """The documents' vectors from the cache, or embedded now and cached (written to a temporary
    name, then renamed: an interrupted run leaves no truncated file)."""
    texts = [d.text for d in run.decisions]
    name = run.embedder.name
    cache_dir = Path(run.args.cache_dir) if run.args.cache_dir else None
    key = hashlib.sha256(f"{ds.texts_digest(texts)}|{name}".encode()).hexdigest()[:20]
    path = cache_dir / f"decisions-{len(texts)}-{name.replace('/', '_')}-{key}.npy" if cache_dir else None
    if path is not None and path.exists():
        try:
            vectors = np.load(path)
        except (OSError, ValueError) as exc:
            log(f"cache file {path} is unreadable ({exc}): embedding again, it will be replaced")
        else:
            if vectors.shape == (len(texts), run.embedder.dimension):
                return vectors, True, path, None
            log(
                f"cache file {path} holds {vectors.shape}, not ({len(texts)}, {run.embedder.dimension}): embedding again"
            )
    t0 = time.perf_counter()
    vectors = embed_batched(run.embedder, texts)
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial.npy")
        np.save(partial, vectors)
        os.replace(partial, path)
    return vectors, False, path, seconds


def embed_batched(embedder: Embedder, texts: Sequence[str], batch: int = 2048) -> np.ndarray:
    """Embed in chunks, logging progress (100k MiniLM embeddings take minutes)."""
    parts = []
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        parts.append(embed(embedder, texts[start : start + batch]))
        done = start + len(parts[-1])
        rate = done / (time.perf_counter() - t0)
        log(f"embedded {done}/{len(texts)} ({rate:.0f} texts/s, {(len(texts) - done) / rate:.0f}s left)")
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


# ---------------------------------------------------------------- sections


def section_dataset(run: Run) -> dict[str, Any]:
    kinds = {k: sum(q.kind == k for q in run.queries) for k in ("none", "broad", "narrow")}
    return {
        **ds.summarize(run.decisions),
        "queries": len(run.queries),
        "query_kinds": {"unfiltered" if k == "none" else k: v for k, v in kinds.items()},
        "selectivity": ds.selectivity(run.columns, run.queries),
        "orgs": len(set(run.columns.org_id.tolist())),
        "policies": len(set(run.columns.policy_id.tolist())),
    }


def section_embeddings(run: Run) -> dict[str, Any]:
    """Embedding throughput on texts never cached, then the documents' vectors (cached) and the
    queries' vectors."""
    sample = [d.text for d in ds.decisions(run.args.sample, run.args.seed + 1_000_003)]
    t0 = time.perf_counter()
    run.embedder = default_embedder(run.args.embedder)  # None: MiniLM when installed
    embed(run.embedder, sample[:16])  # the model loads on first use; first calls also allocate
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    embed(run.embedder, sample)
    sample_s = time.perf_counter() - t0
    log(f"embedder {run.embedder.name}: {len(sample) / sample_s:.0f} texts/s on a fresh sample")
    run.doc_vectors, hit, path, docs_s = cached_document_vectors(run)
    run.query_vectors = embed(run.embedder, [q.text for q in run.queries])
    return {
        "embedder": run.embedder.name,
        "dimension": int(run.doc_vectors.shape[1]),
        "load_s": round(load_s, 2),
        "throughput_texts_per_s": round(len(sample) / sample_s, 1),
        "throughput_sample": len(sample),
        "cache_hit": hit,
        "cache_file": str(path) if path else None,
        "documents_embed_s": round(docs_s, 1) if docs_s is not None else None,
    }


def index_batches(run: Run, count: int, batch: int) -> Iterator[list[IndexPoint]]:
    """The first ``count`` decisions as index points, ``batch`` at a time (built lazily: 100k
    vectors as Python float lists would take about a gigabyte)."""
    for start in range(0, count, batch):
        yield [
            IndexPoint(
                decision_id=d.decision_id,
                version=1,
                content_hash=hashlib.sha256(d.text.encode()).hexdigest(),
                vector=vector.tolist(),
                payload={
                    "org_id": d.org_id,
                    "policy_id": d.policy_id,
                    "status": d.status,
                    "created_at": d.created_at,
                },
            )
            for d, vector in zip(
                run.decisions[start : start + batch], run.doc_vectors[start : start + batch], strict=True
            )
        ]


def load_index(run: Run, index: VectorIndex, count: int) -> dict[str, float]:
    """Upsert the first ``count`` decisions in batches, then optimize; both timed."""
    t0 = time.perf_counter()
    for points in index_batches(run, count, run.args.batch):
        index.upsert(points)
    upsert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.optimize()
    optimize_s = time.perf_counter() - t0
    log(f"loaded {count} points: upsert {upsert_s:.1f}s, optimize {optimize_s:.1f}s")
    return {
        "points": index.count(),
        "upsert_s": round(upsert_s, 2),
        "upsert_points_per_s": round(count / upsert_s) if upsert_s else None,
        "optimize_s": round(optimize_s, 2),
    }


def open_edge(run: Run, name: str, quantization: bool) -> EdgeIndex:
    index = open_local_index(run.work / name, indexing_threshold_kb=run.args.indexing_threshold_kb)
    index.ensure_collection(settings(run, quantization))
    return index


def section_edge(run: Run) -> dict[str, Any]:
    """The default configuration: a quantized shard, searched with and without quantization.
    It stays open (``run.edge``) for the sections after this one."""
    run.edge = index = open_edge(run, "edge-quantized", quantization=True)
    build = load_index(run, index, len(run.decisions))
    build["shard"] = index.info()
    run.truth, _ = timed_searches(run, index, rounds=0, exact=True)
    found, times = timed_searches(run, index, rounds=run.args.rounds)
    found_raw, times_raw = timed_searches(run, index, rounds=run.args.rounds, quantization=False)
    return {
        **build,
        "hnsw_ef": run.args.hnsw_ef,
        "query_ms": latency_report(times),
        "query_ms_quantization_off": latency_report(times_raw),
        "recall_at_10": recall_report(run, found, run.truth),
        "recall_at_10_quantization_off": recall_report(run, found_raw, run.truth),
        "exact_vs_numpy_recall_at_10": recall(run.truth, numpy_top_k(run, run.doc_vectors)),
    }


def section_whole_search(run: Run) -> dict[str, Any]:
    """Query embedding plus index query, per query, as a caller of the search sees it."""
    total, embed_only = [], []
    for _ in range(max(run.args.rounds, 1)):
        for q in run.queries:
            t0 = time.perf_counter()
            vector = embed_query(run.embedder, q.text)
            t1 = time.perf_counter()
            run.edge.search(vector, K, search_filter(q))
            total.append(time.perf_counter() - t0)
            embed_only.append(t1 - t0)
    return {"total_ms": percentiles(total), "query_embed_ms": percentiles(embed_only)}


def section_unquantized_shard(run: Run) -> dict[str, Any]:
    """The same points in a shard built without quantization (full-precision HNSW only)."""
    if run.args.no_unquantized_shard:
        return {"skipped": "--no-unquantized-shard"}
    index = open_edge(run, "edge-plain", quantization=False)
    try:
        build = load_index(run, index, len(run.decisions))
        build["shard"] = index.info()
        found, times = timed_searches(run, index, rounds=run.args.rounds)
    finally:
        index.close()
        shutil.rmtree(run.work / "edge-plain", ignore_errors=True)
    return {**build, "query_ms": latency_report(times), "recall_at_10": recall_report(run, found, run.truth)}


def section_baseline(run: Run) -> dict[str, Any]:
    """qdrant-client local mode on a subset of the same points and queries."""
    if run.args.no_baseline:
        return {"skipped": "--no-baseline"}
    count = min(run.args.baseline_points, len(run.decisions))
    client = QdrantClient(location=":memory:")
    index = ServerIndex(":memory:", client=client)
    try:
        index.ensure_collection(settings(run, quantization=True))
        build = load_index(run, index, count)
        found, times = timed_searches(run, index, rounds=1)
    finally:
        client.close()
    truth = numpy_top_k(run, run.doc_vectors[:count])
    return {
        "baseline_points": count,
        "mode": "qdrant-client local (:memory:), brute force",
        "subset": f"the first {count} of {len(run.decisions)} decisions; exact top-10 of that subset as truth",
        **build,
        "query_ms": latency_report(times),
        "recall_at_10_vs_numpy": recall_report(run, found, truth),
    }


def section_targets(run: Run) -> dict[str, Any]:
    """Each target with the value measured and whether it passes."""
    edge = run.results["edge"]
    values = {
        "index_p95_ms_unfiltered": (edge["query_ms"]["unfiltered"]["p95"], TARGETS["index_p95_ms"], "<="),
        "index_p95_ms_filtered": (edge["query_ms"]["filtered"]["p95"], TARGETS["index_p95_ms"], "<="),
        "recall_at_10": (edge["recall_at_10"]["all"], TARGETS["recall_at_10"], ">="),
        "whole_search_p95_ms": (
            run.results["whole_search"]["total_ms"]["p95"],
            TARGETS["whole_search_p95_ms"],
            "<=",
        ),
    }
    trickle = run.results["outbox"].get("trickle")
    if trickle is not None:  # absent with --no-outbox
        p95 = trickle["freshness_s"]["p95"]
        values["outbox_freshness_p95_le_2s"] = (p95, TARGETS["outbox_freshness_p95_s"], "<=")
    out: dict[str, Any] = {
        name: {
            "value": value,
            "target": f"{op} {target}",
            "pass": value is not None and (value <= target if op == "<=" else value >= target),
        }
        for name, (value, target, op) in values.items()
    }
    out["all_pass"] = all(t["pass"] for t in out.values())
    return out


# Run in this order, each result under its name; a section reads what earlier ones left in ``Run``.
SECTIONS: list[tuple[str, Callable[[Run], dict[str, Any]]]] = [
    ("dataset", section_dataset),
    ("embeddings", section_embeddings),
    ("edge", section_edge),
    ("whole_search", section_whole_search),
    ("edge_unquantized_shard", section_unquantized_shard),
    ("baseline", section_baseline),
    ("outbox", section_outbox),
    ("targets", section_targets),
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--embedder", choices=("minilm", "hashing"), default=None, help="default: minilm when installed"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hnsw-ef", type=int, default=CollectionSettings.hnsw_ef)
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the qdrant-client local-mode baseline"
    )
    parser.add_argument("--baseline-points", type=int, default=20_000, help="points loaded into the baseline")
    parser.add_argument(
        "--no-unquantized-shard", action="store_true", help="skip the shard built without quantization"
    )
    parser.add_argument(
        "--cache-dir", default=str(HERE / ".cache"), help="document embedding cache ('' for none)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the queries")
    parser.add_argument("--sample", type=int, default=1_000, help="fresh texts for the embedding throughput")
    parser.add_argument("--batch", type=int, default=1_000, help="points per upsert")
    parser.add_argument(
        "--indexing-threshold-kb",
        type=int,
        default=None,
        help="segments above this many KB of vectors get an HNSW graph (default: Qdrant's, ~6,500 points)",
    )
    add_outbox_args(parser)
    args = parser.parse_args(argv)
    if args.decisions < K or args.queries < 4:
        parser.error(f"--decisions must be at least {K} and --queries at least 4")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_at_start = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="orch-search-bench-"))
    run = None
    try:
        t0 = time.perf_counter()
        decisions = ds.decisions(args.decisions, args.seed)
        queries = ds.queries(args.queries, args.seed)
        run = Run(args, work, decisions, queries, ds.PayloadColumns.of(decisions))
        generate_s = time.perf_counter() - t0
        log(f"generated {len(decisions)} decisions and {len(queries)} queries in {generate_s:.1f}s")
        for name, section in SECTIONS:
            t0 = time.perf_counter()
            run.results[name] = section(run)
            log(f"{name} done in {time.perf_counter() - t0:.1f}s (peak RSS {peak_rss_mb():.0f} MB)")
    finally:
        if run is not None and run.edge is not None:
            run.edge.close()
        shutil.rmtree(work, ignore_errors=True)
    line = {
        "benchmark": "search",
        "decisions": args.decisions,
        "queries": args.queries,
        "seed": args.seed,
        "embedder": run.results["embeddings"]["embedder"],
        "generate_s": round(generate_s, 2),
        **run.results,
        "targets_met": run.results["targets"]["all_pass"],
        # the machine's load while measuring: latencies and throughput are only comparable at similar loads
        "load_avg_1m": {"start": load_at_start, "end": round(os.getloadavg()[0], 2)},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
