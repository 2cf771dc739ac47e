"""The qdrant-edge adapter: the decision index as an in-process Qdrant shard in a directory.

Layout of the directory (``$ORCH_HOME/qdrant`` by default):

- the shard itself (``wal/``, ``segments/``, ``edge_config.json``), written by qdrant-edge;
- ``index.json``, the :class:`CollectionSettings` the shard was built with (dimension, embedder,
  quantization, HNSW), replaced atomically; it is written before the shard is created, so a
  shard never exists without it, and it is how a shard built by another embedder is refused;
- ``host.*``, the files of the shard host (see ``host.py``).

A shard can be open in one process at a time (a second open fails with "Can't init WAL:
WouldBlock"), so every process other than benchmarks reaches it through the shard host, which
owns one :class:`EdgeIndex`. Until :meth:`EdgeIndex.optimize` builds the HNSW graph (and only
once a segment passes Qdrant's indexing threshold, about 6,500 vectors of 384 floats by
default), searches scan every vector, which at 5,000 points takes about half a millisecond.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as q

from orchestration_pipeline.lib.index.location import (
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

SIDECAR = "index.json"
SIDECAR_FORMAT = 1
REBUILD_FIX = "rebuild the index with `orchestration-pipeline index rebuild`"
SCROLL_PAGE = 1_000
# Below this many KB of vectors in a segment, a search scans it instead of walking the graph.
FULL_SCAN_THRESHOLD_KB = 10_000
STATE_FIELDS = ["decision_id", "version", "content_hash"]
_SCHEMA_TYPES = {
    "keyword": q.PayloadSchemaType.Keyword,
    "float": q.PayloadSchemaType.Float,
    "integer": q.PayloadSchemaType.Integer,
}
_SHARD_MARKERS = ("edge_config.json", "segments", "wal")


# --------------------------------------------------------------------------------------------
# The sidecar
# --------------------------------------------------------------------------------------------


def read_sidecar(path: Path) -> CollectionSettings | None:
    """The settings stored next to the shard, or None when there are none yet."""
    file = path / SIDECAR
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexConfigMismatch(f"{file} is unreadable ({exc}): {REBUILD_FIX}") from exc
    names = {f.name for f in dataclasses.fields(CollectionSettings)}
    try:
        return CollectionSettings(**{k: v for k, v in raw.items() if k in names})
    except TypeError as exc:
        raise IndexConfigMismatch(f"{file} lacks a setting ({exc}): {REBUILD_FIX}") from exc


def write_sidecar(path: Path, settings: CollectionSettings) -> None:
    """Replace ``index.json`` atomically (a temporary file, fsync, rename, fsync of the directory)."""
    document = {"format": SIDECAR_FORMAT, **dataclasses.asdict(settings)}
    tmp = path / f".{SIDECAR}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2, sort_keys=True)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path / SIDECAR)
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def shard_exists(path: Path) -> bool:
    """True when ``path`` holds shard data (whether or not it has its ``index.json``)."""
    return any((path / marker).exists() for marker in _SHARD_MARKERS)


def check_compatible(stored: CollectionSettings, wanted: CollectionSettings, where: str) -> None:
    """Refuse an index whose vectors another embedder (or dimension) produced."""
    if stored.dimension != wanted.dimension or stored.embedder != wanted.embedder:
        raise IndexConfigMismatch(
            f"the index at {where} was built by embedder {stored.embedder!r} ({stored.dimension} dimensions), "
            f"but this process embeds with {wanted.embedder!r} ({wanted.dimension} dimensions): {REBUILD_FIX}"
        )


def _build_settings(settings: CollectionSettings) -> tuple[bool, int, int]:
    """The settings fixed when segments are built (the others apply per search)."""
    return settings.quantization, settings.hnsw_m, settings.hnsw_ef_construct


# --------------------------------------------------------------------------------------------
# Translations to qdrant-edge
# --------------------------------------------------------------------------------------------


def edge_config(settings: CollectionSettings, indexing_threshold_kb: int | None = None) -> q.EdgeConfig:
    """The shard configuration: cosine, HNSW, and scalar int8 quantization kept in RAM when asked."""
    quantization = None
    if settings.quantization:
        quantization = q.ScalarQuantizationConfig(
            type=q.ScalarType.Int8, quantile=0.99, memory=q.Memory.Pinned
        )
    optimizers = None
    if indexing_threshold_kb is not None:
        optimizers = q.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb)
    return q.EdgeConfig(
        vectors=q.EdgeVectorParams(size=settings.dimension, distance=q.Distance.Cosine),
        hnsw_config=q.HnswIndexConfig(
            m=settings.hnsw_m,
            ef_construct=settings.hnsw_ef_construct,
            full_scan_threshold=FULL_SCAN_THRESHOLD_KB,
        ),
        quantization_config=quantization,
        optimizers=optimizers,
    )


def edge_filter(filters: SearchFilter | None) -> q.Filter | None:
    """A :class:`SearchFilter` as a qdrant-edge filter (all conditions must hold; dates inclusive)."""
    if filters is None:
        return None
    must: list[Any] = [
        q.FieldCondition(key, match=q.MatchValue(value))
        for key, value in (
            ("org_id", filters.org_id),
            ("policy_id", filters.policy_id),
            ("status", filters.status),
        )
        if value is not None
    ]
    if filters.created_from is not None or filters.created_to is not None:
        must.append(
            q.FieldCondition(
                "created_at", range=q.RangeFloat(gte=filters.created_from, lte=filters.created_to)
            )
        )
    return q.Filter(must=must) if must else None


def stored_payload(point: IndexPoint) -> dict[str, Any]:
    """The payload written for a point: its extra fields, then the identity fields (which win).

    A ``created_at`` given as a datetime is stored as epoch seconds, the form range filters use.
    """
    payload = dict(point.payload)
    created_at = payload.get("created_at")
    if isinstance(created_at, dt.datetime):
        payload["created_at"] = created_at.timestamp()
    payload.update(decision_id=point.decision_id, version=point.version, content_hash=point.content_hash)
    return payload


def newest_per_decision(points: Sequence[IndexPoint]) -> tuple[list[IndexPoint], list[str]]:
    """The highest version of each decision in a batch, and the ids of the lower ones dropped."""
    newest: dict[str, IndexPoint] = {}
    dropped: list[str] = []
    for point in points:
        held = newest.get(point.decision_id)
        if held is not None:
            dropped.append(point.decision_id)
        if held is None or point.version >= held.version:
            newest[point.decision_id] = point
    return list(newest.values()), dropped


def highest_delete_per_decision(items: Sequence[tuple[str, int]]) -> tuple[dict[str, int], list[str]]:
    """The highest version to delete per decision, and the ids of the repeated items folded in."""
    versions: dict[str, int] = {}
    folded: list[str] = []
    for decision_id, version in items:
        if decision_id in versions:
            folded.append(decision_id)
        versions[decision_id] = max(version, versions.get(decision_id, version))
    return versions, folded


def outcome(written: int, stale_ids: Sequence[str]) -> WriteOutcome:
    """A WriteOutcome whose ``skipped_stale`` is the number of ``stale_ids`` (one per skipped item)."""
    return WriteOutcome(written=written, skipped_stale=len(stale_ids), stale_ids=tuple(stale_ids))


# --------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------


class EdgeIndex:
    """:class:`~orchestration_pipeline.lib.index.location.VectorIndex` over a qdrant-edge shard.

    Not thread-safe: one thread at a time (the shard host serialises every call under one lock),
    and one process at a time per directory (qdrant-edge's WAL lock; a second process gets
    :class:`IndexUnavailable`). The shard is opened on first use and stays open until
    :meth:`close`. Every write is flushed before it returns, so an acknowledged write survives a
    crash of the process.

    ``indexing_threshold_kb`` overrides Qdrant's threshold above which a segment gets an HNSW
    graph at :meth:`optimize` (tests and benchmarks use a small one to exercise the graph).
    """

    def __init__(self, path: str | Path, *, indexing_threshold_kb: int | None = None) -> None:
        self.path = Path(path)
        self._indexing_threshold_kb = indexing_threshold_kb
        self._shard: q.EdgeShard | None = None
        self._settings: CollectionSettings | None = None

    def __enter__(self) -> EdgeIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- opening ---------------------------------------------------------------------------

    def ensure_collection(self, settings: CollectionSettings) -> None:
        """Create the shard and its payload indexes when absent; refuse one built by another embedder.

        Search-time settings (``hnsw_ef``, ``oversampling``) and build-time ones (quantization,
        HNSW ``m``/``ef_construct``) that differ from the stored ones are adopted: the sidecar is
        rewritten and the shard reopened with the new configuration, which applies to segments
        built from then on (:meth:`optimize`). Switching quantization off takes effect at once
        for searches (they ignore the quantized vectors).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        stored = read_sidecar(self.path)
        exists = shard_exists(self.path)
        if stored is not None:
            check_compatible(stored, settings, str(self.path))
        elif exists:
            raise IndexConfigMismatch(
                f"the index at {self.path} has no {SIDECAR}, so the embedder that built it is unknown: {REBUILD_FIX}"
            )
        if stored != settings:
            write_sidecar(self.path, settings)
        rebuilt = stored is not None and _build_settings(stored) != _build_settings(settings)
        if self._shard is None or rebuilt:
            self._close_shard()
            self._shard = self._open_shard(settings, create=not exists, reconfigure=rebuilt)
        self._settings = settings
        self._ensure_payload_indexes(self._shard)

    def _open_shard(self, settings: CollectionSettings, *, create: bool, reconfigure: bool) -> q.EdgeShard:
        """Create or load the shard; a lock held by another process becomes IndexUnavailable."""
        config = edge_config(settings, self._indexing_threshold_kb)
        try:
            if create:
                return q.EdgeShard.create(str(self.path), config)
            if reconfigure or self._indexing_threshold_kb is not None:
                return q.EdgeShard.load(str(self.path), config)
            return q.EdgeShard.load(str(self.path))
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise IndexUnavailable(
                    f"the index at {self.path} is open in another process (normally its index host, "
                    "which every other process must go through): stop that process first"
                ) from exc
            raise IndexUnavailable(f"cannot open the index at {self.path} ({exc}): {REBUILD_FIX}") from exc

    def _ensure_payload_indexes(self, shard: q.EdgeShard) -> None:
        """Create every payload index of FILTER_FIELDS that is missing (or has the wrong type)."""
        present = self._index_types(shard)
        for field, kind in FILTER_FIELDS.items():
            if present.get(field) == kind:
                continue
            if field in present:
                shard.update(q.UpdateOperation.delete_field_index(field))
            shard.update(q.UpdateOperation.create_field_index(field, _SCHEMA_TYPES[kind]))
        shard.flush()

    def _existing_shard(self) -> q.EdgeShard | None:
        """The open shard, opening the one on disk if needed; None when none was created yet."""
        if self._shard is not None:
            return self._shard
        if not shard_exists(self.path):
            return None
        stored = read_sidecar(self.path)
        if stored is None:
            raise IndexConfigMismatch(
                f"the index at {self.path} has no {SIDECAR}, so the embedder that built it is unknown: {REBUILD_FIX}"
            )
        self._shard = self._open_shard(stored, create=False, reconfigure=False)
        self._settings = stored
        return self._shard

    def _writable_shard(self) -> tuple[q.EdgeShard, CollectionSettings]:
        shard = self._existing_shard()
        if shard is None or self._settings is None:
            raise IndexUnavailable(
                f"there is no index at {self.path} yet: ensure_collection() creates it (a sync does this)"
            )
        return shard, self._settings

    def open_existing(self) -> bool:
        """Open the shard on disk now (the host does this at start); False when there is none yet."""
        return self._existing_shard() is not None

    @property
    def settings(self) -> CollectionSettings | None:
        """The settings of the open shard (None before it is opened or created)."""
        return self._settings

    # -- writes ----------------------------------------------------------------------------

    def _stored_versions(self, shard: q.EdgeShard, ids: list[str]) -> dict[str, int]:
        records = shard.retrieve(ids, with_payload=q.PayloadSelector.Include(["version"]), with_vector=False)
        return {str(r.id): int((r.payload or {}).get("version", -1)) for r in records}

    def upsert(self, points: Sequence[IndexPoint]) -> WriteOutcome:
        """Write points, never replacing a stored point that has a higher version.

        Within the batch only the highest version of a decision is written (the lower ones count
        as stale). The stored versions are read first, then every point not older than its
        stored one is written in one update operation and flushed. ``stale_ids`` lists one
        decision id per skipped point.
        """
        if not points:
            return outcome(0, ())
        shard, settings = self._writable_shard()
        newest, stale_ids = newest_per_decision(points)
        for point in newest:
            if len(point.vector) != settings.dimension:
                raise ValueError(
                    f"the vector of decision {point.decision_id} has {len(point.vector)} dimensions; the index "
                    f"at {self.path} holds {settings.dimension} ({settings.embedder!r})"
                )
        stored = self._stored_versions(shard, [point_id(p.decision_id) for p in newest])
        fresh = []
        for point in newest:
            if stored.get(point_id(point.decision_id), -1) <= point.version:
                fresh.append(point)
            else:
                stale_ids.append(point.decision_id)
        if fresh:
            shard.update(
                q.UpdateOperation.upsert_points(
                    [
                        q.Point(point_id(p.decision_id), [float(x) for x in p.vector], stored_payload(p))
                        for p in fresh
                    ]
                )
            )
            shard.flush()
        return outcome(len(fresh), stale_ids)

    def delete(self, items: Sequence[tuple[str, int]]) -> WriteOutcome:
        """Delete decisions up to a version: a point whose stored version is higher is kept (stale).

        ``written`` counts the decisions now absent (deleted, or not indexed in the first place);
        ``skipped_stale`` and ``stale_ids`` the ones kept because the index holds a higher
        version, plus repeated items of one decision (folded into its highest version).
        """
        if not items:
            return outcome(0, ())
        shard, _ = self._writable_shard()
        versions, stale_ids = highest_delete_per_decision(items)
        stored = self._stored_versions(shard, [point_id(d) for d in versions])
        doomed, kept = [], 0
        for decision_id, version in versions.items():
            held = stored.get(point_id(decision_id))
            if held is not None and held > version:
                stale_ids.append(decision_id)
                kept += 1
            elif held is not None:
                doomed.append(point_id(decision_id))
        if doomed:
            shard.update(q.UpdateOperation.delete_points(doomed))
            shard.flush()
        return outcome(len(versions) - kept, stale_ids)

    # -- reads -----------------------------------------------------------------------------

    def search(
        self,
        vector: Sequence[float],
        limit: int,
        filters: SearchFilter | None = None,
        *,
        exact: bool = False,
        quantization: bool | None = None,
    ) -> list[SearchHit]:
        """The ``limit`` nearest decisions by cosine similarity, best first.

        ``quantization`` None follows the collection settings (int8 scores, rescored with the
        original vectors after oversampling); False ignores the quantized vectors for this
        query. ``exact`` scans every vector, with the original vectors unless ``quantization``
        is True: the reference a recall measurement compares with.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        shard = self._existing_shard()
        if shard is None or self._settings is None:
            return []
        params = search_params(self._settings, exact=exact, quantization=quantization)
        request = q.QueryRequest(
            limit=limit,
            query=q.Query.Nearest([float(x) for x in vector]),
            filter=edge_filter(filters),
            with_payload=True,
            with_vector=False,
            params=params,
        )
        hits = shard.query(request)
        return [
            SearchHit(
                decision_id=str((h.payload or {}).get("decision_id", "")),
                score=h.score,
                payload=h.payload or {},
            )
            for h in hits
        ]

    def states(self) -> Iterator[IndexedState]:
        """Every indexed decision's (id, version, content hash), paging through the shard."""
        shard = self._existing_shard()
        if shard is None:
            return
        offset: Any = None
        while True:
            records, offset = shard.scroll(
                q.ScrollRequest(
                    offset=offset,
                    limit=SCROLL_PAGE,
                    with_payload=q.PayloadSelector.Include(STATE_FIELDS),
                    with_vector=False,
                )
            )
            for record in records:
                state = IndexedState.from_payload(record.payload)
                if state is not None:
                    yield state
            if offset is None:
                return

    def count(self) -> int:
        """The number of indexed decisions (exact)."""
        shard = self._existing_shard()
        return 0 if shard is None else shard.count(q.CountRequest(exact=True))

    def payload_indexes(self) -> Mapping[str, str]:
        """The payload indexes the shard actually has, as {field: type} ("keyword", "float", ...)."""
        shard = self._existing_shard()
        return {} if shard is None else self._index_types(shard)

    @staticmethod
    def _index_types(shard: q.EdgeShard) -> dict[str, str]:
        # qdrant-edge's enums print as "PayloadSchemaType.Keyword"
        return {
            field: str(info.data_type).rsplit(".", 1)[-1].lower()
            for field, info in shard.info().payload_schema.items()
        }

    def info(self) -> dict[str, int]:
        """Shard statistics: points, segments and vectors covered by an HNSW graph."""
        shard = self._existing_shard()
        if shard is None:
            return {"points": 0, "segments": 0, "indexed_vectors": 0}
        info = shard.info()
        return {
            "points": info.points_count,
            "segments": info.segments_count,
            "indexed_vectors": info.indexed_vectors_count,
        }

    # -- maintenance -----------------------------------------------------------------------

    def optimize(self) -> None:
        """Merge segments and build the HNSW graph and quantized vectors where Qdrant's thresholds say so.

        Blocks until done (seconds for tens of thousands of points).
        """
        shard = self._existing_shard()
        if shard is not None:
            shard.optimize()
            shard.flush()

    def close(self) -> None:
        """Flush and close the shard (idempotent); the next call opens it again."""
        self._close_shard()

    def _close_shard(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            try:
                shard.flush()
            finally:
                shard.close()


def search_params(settings: CollectionSettings, *, exact: bool, quantization: bool | None) -> q.SearchParams:
    """Per-query search parameters (see :meth:`EdgeIndex.search`)."""
    use_quantized = settings.quantization if quantization is None else quantization
    if exact and quantization is None:
        use_quantized = False
    if use_quantized:
        quant = q.QuantizationSearchParams(ignore=False, rescore=True, oversampling=settings.oversampling)
    else:
        quant = q.QuantizationSearchParams(ignore=True)
    return q.SearchParams(hnsw_ef=settings.hnsw_ef, exact=exact, quantization=quant)
