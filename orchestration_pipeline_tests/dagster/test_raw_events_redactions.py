"""raw_events shows which secrets the producers leak: its metadata counts redactions by rule id."""

import pytest

from orchestration_pipeline_tests.conftest import make_event, write_jsonl
from orchestration_pipeline_tests.dagster.test_ingestion_defs import _materialize

pytestmark = pytest.mark.db


def test_raw_events_metadata_counts_redactions_by_rule(orch_dsn, tmp_path):
    leaky = make_event(payload={"note": "token=LEAKx1 and " + "xoxb-" + "1234567890-abcdefghij", "ok": 1})
    write_jsonl(tmp_path / "landing" / "leaky.jsonl", [leaky, make_event()])
    result = _materialize(orch_dsn, tmp_path)
    meta = result.asset_materializations_for_node("raw_events")[0].metadata
    assert meta["redactions_by_rule"].value == {"keyed-value": 1, "slack-token": 1}
    assert meta["redactions"].value == 2
