"""What the sections of ``benchmarks/search.py`` share: the run state, logging, embedding, settings."""

from __future__ import annotations

import argparse
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import search_dataset as ds

from orchestration_pipeline.lib.index.edge import EdgeIndex
from orchestration_pipeline.lib.index.embedders import Embedder
from orchestration_pipeline.lib.index.location import CollectionSettings


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def log(message: str) -> None:
    print(f"[search] {message}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """What the sections share: the arguments, the dataset, its vectors, and the results so far."""

    args: argparse.Namespace
    work: Path
    decisions: list[ds.Decision]
    queries: list[ds.Query]
    columns: ds.PayloadColumns
    embedder: Embedder | None = None
    doc_vectors: np.ndarray | None = None
    query_vectors: np.ndarray | None = None
    edge: EdgeIndex | None = None  # the quantized shard, open from section_edge to the end
    truth: list[list[str]] = field(default_factory=list)  # exact top-K decision ids per query
    results: dict[str, Any] = field(default_factory=dict)


def embed(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    return np.asarray(embedder.embed(list(texts)), dtype=np.float32)


def settings(run: Run, quantization: bool) -> CollectionSettings:
    return CollectionSettings(
        dimension=int(run.doc_vectors.shape[1]),
        embedder=run.embedder.name,
        quantization=quantization,
        hnsw_ef=run.args.hnsw_ef,
    )
