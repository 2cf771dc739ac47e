"""Processes for the shard host tests: ``python -m orchestration_pipeline_tests.index._host_workers``.

``reader PATH READY DONE OUT``: until the file DONE exists, search and count through the host;
write a JSON summary to OUT. ``writer PATH BATCHES DONE``: upsert BATCHES batches of 100, then
create DONE.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from orchestration_pipeline.lib.index.host_client import HostClient
from orchestration_pipeline_tests.index._engine import make_points, random_vector

BATCH = 100


def reader(path: str, ready: str, done: str, out: str) -> None:
    client = HostClient(path)
    rng = random.Random()
    calls, bad, seen, errors = 0, [], set(), []
    client.count()
    Path(ready).touch()
    deadline = time.monotonic() + 120
    while not Path(done).exists() and time.monotonic() < deadline:
        try:
            hits = len(client.search(random_vector(rng), 10_000))
            total = client.count()
        except Exception as exc:  # recorded, so the test shows it
            errors.append(repr(exc))
            continue
        calls += 1
        seen.update((hits, total))
        bad.extend(n for n in (hits, total) if n % BATCH)
    Path(out).write_text(json.dumps({"calls": calls, "bad": bad, "seen": sorted(seen), "errors": errors}))


def writer(path: str, batches: str, done: str) -> None:
    client = HostClient(path)
    for batch in range(int(batches)):
        outcome = client.upsert(make_points(BATCH, seed=batch, start=batch * BATCH))
        assert outcome.written == BATCH, outcome
        time.sleep(0.01)
    Path(done).touch()


if __name__ == "__main__":
    {"reader": reader, "writer": writer}[sys.argv[1]](*sys.argv[2:])
