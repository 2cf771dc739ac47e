"""raw_events shows the status words its producers wrote that the synonym map does not know."""

from pathlib import Path

import dagster as dg
import pytest

from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.resources import IngestionSettings, OrchestrationDatabase, PipelineHome

pytestmark = pytest.mark.db

CORPUS = Path(__file__).parents[1] / "data" / "producer_status_words.jsonl"


def test_raw_events_metadata_counts_unknown_status_words_per_producer(orch_dsn, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "producers.jsonl").write_bytes(CORPUS.read_bytes())
    (landing / "more.jsonl").write_text(
        '{"event_type":"metric","occurred_at":"2026-11-30T08:20:00Z","source":"build.sh",'
        '"status":"okay-ish","payload":{"name":"disk_free_gb","value":3}}\n'
    )
    result = dg.materialize(
        [raw_events],
        resources={
            "orchestration_db": OrchestrationDatabase(dsn=orch_dsn),
            "pipeline_home": PipelineHome(orch_home=str(tmp_path)),
            "ingestion_settings": IngestionSettings(),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    meta = result.asset_materializations_for_node("raw_events")[0].metadata
    unknown = meta["unknown_status_words"].value
    assert unknown["build.sh"] == {"okay-ish": 4}  # summed over both files
    assert unknown["jenkins"] == {"UNSTABLE": 1} and unknown["buildkite"] == {"broken": 1}
    assert set(unknown) == {"build.sh", "gitlab-ci", "jenkins", "airflow", "buildkite"}
    assert meta["quarantine_by_type"].value == {"invalid_value": 2}
