"""The vector index interface, and where each adapter keeps its data.

Two adapters implement :class:`VectorIndex`: qdrant-edge (in-process, under
``$ORCH_HOME/qdrant``, the default; reached through the shard host, see ``host.py``) and
qdrant-client against a server (``QDRANT_URL``).

A point is one current decision. Its id is :func:`point_id` of the decision id (Qdrant ids are
UUIDs or integers); its payload is :data:`PAYLOAD_FIELDS`. Writes carry the decision's version,
and an adapter never replaces a stored point with a lower version: two syncs racing on one
decision leave the highest version, whatever order they finish in.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from orchestration_pipeline.errors import OrchError

COLLECTION = "decisions"
# decision_id: keyword; version: integer; content_hash: keyword; org_id, policy_id, status:
# keyword; created_at: float (epoch seconds, for range filters).
PAYLOAD_FIELDS = ("decision_id", "version", "content_hash", "org_id", "policy_id", "status", "created_at")
# Every field a search can filter on, with its payload index type: a check fails when one is missing.
FILTER_FIELDS: Mapping[str, str] = {
    "org_id": "keyword",
    "policy_id": "keyword",
    "status": "keyword",
    "created_at": "float",
    "decision_id": "keyword",
}
_POINT_NAMESPACE = uuid.UUID("5f0c8a52-3b1e-4a8e-9a57-0d3c2b7c61a4")


def point_id(decision_id: str) -> str:
    """The index point id of a decision (a UUID derived from its id, the same in every adapter)."""
    return str(uuid.uuid5(_POINT_NAMESPACE, decision_id))


@dataclass(frozen=True)
class VectorIndexLocation:
    """Which adapter to use and where its data is."""

    kind: Literal["edge", "server"]
    location: str  # a directory for "edge", a URL for "server"
    api_key: str | None = None

    @classmethod
    def from_settings(
        cls, qdrant_url: str | None, qdrant_api_key: str | None, edge_path: str
    ) -> VectorIndexLocation:
        if qdrant_url:
            return cls("server", qdrant_url, qdrant_api_key)
        return cls("edge", edge_path)


@dataclass(frozen=True)
class CollectionSettings:
    """How the collection is built and searched. Cosine distance always."""

    dimension: int
    embedder: str  # the embedder's name: an index built by another embedder is refused
    quantization: bool = True  # scalar int8, kept in RAM; searched with rescoring and oversampling
    oversampling: float = 2.0
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    hnsw_ef: int = 128  # search-time beam width


@dataclass(frozen=True)
class IndexPoint:
    decision_id: str
    version: int
    content_hash: str
    vector: Sequence[float]
    payload: Mapping[str, Any] = field(default_factory=dict)  # org_id, policy_id, status, created_at


@dataclass(frozen=True)
class SearchFilter:
    org_id: str | None = None
    policy_id: str | None = None
    status: str | None = None
    created_from: float | None = None  # epoch seconds, inclusive
    created_to: float | None = None


@dataclass(frozen=True)
class SearchHit:
    decision_id: str
    score: float
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class IndexedState:
    """What the index holds for one decision: the reconciler compares it with Postgres."""

    decision_id: str
    version: int
    content_hash: str

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any] | None) -> IndexedState | None:
        """The state a point's payload records; None for a point that is not a decision's."""
        payload = payload or {}
        if "decision_id" not in payload:
            return None
        return cls(
            decision_id=str(payload["decision_id"]),
            version=int(payload.get("version", -1)),
            content_hash=str(payload.get("content_hash", "")),
        )


@dataclass(frozen=True)
class WriteOutcome:
    written: int  # points upserted or deleted
    skipped_stale: int  # the index already held a higher version
    stale_ids: tuple[str, ...] = ()  # the decision ids of the skipped ones


class IndexConfigMismatch(OrchError, RuntimeError):
    """The stored collection was built with another dimension or embedder."""


class IndexUnavailable(OrchError, RuntimeError):
    """The index cannot be reached or opened; the message names the fix."""


@runtime_checkable
class VectorIndex(Protocol):
    """What the pipeline needs from a vector store; both adapters provide exactly this."""

    def ensure_collection(self, settings: CollectionSettings) -> None: ...

    def upsert(self, points: Sequence[IndexPoint]) -> WriteOutcome: ...

    def delete(self, items: Sequence[tuple[str, int]]) -> WriteOutcome: ...

    def search(
        self,
        vector: Sequence[float],
        limit: int,
        filters: SearchFilter | None = None,
        *,
        exact: bool = False,
        quantization: bool | None = None,
    ) -> list[SearchHit]: ...

    def states(self) -> Iterator[IndexedState]: ...

    def count(self) -> int: ...

    def payload_indexes(self) -> Mapping[str, str]: ...

    def optimize(self) -> None: ...

    def close(self) -> None: ...
