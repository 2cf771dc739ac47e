"""Semantic search over decisions: embed the query, ask the index, read the rationale from Postgres.

The index returns ids, scores and payloads; the rationale comes from the ``decisions`` table (the
source of truth), so a result never shows text the index holds but Postgres no longer does: a
hit whose decision is gone is dropped (and counted), and one whose version moved on is marked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.index.decisions import load_decisions
from orchestration_pipeline.lib.index.embedders import Embedder
from orchestration_pipeline.lib.index.location import SearchFilter, VectorIndex

MAX_K = 100


@dataclass(frozen=True)
class SearchResult:
    score: float
    decision_id: str
    rationale: str
    payload: dict[str, Any]
    current: bool  # the index holds the decision's current version

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 6),
            "decision_id": self.decision_id,
            "rationale": self.rationale,
            "payload": self.payload,
            "current": self.current,
        }


@dataclass(frozen=True)
class SearchResponse:
    results: list[SearchResult]
    embed_ms: float
    index_ms: float
    total_ms: float
    dropped: int  # hits whose decision no longer exists

    def as_dict(self) -> dict[str, Any]:
        return {
            "results": [r.as_dict() for r in self.results],
            "embed_ms": round(self.embed_ms, 3),
            "index_ms": round(self.index_ms, 3),
            "total_ms": round(self.total_ms, 3),
            "dropped": self.dropped,
        }


def search_filter(
    org: str | None = None,
    policy: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> SearchFilter | None:
    """The index filter of the search options, or None when none is set."""
    if not any((org, policy, status, since, until)):
        return None
    return SearchFilter(
        org_id=org,
        policy_id=policy,
        status=status,
        created_from=since.timestamp() if since else None,
        created_to=until.timestamp() if until else None,
    )


def search_decisions(
    conn: psycopg.Connection,
    index: VectorIndex,
    embedder: Embedder,
    text: str,
    *,
    k: int = 10,
    filters: SearchFilter | None = None,
    quantization: bool | None = None,
) -> SearchResponse:
    """The ``k`` decisions whose rationale is nearest in meaning to ``text``, with filters."""
    if not text.strip():
        raise ValueError("the search text is empty: give a few words describing the decision")
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, not {k}")
    started = time.perf_counter()
    vector = embedder.embed([text])[0]
    embedded = time.perf_counter()
    hits = index.search(vector, k, filters, quantization=quantization)
    searched = time.perf_counter()
    decisions = load_decisions(conn, [h.decision_id for h in hits])
    end_read(conn)
    results = []
    for hit in hits:
        decision = decisions.get(hit.decision_id)
        if decision is None:
            continue
        payload = dict(hit.payload)
        results.append(
            SearchResult(
                score=hit.score,
                decision_id=hit.decision_id,
                rationale=decision.rationale,
                payload=payload,
                current=payload.get("version") == decision.version,
            )
        )
    return SearchResponse(
        results=results,
        embed_ms=(embedded - started) * 1000,
        index_ms=(searched - embedded) * 1000,
        total_ms=(time.perf_counter() - started) * 1000,
        dropped=len(hits) - len(results),
    )
