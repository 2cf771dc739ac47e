"""A line that repeats a key is quarantined as duplicate_key, not stored with its last value."""

import json

import pytest

from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db


def test_a_repeated_event_type_is_quarantined_with_its_pointer(orch_conn, tmp_path):
    good = make_event("decision")
    twice = json.dumps(make_event("decision"))[:-1] + ', "event_type": "task_start"}'
    path = write_jsonl(tmp_path / "a.jsonl", [good, twice])
    summary = Ingestor(orch_conn).ingest_paths([path]).as_dict()
    assert (summary["accepted"], summary["quarantined"]) == (1, 1)
    assert summary["quarantine_by_type"] == {"duplicate_key": 1}
    row = orch_conn.execute("SELECT failure_type, json_pointer, detail FROM quarantine").fetchone()
    assert row[:2] == ("duplicate_key", "/event_type") and "given more than once" in row[2]
    assert orch_conn.execute("SELECT count(*) FROM events WHERE event_type = 'task_start'").fetchone()[0] == 0
