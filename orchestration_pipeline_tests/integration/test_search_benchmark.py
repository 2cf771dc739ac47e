"""The search benchmark: its replay dataset is fixed and shaped as documented, and the script runs.

The script is run on a tiny workload with the hashing embedder; figures that small mean nothing,
so what is checked is that every section reports its fields, consistently and within range.
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


def run_search_benchmark(cache_dir: Path) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "search.py"),
            *"--decisions 2000 --queries 20 --embedder hashing --rounds 1 --sample 200".split(),
            # a small indexing threshold: HNSW graphs even at this size
            *"--baseline-points 1000 --indexing-threshold-kb 100".split(),
            *("--cache-dir", str(cache_dir)),
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


@pytest.mark.slow
def test_search_benchmark_runs_and_reuses_its_embedding_cache(tmp_path: Path) -> None:
    out = run_search_benchmark(tmp_path)
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

    targets = out["targets"]
    assert set(targets) == {
        "index_p95_ms_unfiltered",
        "index_p95_ms_filtered",
        "recall_at_10",
        "whole_search_p95_ms",
        "all_pass",
    }
    assert targets["recall_at_10"]["value"] == edge["recall_at_10"]["all"]
    assert targets["index_p95_ms_unfiltered"]["pass"] == (edge["query_ms"]["unfiltered"]["p95"] <= 2.0)
    assert (
        out["targets_met"]
        == targets["all_pass"]
        == all(t["pass"] for k, t in targets.items() if k != "all_pass")
    )

    again = run_search_benchmark(tmp_path)
    assert again["embeddings"]["cache_hit"] is True
    assert again["embeddings"]["cache_file"] == emb["cache_file"]
    assert again["dataset"] == out["dataset"]

    # a damaged cache file is embedded again and replaced, not trusted
    Path(emb["cache_file"]).write_bytes(b"not an array")
    third = run_search_benchmark(tmp_path)
    assert (
        third["embeddings"]["cache_hit"] is False and third["embeddings"]["cache_file"] == emb["cache_file"]
    )
    assert np.load(emb["cache_file"]).shape == (2000, emb["dimension"])
