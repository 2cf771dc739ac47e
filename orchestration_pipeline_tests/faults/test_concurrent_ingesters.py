"""Two ingesters writing the same events from files with different bytes neither deadlock nor double-count."""

from __future__ import annotations

import random
import threading

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = [pytest.mark.db, pytest.mark.slow]


def test_the_same_events_reordered_in_two_files_ingest_once_without_a_deadlock(orch_dsn, tmp_path):
    events = [make_event("decision", minutes_ago=30 + i / 100) for i in range(3_000)]
    reordered = list(events)
    random.Random(7).shuffle(reordered)
    files = [write_jsonl(tmp_path / "a.jsonl", events), write_jsonl(tmp_path / "b.jsonl", reordered)]
    start = threading.Barrier(2)
    summaries, errors = [], []

    def ingest(path):
        try:
            with connection(orch_dsn) as conn:
                ingestor = Ingestor(conn, batch_rows=200, parse_workers=0)
                start.wait()
                summaries.append(ingestor.ingest_paths([path]).as_dict())
        except Exception as exc:  # reported below: a deadlock surfaced as an error is the failure
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(path,)) for path in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sum(s["accepted"] for s in summaries) == len(events)
    assert sum(s["duplicates"] for s in summaries) == len(events)
    assert all(s["balanced"] for s in summaries)
    with connection(orch_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == len(events)


@pytest.mark.parametrize("error", ["DeadlockDetected", "SerializationFailure"])
def test_a_file_rolled_back_by_a_deadlock_is_tried_again_and_the_retry_reported(
    orch_dsn, tmp_path, monkeypatch, error
):
    import psycopg

    from orchestration_pipeline.lib.ingestion.ingest import describe_progress

    path = write_jsonl(tmp_path / "a.jsonl", [make_event("decision") for _ in range(5)])
    real = Ingestor._ingest_into_transaction
    calls = []

    def collides_once(self, file_path, result):
        calls.append(file_path)
        real(self, file_path, result)  # the work is done, then the server picks this one as the victim
        if len(calls) == 1:
            raise getattr(psycopg.errors, error)("deadlock detected (injected)")

    monkeypatch.setattr(Ingestor, "_ingest_into_transaction", collides_once)
    lines = []
    with connection(orch_dsn) as conn:
        summary = Ingestor(
            conn, parse_workers=0, progress=lambda info: lines.append(describe_progress(info))
        ).ingest_paths([path])
        stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    body = summary.as_dict()
    assert len(calls) == 2 and body["transaction_retries"] == 1
    assert (body["accepted"], body["duplicates"], stored) == (5, 0, 5)
    assert "tried 2 times: another ingester wrote the same events" in lines[-1]
