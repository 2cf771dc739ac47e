"""``no_emitter_drops``: a producer whose emitter dropped events fails the check, named with its count."""

import dagster as dg
import pytest

from orchestration_pipeline.defs.ingestion.checks import no_emitter_drops
from orchestration_pipeline.defs.resources import IngestionSettings, OrchestrationDatabase
from orchestration_pipeline.emit import EventWriter
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db


def _ingest(dsn, *paths):
    with connection(dsn) as conn:
        Ingestor(conn).ingest_paths(list(paths))


def _evaluate(dsn, **settings) -> dg.AssetCheckEvaluation:
    result = dg.materialize(
        [no_emitter_drops],
        resources={
            "orchestration_db": OrchestrationDatabase(dsn=dsn),
            "ingestion_settings": IngestionSettings(**settings),
        },
        instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.checks(no_emitter_drops),
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def _producer_that_drops(tmp_path, source: str, emitted: int, buffered: int):
    """Real SDK output: the landing directory is unwritable while ``emitted`` events are emitted
    into a buffer of ``buffered``, then it comes back; returns the landing directory."""
    blocker = tmp_path / f"{source}-blocker"
    blocker.write_text("a regular file where the landing directory's parent should be\n")
    landing = blocker / "landing"
    w = EventWriter(landing, source=source, session_id=f"{source}-run", max_buffered_events=buffered)
    for i in range(emitted):
        w.metric("n", i)
    assert w.flush(timeout=1) is False and w.dropped == emitted - buffered
    blocker.unlink()
    blocker.mkdir()
    assert w.close()
    return landing


def test_a_drop_notice_fails_the_check_naming_the_producer_and_the_count(orch_dsn, tmp_path, capfd):
    _ingest(
        orch_dsn,
        _producer_that_drops(tmp_path, "nightly-build", emitted=250, buffered=100),
        _producer_that_drops(tmp_path, "deploy", emitted=30, buffered=20),
    )
    capfd.readouterr()  # the SDK's own stderr line about the unwritable directory
    evaluation = _evaluate(orch_dsn)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "nightly-build (150 events)" in evaluation.description
    assert "deploy (10 events)" in evaluation.description
    producers = evaluation.metadata["producers"].value
    assert [(p["producer"], p["dropped_events"], p["notices"]) for p in producers] == [
        ("nightly-build", 150, 1),
        ("deploy", 10, 1),
    ]
    assert producers[0]["sample_sessions"] == ["nightly-build-run"]
    assert "Not a directory" in producers[0]["last_reason"]
    assert evaluation.metadata["dropped_events"].value == 160


def test_without_drops_in_the_window_the_check_passes(orch_dsn, tmp_path):
    landing = tmp_path / "landing"
    with EventWriter(landing, source="healthy", session_id="s") as w:  # no drops: no notice
        w.decision("nothing dropped", stage="emit")
        w.metric("n", 1)
    old_notice = make_event(  # a notice from before the window
        stage="emit",
        source="last-week",
        minutes_ago=3 * 24 * 60,
        payload={"rationale": "dropped", "dropped_events": 5, "reason": "disk full"},
    )
    elsewhere = make_event(  # the same field in another stage is the producer's own business
        stage="cleanup", source="janitor", payload={"rationale": "pruned", "dropped_events": 7}
    )
    _ingest(orch_dsn, landing, write_jsonl(tmp_path / "other.jsonl", [old_notice, elsewhere]))
    evaluation = _evaluate(orch_dsn)
    assert evaluation.passed, evaluation.description
    assert evaluation.metadata["producers"].value == []

    wider = _evaluate(orch_dsn, emitter_drops_lookback_hours=7 * 24)  # the window is a setting
    assert not wider.passed and "last-week (5 events)" in wider.description
    assert "janitor" not in wider.description
