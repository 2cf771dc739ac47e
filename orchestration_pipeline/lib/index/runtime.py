"""Opening the index the way the CLI, the assets and the API all do: one embedder, one collection.

The collection is created on first use with the embedder's dimension and name; an index built by
another embedder is refused (:class:`IndexConfigMismatch`) rather than searched with vectors
from a different space.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from orchestration_pipeline.lib.index.embedders import Embedder, default_embedder
from orchestration_pipeline.lib.index.location import CollectionSettings, VectorIndex, VectorIndexLocation
from orchestration_pipeline.lib.index.open import open_index


@dataclass(frozen=True)
class IndexRuntime:
    location: VectorIndexLocation
    embedder_choice: str | None = None  # "minilm" | "hashing" | None (MiniLM when installed)
    quantization: bool = True  # search the int8 vectors (with rescoring); False: full vectors only

    def embedder(self) -> Embedder:
        return default_embedder(self.embedder_choice)

    def collection(self, embedder: Embedder) -> CollectionSettings:
        return CollectionSettings(dimension=embedder.dimension, embedder=embedder.name)

    @contextmanager
    def open(self, embedder: Embedder | None = None) -> Iterator[tuple[VectorIndex, Embedder]]:
        """The index, its collection ensured, and the embedder that feeds it; closed afterwards."""
        embedder = embedder or self.embedder()
        index = open_index(self.location)
        try:
            index.ensure_collection(self.collection(embedder))
            yield index, embedder
        finally:
            index.close()


def runtime_from_settings(settings) -> IndexRuntime:
    """The index runtime of :class:`orchestration_pipeline.settings.Settings`."""
    location = VectorIndexLocation.from_settings(
        settings.qdrant_url, settings.qdrant_api_key, str(settings.qdrant_path)
    )
    return IndexRuntime(location, settings.embedder, settings.index_quantization)
