"""Redactions counted by rule id: in the run summary (``ingest --json``), in the ``ingest_runs``
row, and back from the parse workers (the counts cross their pickle boundary)."""

import pytest

from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db

GHP = "ghp_" + "Ab1" * 12
EXPECTED = {"bearer": 1, "github-token": 1, "secret-key": 2, "url-password": 1}


def _file(tmp_path):
    secret = make_event(
        payload={
            "rationale": f"pushed with {GHP}",
            "config": {"api_key": "LEAKk1"},
            "dsn": "postgresql://svc:LEAKp1@db/app",
        }
    )
    cut_off = '{"event_type": "decision", "token": "LEAKt1", "note": "Bearer LEAKbearer1'
    return write_jsonl(tmp_path / "s.jsonl", [secret, make_event(), cut_off])


def test_a_run_counts_its_redactions_by_rule(orch_conn, tmp_path):
    summary = Ingestor(orch_conn).ingest_paths([_file(tmp_path)]).as_dict()
    assert summary["redactions_by_rule"] == EXPECTED
    assert summary["redactions"] == sum(EXPECTED.values())
    stored = orch_conn.execute("SELECT summary FROM ingest_runs WHERE run_id = %s", (summary["run_id"],))
    assert stored.fetchone()[0]["redactions_by_rule"] == EXPECTED
    orch_conn.rollback()


def test_parse_workers_bring_the_counts_back(orch_conn, tmp_path):
    ingestor = Ingestor(orch_conn, parse_workers=1, parallel_min_bytes=0)
    try:
        summary = ingestor.ingest_paths([_file(tmp_path)]).as_dict()
    finally:
        ingestor.close()
    assert summary["redactions_by_rule"] == EXPECTED


def test_a_run_without_secrets_counts_none(orch_conn, tmp_path):
    summary = Ingestor(orch_conn).ingest_paths([write_jsonl(tmp_path / "a.jsonl", [make_event()])]).as_dict()
    assert summary["redactions_by_rule"] == {} and summary["redactions"] == 0
