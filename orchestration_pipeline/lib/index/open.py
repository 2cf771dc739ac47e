"""Opening the vector index a :class:`VectorIndexLocation` names, and dropping it for a rebuild."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from orchestration_pipeline.lib.index.edge import SIDECAR, EdgeIndex
from orchestration_pipeline.lib.index.host import try_lock
from orchestration_pipeline.lib.index.host_client import HostClient, stop_host
from orchestration_pipeline.lib.index.location import (
    COLLECTION,
    IndexUnavailable,
    VectorIndex,
    VectorIndexLocation,
)

# What a qdrant-edge index directory holds besides the host's files (kept by drop_index).
_SHARD_ENTRIES = ("wal", "segments", "temp_segments", "edge_config.json", SIDECAR)


def open_index(location: VectorIndexLocation) -> VectorIndex:
    """The index for the pipeline: a Qdrant server's collection, or the qdrant-edge shard via its host."""
    if location.kind == "server":
        from orchestration_pipeline.lib.index.server import ServerIndex

        return ServerIndex(location.location, location.api_key, COLLECTION)
    if location.kind == "edge":
        return HostClient(location.location)
    raise ValueError(f"unknown index kind {location.kind!r}: 'edge' or 'server'")


def open_local_index(path: str | Path, *, indexing_threshold_kb: int | None = None) -> EdgeIndex:
    """The qdrant-edge shard opened in this process, without a host (benchmarks and tools).

    Fails with IndexUnavailable while a host (or any other process) has the shard open.
    """
    return EdgeIndex(path, indexing_threshold_kb=indexing_threshold_kb)


def drop_index(location: VectorIndexLocation, timeout_s: float = 30.0) -> None:
    """Delete the whole index (before a rebuild with another embedder): the data is derived from Postgres.

    Edge: the host is stopped, then the shard and ``index.json`` are removed while holding the
    host lock, so no host can open the shard meanwhile; the next client starts a fresh host.
    Server: the collection is deleted.
    """
    if location.kind == "server":
        from orchestration_pipeline.lib.index.server import ServerIndex

        index = ServerIndex(location.location, location.api_key, COLLECTION)
        try:
            index.drop_collection()
        finally:
            index.close()
        return
    path = Path(location.location)
    if not path.exists():
        return
    deadline = time.monotonic() + timeout_s
    while True:
        stop_host(path, timeout_s=timeout_s)
        lock_fd = try_lock(path)
        if lock_fd is not None:
            break
        if time.monotonic() >= deadline:
            raise IndexUnavailable(
                f"the index host for {path} keeps restarting: stop the processes using the index"
            )
        time.sleep(0.05)
    try:
        for name in _SHARD_ENTRIES:
            entry = path / name
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.exists():
                entry.unlink()
    finally:
        os.close(lock_fd)
