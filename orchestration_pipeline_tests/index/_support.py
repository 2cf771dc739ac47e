"""Shared pieces of the index tests: a real in-process shard, and adapters that fail on purpose."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from orchestration_pipeline.lib.index.edge import EdgeIndex
from orchestration_pipeline.lib.index.embedders import HashingEmbedder
from orchestration_pipeline.lib.index.location import CollectionSettings, IndexUnavailable

# Rationales in the voice of real producers: a CI orchestrator, an AI coding agent, a deploy bot,
# a data-quality gate and a cost guard.
RATIONALES = [
    "Retried the deploy step because the registry returned 503 twice; backoff 30s keeps us under the rate limit",
    "Skipped lint on generated protobuf files under api/gen/ since they are rebuilt on every run",
    "Rolled back payments-api v2.14.1: p99 latency rose from 180ms to 2.3s after the connection pool change",
    "Escalated to on-call: the migration would lock the orders table for an estimated 14 minutes",
    "Denied the request to read secrets/prod.env: policy sec-004 forbids agents from reading production secrets",
    "Held the nightly load of customer_events: 38% of rows had a null account_id, above the 1% threshold",
    "Chose the smaller g5.xlarge runner: the job's peak memory was 11 GiB and the cost halves",
    "Approved the dependency bump of requests to 2.32.3 after the test suite and the SCA scan passed",
    "Paused the rollout at 25%: error budget burn rate 14x over the last hour",
    "Split the refactor into three pull requests so each stays under 400 changed lines for review",
]


def edge_index(path: Path, embedder=None) -> EdgeIndex:
    embedder = embedder or HashingEmbedder()
    index = EdgeIndex(path)
    index.ensure_collection(CollectionSettings(dimension=embedder.dimension, embedder=embedder.name))
    return index


class Unreachable:
    """An index whose backend is down: every call fails as a closed port would."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            self.calls += 1
            raise IndexUnavailable("connection refused: the index at 127.0.0.1:1 is down")

        return fail


class PoisonEmbedder:
    """The hashing embedder, but a rationale containing ``POISON`` makes the whole call fail (as a
    provider rejecting one input fails its batch)."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder()
        self.name, self.dimension = self.inner.name, self.inner.dimension
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        if any("POISON" in t for t in texts):
            raise ValueError("input 17 is not valid UTF-8 after normalisation")
        return self.inner.embed(texts)


class Serialized:
    """One index shared by threads, every call under one lock (what the shard host does)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.lock = threading.Lock()

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def call(*args, **kwargs):
            with self.lock:
                result = method(*args, **kwargs)
                return list(result) if name == "states" else result

        return call


class WritesFail:
    """An index that can be read but refuses writes (a full disk, a read-only replica)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        if name in ("upsert", "delete", "optimize"):

            def fail(*args, **kwargs):
                raise OSError(28, "No space left on device")

            return fail
        return getattr(self.inner, name)
