"""The qdrant-client adapter: the decision index as a collection on a Qdrant server.

Used when ``QDRANT_URL`` is set. Same behaviour as the qdrant-edge adapter (``edge.py``):
cosine distance, scalar int8 quantization searched with rescoring and oversampling, per-query
``quantization=False`` and ``exact=True``, the version guard, and refusal of a collection built
by another embedder or dimension.

Where the collection's settings live: in the collection's metadata (Qdrant 1.16+), under
``index_settings`` (the :class:`CollectionSettings` it was built with). A collection without
that key (an older server that drops metadata, or one created by other means) is adopted: its
vector size is still checked, the embedder cannot be, and the key is written.

Local mode (``QdrantClient(location=":memory:")`` or ``QdrantClient(path=...)``, for tests)
searches by brute force, keeps no quantization, and ignores payload indexes; this adapter
creates none there, so :meth:`ServerIndex.payload_indexes` reports what the collection says,
which in local mode is ``{}``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from orchestration_pipeline.lib.index.edge import (
    REBUILD_FIX,
    SCROLL_PAGE,
    STATE_FIELDS,
    check_compatible,
    highest_delete_per_decision,
    newest_per_decision,
    outcome,
    stored_payload,
)
from orchestration_pipeline.lib.index.location import (
    COLLECTION,
    FILTER_FIELDS,
    CollectionSettings,
    IndexConfigMismatch,
    IndexedState,
    IndexPoint,
    IndexUnavailable,
    SearchFilter,
    SearchHit,
    WriteOutcome,
    point_id,
)

log = logging.getLogger(__name__)

METADATA_KEY = "index_settings"
_SCHEMA_TYPES = {
    "keyword": m.PayloadSchemaType.KEYWORD,
    "float": m.PayloadSchemaType.FLOAT,
    "integer": m.PayloadSchemaType.INTEGER,
}


def server_filter(filters: SearchFilter | None) -> m.Filter | None:
    """A :class:`SearchFilter` as a qdrant-client filter (all conditions must hold; dates inclusive)."""
    if filters is None:
        return None
    must: list[m.Condition] = [
        m.FieldCondition(key=key, match=m.MatchValue(value=value))
        for key, value in (
            ("org_id", filters.org_id),
            ("policy_id", filters.policy_id),
            ("status", filters.status),
        )
        if value is not None
    ]
    if filters.created_from is not None or filters.created_to is not None:
        must.append(
            m.FieldCondition(
                key="created_at", range=m.Range(gte=filters.created_from, lte=filters.created_to)
            )
        )
    return m.Filter(must=must) if must else None


def _quantization_config(settings: CollectionSettings) -> m.ScalarQuantization | None:
    if not settings.quantization:
        return None
    return m.ScalarQuantization(
        scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=0.99, always_ram=True)
    )


def _search_params(settings: CollectionSettings, *, exact: bool, quantization: bool | None) -> m.SearchParams:
    """Per-query parameters, as in :func:`orchestration_pipeline.lib.index.edge.search_params`."""
    use_quantized = settings.quantization if quantization is None else quantization
    if exact and quantization is None:
        use_quantized = False
    quant = (
        m.QuantizationSearchParams(ignore=False, rescore=True, oversampling=settings.oversampling)
        if use_quantized
        else m.QuantizationSearchParams(ignore=True)
    )
    return m.SearchParams(hnsw_ef=settings.hnsw_ef, exact=exact, quantization=quant)


def _stored_settings(info: m.CollectionInfo) -> CollectionSettings | None:
    raw = (info.config.metadata or {}).get(METADATA_KEY)
    if not isinstance(raw, dict):
        return None
    names = {f.name for f in dataclasses.fields(CollectionSettings)}
    try:
        return CollectionSettings(**{k: v for k, v in raw.items() if k in names})
    except TypeError:
        return None


class ServerIndex:
    """:class:`~orchestration_pipeline.lib.index.location.VectorIndex` over a Qdrant collection.

    The version guard reads the stored versions, then writes: it is not atomic across clients
    (two writers may both read before either writes), so a stale point can rarely win a race;
    the reconciler, which compares :meth:`states` with Postgres, finds and repairs it.

    ``client`` replaces the one built from ``url``/``api_key`` (tests pass a local-mode client;
    ``url`` then only names it in messages). Requests time out after ``timeout_s``; an
    unreachable server raises :class:`IndexUnavailable` naming QDRANT_URL.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        collection: str = COLLECTION,
        client: QdrantClient | None = None,
        *,
        timeout_s: float = 5.0,
        optimize_timeout_s: float = 300.0,
    ) -> None:
        self.url = url
        self.collection = collection
        self.optimize_timeout_s = optimize_timeout_s
        self._owns_client = client is None
        self._client = client or QdrantClient(
            url=url, api_key=api_key, timeout=timeout_s, check_compatibility=False
        )
        options = self._client.init_options
        self.local = options.get("location") == ":memory:" or options.get("path") is not None
        self._settings: CollectionSettings | None = None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Connection failures and refused keys become IndexUnavailable naming the fix."""
        try:
            yield
        except ResponseHandlingException as exc:
            raise IndexUnavailable(
                f"the Qdrant server at {self.url} did not answer ({exc}): check QDRANT_URL, or start the server"
            ) from exc
        except UnexpectedResponse as exc:
            if exc.status_code in (401, 403):
                raise IndexUnavailable(
                    f"the Qdrant server at {self.url} refused the API key (HTTP {exc.status_code}): check QDRANT_API_KEY"
                ) from exc
            raise

    def __enter__(self) -> ServerIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the collection ----------------------------------------------------------------------

    def ensure_collection(self, settings: CollectionSettings) -> None:
        """Create the collection and its payload indexes when absent; refuse one of another embedder.

        Settings that differ from the stored ones otherwise (quantization, HNSW, search-time
        ones) are applied with ``update_collection`` and recorded in the metadata.
        """
        with self._errors():
            if not self._client.collection_exists(self.collection):
                if self._create(settings):
                    self._settings = settings
                    self._ensure_payload_indexes({})
                    return
            info = self._client.get_collection(self.collection)
            size = self._vector_size(info)
            stored = _stored_settings(info)
            # the vector size is checked even when the metadata is missing (the embedder cannot be)
            built = CollectionSettings(
                dimension=size, embedder=stored.embedder if stored else settings.embedder
            )
            check_compatible(built, settings, f"{self.url} (collection {self.collection})")
            if stored != settings:
                self._reconfigure(stored, settings)
            self._settings = settings
            self._ensure_payload_indexes(info.payload_schema)

    def _create(self, settings: CollectionSettings) -> bool:
        """Create the collection; False when another process created it first."""
        try:
            self._client.create_collection(
                self.collection,
                vectors_config=m.VectorParams(size=settings.dimension, distance=m.Distance.COSINE),
                hnsw_config=m.HnswConfigDiff(m=settings.hnsw_m, ef_construct=settings.hnsw_ef_construct),
                quantization_config=_quantization_config(settings),
                metadata={METADATA_KEY: dataclasses.asdict(settings)},
            )
        except UnexpectedResponse as exc:
            if exc.status_code == 409:
                return False
            raise
        return True

    def _vector_size(self, info: m.CollectionInfo) -> int:
        vectors = info.config.params.vectors
        if isinstance(vectors, m.VectorParams):
            return vectors.size
        raise IndexConfigMismatch(
            f"the collection {self.collection} at {self.url} has named vectors, not the one unnamed vector "
            f"this index uses: {REBUILD_FIX}"
        )

    def _reconfigure(self, stored: CollectionSettings | None, settings: CollectionSettings) -> None:
        if stored is None:
            log.warning(
                "collection %s at %s records no embedder; adopting it for %r",
                self.collection,
                self.url,
                settings.embedder,
            )
        changes: dict[str, Any] = {"metadata": {METADATA_KEY: dataclasses.asdict(settings)}}
        if not self.local and (
            stored is None
            or (stored.hnsw_m, stored.hnsw_ef_construct) != (settings.hnsw_m, settings.hnsw_ef_construct)
        ):
            changes["hnsw_config"] = m.HnswConfigDiff(
                m=settings.hnsw_m, ef_construct=settings.hnsw_ef_construct
            )
        if not self.local and (stored is None or stored.quantization != settings.quantization):
            changes["quantization_config"] = _quantization_config(settings) or m.Disabled.DISABLED
        self._client.update_collection(self.collection, **changes)

    def _ensure_payload_indexes(self, present: Mapping[str, m.PayloadIndexInfo]) -> None:
        if self.local:  # local mode ignores payload indexes (and warns on each one)
            return
        for field, kind in FILTER_FIELDS.items():
            info = present.get(field)
            if info is not None and _schema_name(info) == kind:
                continue
            if info is not None:
                self._client.delete_payload_index(self.collection, field, wait=True)
            self._client.create_payload_index(self.collection, field, _SCHEMA_TYPES[kind], wait=True)

    def _current_settings(self) -> CollectionSettings | None:
        """The settings to search with; None while the collection does not exist."""
        if self._settings is None:
            with self._errors():
                if not self._client.collection_exists(self.collection):
                    return None
                info = self._client.get_collection(self.collection)
            self._settings = _stored_settings(info) or CollectionSettings(
                dimension=self._vector_size(info), embedder="unknown"
            )
        return self._settings

    def _writable_settings(self) -> CollectionSettings:
        settings = self._current_settings()
        if settings is None:
            raise IndexUnavailable(
                f"there is no collection {self.collection} at {self.url} yet: ensure_collection() creates it "
                "(a sync does this)"
            )
        return settings

    # -- writes ------------------------------------------------------------------------------

    def _stored_versions(self, ids: list[str]) -> dict[str, int]:
        with self._errors():
            records = self._client.retrieve(
                self.collection, ids=ids, with_payload=["version"], with_vectors=False
            )
        return {str(r.id): int((r.payload or {}).get("version", -1)) for r in records}

    def upsert(self, points: Sequence[IndexPoint]) -> WriteOutcome:
        """Write points, never replacing a stored point that has a higher version (see the class)."""
        if not points:
            return outcome(0, ())
        settings = self._writable_settings()
        newest, stale_ids = newest_per_decision(points)
        for point in newest:
            if len(point.vector) != settings.dimension:
                raise ValueError(
                    f"the vector of decision {point.decision_id} has {len(point.vector)} dimensions; the "
                    f"collection {self.collection} holds {settings.dimension} ({settings.embedder!r})"
                )
        stored = self._stored_versions([point_id(p.decision_id) for p in newest])
        fresh = []
        for point in newest:
            if stored.get(point_id(point.decision_id), -1) <= point.version:
                fresh.append(point)
            else:
                stale_ids.append(point.decision_id)
        if fresh:
            structs = [
                m.PointStruct(
                    id=point_id(p.decision_id), vector=[float(x) for x in p.vector], payload=stored_payload(p)
                )
                for p in fresh
            ]
            with self._errors():
                self._client.upsert(self.collection, points=structs, wait=True)
        return outcome(len(fresh), stale_ids)

    def delete(self, items: Sequence[tuple[str, int]]) -> WriteOutcome:
        """Delete decisions up to a version (same counting as :meth:`EdgeIndex.delete`)."""
        if not items:
            return outcome(0, ())
        self._writable_settings()
        versions, stale_ids = highest_delete_per_decision(items)
        stored = self._stored_versions([point_id(d) for d in versions])
        doomed, kept = [], 0
        for decision_id, version in versions.items():
            held = stored.get(point_id(decision_id))
            if held is not None and held > version:
                stale_ids.append(decision_id)
                kept += 1
            elif held is not None:
                doomed.append(point_id(decision_id))
        if doomed:
            with self._errors():
                self._client.delete(self.collection, points_selector=m.PointIdsList(points=doomed), wait=True)
        return outcome(len(versions) - kept, stale_ids)

    # -- reads -------------------------------------------------------------------------------

    def search(
        self,
        vector: Sequence[float],
        limit: int,
        filters: SearchFilter | None = None,
        *,
        exact: bool = False,
        quantization: bool | None = None,
    ) -> list[SearchHit]:
        """The ``limit`` nearest decisions by cosine similarity, best first (see ``EdgeIndex.search``)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        settings = self._current_settings()
        if settings is None:
            return []
        # local mode always searches exactly and warns when given search parameters
        params = None if self.local else _search_params(settings, exact=exact, quantization=quantization)
        with self._errors():
            response = self._client.query_points(
                self.collection,
                query=[float(x) for x in vector],
                query_filter=server_filter(filters),
                search_params=params,
                limit=limit,
                with_payload=True,
                with_vectors=False,
            )
        return [
            SearchHit(
                decision_id=str((p.payload or {}).get("decision_id", "")),
                score=p.score,
                payload=p.payload or {},
            )
            for p in response.points
        ]

    def states(self) -> Iterator[IndexedState]:
        """Every indexed decision's (id, version, content hash), paging with scroll."""
        if self._current_settings() is None:
            return
        offset: Any = None
        while True:
            with self._errors():
                records, offset = self._client.scroll(
                    self.collection,
                    limit=SCROLL_PAGE,
                    offset=offset,
                    with_payload=STATE_FIELDS,
                    with_vectors=False,
                )
            for record in records:
                state = IndexedState.from_payload(record.payload)
                if state is not None:
                    yield state
            if offset is None:
                return

    def count(self) -> int:
        """The number of indexed decisions (exact)."""
        if self._current_settings() is None:
            return 0
        with self._errors():
            return self._client.count(self.collection, exact=True).count

    def payload_indexes(self) -> Mapping[str, str]:
        """The payload indexes the collection reports ({} in local mode, which keeps none)."""
        if self._current_settings() is None:
            return {}
        with self._errors():
            info = self._client.get_collection(self.collection)
        return {field: _schema_name(schema) for field, schema in info.payload_schema.items()}

    # -- maintenance -------------------------------------------------------------------------

    def optimize(self) -> None:
        """Wait until the server has finished optimizing (status green), nudging it when idle (grey).

        The server builds HNSW graphs and quantized vectors by itself; this only waits, up to
        ``optimize_timeout_s``, and logs when it is still busy then. Nothing to do in local mode.
        """
        if self.local or self._current_settings() is None:
            return
        deadline = time.monotonic() + self.optimize_timeout_s
        nudged = False
        while True:
            with self._errors():
                status = self._client.get_collection(self.collection).status
                if status == m.CollectionStatus.GREEN:
                    return
                if status == m.CollectionStatus.GREY and not nudged:
                    self._client.update_collection(
                        self.collection, optimizers_config=m.OptimizersConfigDiff()
                    )
                    nudged = True
            if time.monotonic() >= deadline:
                log.warning(
                    "collection %s is still %s after %g s of optimizing",
                    self.collection,
                    status,
                    self.optimize_timeout_s,
                )
                return
            time.sleep(0.5)

    def drop_collection(self) -> None:
        """Delete the collection (before a rebuild with another embedder); absent is fine."""
        with self._errors():
            self._client.delete_collection(self.collection)
        self._settings = None

    def close(self) -> None:
        """Close the client when this adapter created it."""
        if self._owns_client:
            self._client.close()


def _schema_name(info: m.PayloadIndexInfo) -> str:
    data_type = info.data_type
    return data_type.value if isinstance(data_type, m.PayloadSchemaType) else str(data_type)
