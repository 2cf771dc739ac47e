"""The vector index interface, and where each adapter keeps its data.

Two adapters implement :class:`VectorIndex`: qdrant-edge (in-process, under
``$ORCH_HOME/qdrant``, the default) and qdrant-client against a server (``QDRANT_URL``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable


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
class SearchHit:
    point_id: str
    score: float
    payload: Mapping[str, Any]


@runtime_checkable
class VectorIndex(Protocol):
    """What the pipeline needs from a vector store; both adapters provide exactly this."""

    def ensure_collection(self, name: str, dimension: int) -> None: ...

    def upsert(self, name: str, points: Sequence[tuple[str, Sequence[float], Mapping[str, Any]]]) -> None: ...

    def delete(self, name: str, point_ids: Sequence[str]) -> None: ...

    def search(
        self, name: str, vector: Sequence[float], limit: int, filters: Mapping[str, Any] | None = None
    ) -> list[SearchHit]: ...

    def count(self, name: str) -> int: ...

    def close(self) -> None: ...
