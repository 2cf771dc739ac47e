"""The search benchmark: its replay dataset is fixed and shaped as documented, and the script runs.

The script is run on a tiny workload with the hashing embedder; figures that small mean nothing,
so what is checked is that every section reports its fields, consistently and within range. The
outbox section runs once (on the tests' PostgreSQL server, with a 2-second trickle); the runs that
check the embedding cache skip it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from orchestration_pipeline_tests.conftest import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"


@functools.cache
def load_dataset_module() -> ModuleType:
    """benchmarks/search_dataset.py, loaded by path (benchmarks/ is not a package); registered in
    sys.modules under its own name, as dataclasses need."""
    name = "orch_benchmarks_search_dataset"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / "search_dataset.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_dataset_is_a_function_of_size_and_seed() -> None:
    sd = load_dataset_module()
    a, b, other = sd.decisions(500, 3), sd.decisions(500, 3), sd.decisions(500, 4)
    assert a == b
    assert [d.text for d in a] != [d.text for d in other]
    assert sd.queries(40, 3) == sd.queries(40, 3)
    assert sd.texts_digest([d.text for d in a]) != sd.texts_digest([d.text for d in other])


def test_dataset_is_diverse_and_filters_are_as_selective_as_documented() -> None:
    sd = load_dataset_module()
    items = sd.decisions(20_000, 1)
    summary = sd.summarize(items)
    assert summary["distinct_share"] >= 0.99
    assert len({d.org_id for d in items}) == 20 and len({d.policy_id for d in items}) == 50
    assert {d.status for d in items} == {s for s, _ in sd.STATUSES}
    span = max(d.created_at for d in items) - min(d.created_at for d in items)
    assert 85 * sd.DAY < span <= 90 * sd.DAY
    qs = sd.queries(200, 1)
    assert [sum(q.kind == k for q in qs) for k in ("none", "broad", "narrow")] == [100, 50, 50]
    assert len({q.text for q in qs if q.kind == "none"}) > 40
    shares = sd.selectivity(sd.PayloadColumns.of(items), qs)
    assert 0.07 <= shares["broad"]["mean"] <= 0.13
    assert 0.005 <= shares["narrow"]["mean"] <= 0.02
    # the mask is the filter: an unfiltered query keeps everything, a filter keeps what matches
    columns = sd.PayloadColumns.of(items)
    narrow = next(q for q in qs if q.kind == "narrow")
    kept = [d for d, keep in zip(items, columns.mask(narrow), strict=True) if keep]
    assert kept and all(d.org_id == narrow.org_id for d in kept)
    assert columns.mask(next(q for q in qs if q.kind == "none")).all()


def run_search_benchmark(cache_dir: Path, *extra: str) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "search.py"),
            *"--decisions 2000 --queries 20 --embedder hashing --rounds 1 --sample 200".split(),
            # a small indexing threshold: HNSW graphs even at this size
            *"--baseline-points 1000 --indexing-threshold-kb 100".split(),
            *("--cache-dir", str(cache_dir)),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def check_latencies(report: dict) -> None:
    for kind in ("unfiltered", "filtered", "broad", "narrow"):
        p = report[kind]
        assert 0 < p["p50"] <= p["p95"] <= p["p99"], (kind, p)


def check_recalls(report: dict) -> None:
    assert set(report) == {"all", "unfiltered", "broad", "narrow"}
    assert all(0 <= value <= 1 for value in report.values()), report


def check_outbox(out: dict) -> None:
    """The reindex put every decision in the index through the outbox, and the trickle's new
    decisions all became searchable, each with its freshness measured."""
    outbox = out["outbox"]
    assert outbox["embedder"] == "hashing-384" and outbox["embedder_mode"] == "cached"
    reindex = outbox["reindex"]
    assert reindex["decisions"] == reindex["points"] == reindex["sync"]["indexed"] == 2000
    assert reindex["sync"]["backlog_pending"] == reindex["sync"]["dead_lettered"] == 0
    assert reindex["shard"]["indexed_vectors"] > 0
    # commit, then sync: the end-to-end rate is below both, the total their sum plus optimize
    assert (
        0
        < reindex["end_to_end_items_per_s"]
        < min(reindex["commit_items_per_s"], reindex["sync_items_per_s"])
    )
    assert reindex["total_s"] == pytest.approx(
        reindex["commit_s"] + reindex["sync_s"] + reindex["optimize_s"], abs=0.02
    )
    # cached mode: every reindexed text came from the cache, the trickle's new texts were embedded live
    cache = outbox["cache"]
    assert cache["reindex_hits"] == 2000 and cache["misses"] > 0
    assert cache["hits"] + cache["misses"] == 2000 + outbox["trickle"]["decisions"]

    projected = outbox["reindex_projected_live_embedding"]
    assert projected["projected"] is True and projected["embedder"] == out["embeddings"]["embedder"]
    assert projected["embed_s"] == pytest.approx(2000 / out["embeddings"]["throughput_texts_per_s"], abs=0.06)
    assert projected["total_s"] == pytest.approx(projected["embed_s"] + projected["outbox_s"], abs=0.06)

    trickle = outbox["trickle"]
    assert trickle["commits"] == 20 and trickle["commits"] <= trickle["decisions"] <= 5 * trickle["commits"]
    assert trickle["pending_at_end"] == 0 and trickle["points"] == 2000 + trickle["decisions"]
    fresh = trickle["freshness_s"]
    assert fresh["n"] == trickle["decisions"] and 0 < fresh["p50"] <= fresh["p95"] <= fresh["max"]
    assert trickle["syncs"] > trickle["idle_syncs"] >= 0
    work = trickle["sync"]
    assert work["embedded"] == trickle["decisions"] and 1 <= work["batches"] <= trickle["decisions"]
    assert work["embed_texts_per_s"] > 0 and work["index_s"] > 0


@pytest.mark.slow
def test_search_benchmark_runs_and_reuses_its_embedding_cache(tmp_path: Path, pg_admin_dsn: str) -> None:
    out = run_search_benchmark(tmp_path, "--dsn", pg_admin_dsn, "--outbox-trickle-s", "2")
    assert out["benchmark"] == "search" and out["decisions"] == 2000 and out["embedder"] == "hashing-384"
    assert out["dataset"]["decisions"] == 2000 and out["dataset"]["query_kinds"]["unfiltered"] == 10
    assert (
        0
        < out["dataset"]["selectivity"]["narrow"]["mean"]
        < out["dataset"]["selectivity"]["broad"]["mean"]
        < 1
    )

    emb = out["embeddings"]
    assert emb["cache_hit"] is False and emb["throughput_texts_per_s"] > 0 and emb["dimension"] > 0
    assert Path(emb["cache_file"]).parent == tmp_path and Path(emb["cache_file"]).exists()

    edge = out["edge"]
    assert edge["points"] == 2000 and edge["optimize_s"] >= 0
    assert edge["shard"]["indexed_vectors"] > 0  # searched through the graph, not only by scanning
    for section in (edge["query_ms"], edge["query_ms_quantization_off"], out["baseline"]["query_ms"]):
        check_latencies(section)
    for section in (
        edge["recall_at_10"],
        edge["recall_at_10_quantization_off"],
        out["edge_unquantized_shard"]["recall_at_10"],
        out["baseline"]["recall_at_10_vs_numpy"],
    ):
        check_recalls(section)
    # exact search is exact: it agrees with brute force in numpy
    assert edge["exact_vs_numpy_recall_at_10"] >= 0.99
    whole = out["whole_search"]
    assert whole["total_ms"]["p95"] >= whole["query_embed_ms"]["p50"] > 0
    assert out["baseline"]["baseline_points"] == out["baseline"]["points"] == 1000

    check_outbox(out)

    targets = out["targets"]
    assert set(targets) == {
        "index_p95_ms_unfiltered",
        "index_p95_ms_filtered",
        "recall_at_10",
        "whole_search_p95_ms",
        "outbox_freshness_p95_le_2s",
        "all_pass",
    }
    assert targets["recall_at_10"]["value"] == edge["recall_at_10"]["all"]
    freshness = targets["outbox_freshness_p95_le_2s"]
    assert freshness["value"] == out["outbox"]["trickle"]["freshness_s"]["p95"]
    assert freshness["pass"] == (freshness["value"] <= 2.0)
    assert targets["index_p95_ms_unfiltered"]["pass"] == (edge["query_ms"]["unfiltered"]["p95"] <= 2.0)
    assert (
        out["targets_met"]
        == targets["all_pass"]
        == all(t["pass"] for k, t in targets.items() if k != "all_pass")
    )

    again = run_search_benchmark(tmp_path, "--no-outbox")
    assert (
        again["outbox"] == {"skipped": "--no-outbox"} and "outbox_freshness_p95_le_2s" not in again["targets"]
    )
    assert again["embeddings"]["cache_hit"] is True
    assert again["embeddings"]["cache_file"] == emb["cache_file"]
    assert again["dataset"] == out["dataset"]

    # a damaged cache file is embedded again and replaced, not trusted
    Path(emb["cache_file"]).write_bytes(b"not an array")
    third = run_search_benchmark(tmp_path, "--no-outbox")
    assert (
        third["embeddings"]["cache_hit"] is False and third["embeddings"]["cache_file"] == emb["cache_file"]
    )
    assert np.load(emb["cache_file"]).shape == (2000, emb["dimension"])
