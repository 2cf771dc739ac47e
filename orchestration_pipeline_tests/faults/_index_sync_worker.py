"""A sync in its own process, for the fault tests: ``python -m orchestration_pipeline_tests.faults._index_sync_worker``.

``DSN INDEX_PATH BATCH DELAY_S STARTED`` runs one ``sync_outbox`` through the shard host with the
hashing embedder slowed down by DELAY_S per call, touching STARTED after its first batch.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.index.embedders import HashingEmbedder
from orchestration_pipeline.lib.index.host_client import HostClient
from orchestration_pipeline.lib.index.location import CollectionSettings
from orchestration_pipeline.lib.index.sync import SyncSettings, sync_outbox


class SlowEmbedder(HashingEmbedder):
    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def embed(self, texts):
        time.sleep(self.delay_s)
        return super().embed(texts)


def main(dsn: str, index_path: str, batch: str, delay_s: str, started: str) -> None:
    embedder = SlowEmbedder(float(delay_s))
    index = HostClient(index_path)
    index.ensure_collection(CollectionSettings(dimension=embedder.dimension, embedder=embedder.name))
    with connection(dsn) as conn:
        sync_outbox(
            conn, index, embedder, SyncSettings(batch_size=int(batch)),
            progress=lambda report: Path(started).touch(),
        )  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
