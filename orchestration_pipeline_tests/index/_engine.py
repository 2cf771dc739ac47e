"""Shared pieces of the engine tests: deterministic points, brute-force ranking, host cleanup."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from orchestration_pipeline.lib.index.location import CollectionSettings, IndexPoint

DIM = 16
SETTINGS = CollectionSettings(dimension=DIM, embedder="test-16")
ORGS = ("org-a", "org-b", "org-c")
POLICIES = ("pol-1", "pol-2")
STATUSES = ("approved", "denied")


def unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def random_vector(rng: random.Random, dim: int = DIM) -> list[float]:
    return unit([rng.gauss(0.0, 1.0) for _ in range(dim)])


def make_points(
    n: int, *, seed: int = 7, start: int = 0, version: int = 1, dim: int = DIM
) -> list[IndexPoint]:
    """``n`` decisions d{start}..: payload fields cycle through fixed values, created_at = 1000 + i."""
    rng = random.Random(seed)
    return [
        IndexPoint(
            decision_id=f"d{i}",
            version=version,
            content_hash=f"h{i}-v{version}",
            vector=random_vector(rng, dim),
            payload={
                "org_id": ORGS[i % len(ORGS)],
                "policy_id": POLICIES[i % len(POLICIES)],
                "status": STATUSES[(i // 2) % len(STATUSES)],
                "created_at": 1000.0 + i,
            },
        )
        for i in range(start, start + n)
    ]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def brute_force(points: Sequence[IndexPoint], query: Sequence[float], k: int) -> list[str]:
    """The ids of the ``k`` points most similar to ``query``, by exact cosine."""
    ranked = sorted(points, key=lambda p: cosine(p.vector, query), reverse=True)
    return [p.decision_id for p in ranked[:k]]
