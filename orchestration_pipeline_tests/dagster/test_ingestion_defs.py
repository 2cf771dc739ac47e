"""raw_events, its checks (each one made to fail on purpose), and the landing sensor."""

import json
import os
import time

import dagster as dg
import pytest

from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.ingestion.checks import (
    core_event_coverage,
    events_accounted_for,
    policy_violations_complete,
    provider_metric_present,
)
from orchestration_pipeline.defs.ingestion.sensors import landing_zone_sensor
from orchestration_pipeline.defs.resources import IngestionSettings, OrchestrationDatabase, PipelineHome
from orchestration_pipeline.lib.demo import generate_demo
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db

CHECKS = [events_accounted_for, core_event_coverage, policy_violations_complete, provider_metric_present]


def _resources(dsn, home):
    return {
        "orchestration_db": OrchestrationDatabase(dsn=dsn),
        "pipeline_home": PipelineHome(orch_home=str(home)),
        "ingestion_settings": IngestionSettings(),
    }


def _materialize(dsn, home, selection=None):
    return dg.materialize(
        [raw_events, *CHECKS],
        resources=_resources(dsn, home),
        instance=dg.DagsterInstance.ephemeral(),
        selection=selection,
        raise_on_error=False,
    )


def _checks_only(dsn, home):
    result = _materialize(dsn, home, selection=dg.AssetSelection.checks(*CHECKS))
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _ingest(dsn, *items, tmp_path, name="f.jsonl"):
    from orchestration_pipeline.lib.db import connection

    with connection(dsn) as conn:
        Ingestor(conn).ingest_paths([write_jsonl(tmp_path / name, items)])


def test_demo_data_materializes_and_every_check_passes(orch_dsn, tmp_path):
    generate_demo(tmp_path / "landing", sessions=4, seed=7)
    result = _materialize(orch_dsn, tmp_path)
    assert result.success
    meta = result.asset_materializations_for_node("raw_events")[0].metadata
    assert meta["files"].value == 4 and meta["quarantined"].value == 0
    assert meta["accepted"].value == meta["lines"].value > 0
    assert meta["RowsWritten"].value == meta["accepted"].value
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evals == {next(iter(c.check_specs)).name: True for c in CHECKS}


def test_demo_faults_make_the_checks_fail(orch_dsn, tmp_path):
    generate_demo(tmp_path / "landing", sessions=2, faults=True, seed=3)
    result = _materialize(orch_dsn, tmp_path)
    meta = result.asset_materializations_for_node("raw_events")[0].metadata
    assert meta["collapsed"].value == 499 and meta["redactions"].value == 500
    assert meta["quarantine_by_type"].value == {"malformed_json": 2, "unknown_event_type": 1, "wrong_type": 1}
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evals["events_accounted_for"].passed
    assert not evals["core_event_coverage"].passed
    assert not evals["policy_violations_complete"].passed


def test_events_accounted_for_fails_on_an_unbalanced_ledger(orch_dsn, orch_conn, tmp_path):
    orch_conn.execute(
        "INSERT INTO ingest_files (file_sha256, path, size_bytes, run_id, lines, accepted, quarantined, duplicates, "
        "collapsed) VALUES (repeat('a', 64), '/x.jsonl', 10, gen_random_uuid(), 10, 7, 1, 0, 0)"
    )
    orch_conn.commit()
    evaluation = _checks_only(orch_dsn, tmp_path)["events_accounted_for"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    unbalanced = evaluation.metadata["unbalanced"].value
    assert unbalanced[0]["path"] == "/x.jsonl" and unbalanced[0]["accounted"] == 8


def test_core_event_coverage_fails_on_a_missing_task_end(orch_dsn, tmp_path):
    _ingest(
        orch_dsn,
        make_event("task_start", session_id="late", task_id="t1", minutes_ago=120),
        make_event("task_start", session_id="fine", task_id="t2", minutes_ago=120),
        make_event("task_end", session_id="fine", task_id="t2", minutes_ago=110),
        make_event("task_start", session_id="running", task_id="t3", minutes_ago=1),  # in the grace window
        tmp_path=tmp_path,
    )
    evaluation = _checks_only(orch_dsn, tmp_path)["core_event_coverage"]
    assert not evaluation.passed
    report = evaluation.metadata["coverage_report"].value
    assert report["overall_status"] == "FAIL" and report["fail_core_missing"] == 1
    assert report["sessions"] == [
        {"session_id": "late", "status": "FAIL_CORE_MISSING", "missing": ["task_end for t1"]}
    ]
    assert report["sessions_in_grace"] == 1


def test_core_event_coverage_fails_when_too_many_sessions_have_gaps(orch_dsn, tmp_path):
    orphans = [
        make_event(
            "command_end",
            session_id=f"s{i}",
            payload={"command_id": f"c{i}", "exit_code": 0, "duration_ms": 1},
        )
        for i in range(3)
    ]
    _ingest(orch_dsn, *orphans, tmp_path=tmp_path)
    evaluation = _checks_only(orch_dsn, tmp_path)["core_event_coverage"]
    assert not evaluation.passed
    assert evaluation.metadata["sessions_with_gaps"].value == 3
    assert evaluation.metadata["fail_core_missing"].value == 0


def test_core_event_coverage_passes_a_pair_that_straddles_the_lookback(orch_dsn, tmp_path):
    week = 7 * 24 * 60
    events = []
    for i in range(3):  # more sessions than the gap limit: each one would fail the check
        events += [
            make_event("task_start", session_id=f"long{i}", task_id=f"T{i}", minutes_ago=week + 30),
            make_event("task_end", session_id=f"long{i}", task_id=f"T{i}", minutes_ago=week - 60),
        ]
    _ingest(orch_dsn, *events, tmp_path=tmp_path)
    evaluation = _checks_only(orch_dsn, tmp_path)["core_event_coverage"]
    assert evaluation.passed, evaluation.description
    assert evaluation.metadata["sessions_with_gaps"].value == 0


def test_policy_violations_complete_counts_a_blank_field_as_missing(orch_dsn, tmp_path):
    _ingest(
        orch_dsn,
        make_event(
            "policy_violation",
            source="src-ws",
            payload={"host": "h", "file": "   ", "policy": "p", "rule": "r"},
        ),
        tmp_path=tmp_path,
    )
    evaluation = _checks_only(orch_dsn, tmp_path)["policy_violations_complete"]
    assert not evaluation.passed and "src-ws" in evaluation.description


def test_policy_violations_complete_names_the_producer(orch_dsn, tmp_path):
    _ingest(
        orch_dsn,
        make_event(
            "policy_violation",
            source="scanner-a",
            payload={"host": "h", "file": "f", "policy": "p", "rule": None},
        ),
        make_event(
            "policy_violation",
            source="scanner-a",
            payload={"host": "h", "file": "", "policy": "p", "rule": None},
        ),
        make_event("policy_violation", source="scanner-b"),
        tmp_path=tmp_path,
    )
    evaluation = _checks_only(orch_dsn, tmp_path)["policy_violations_complete"]
    assert not evaluation.passed
    assert "scanner-a" in evaluation.description and "scanner-b" not in evaluation.description
    [producer] = evaluation.metadata["producers"].value
    assert (producer["incomplete"], producer["missing_fields"]) == (2, ["file", "rule"])
    assert evaluation.metadata["policy_violations"].value == 3


def test_provider_metric_present_warns_when_cache_hit_is_missing(orch_dsn, tmp_path):
    _ingest(
        orch_dsn,
        make_event("metric", session_id="p1", payload={"name": "provider_type", "value": 1}),
        make_event("metric", session_id="p2", payload={"name": "provider_type", "value": 2}),
        make_event("metric", session_id="p2", payload={"name": "provider_cache_hit", "value": 1}),
        make_event("decision", session_id="p3", payload={"rationale": "x", "provider": "System"}),
        tmp_path=tmp_path,
    )
    evaluation = _checks_only(orch_dsn, tmp_path)["provider_metric_present"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    lacking = {s["session_id"]: s["missing"] for s in evaluation.metadata["sample"].value}
    assert lacking == {
        "p1": ["provider_cache_hit"],
        "p3": ["provider_type (1=Microsoft, 2=System)", "provider_cache_hit"],
    }


def test_landing_sensor_requests_runs_for_new_files_only(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    home = PipelineHome(orch_home=str(tmp_path))

    def tick(cursor):
        with dg.build_sensor_context(cursor=cursor, resources={"pipeline_home": home}) as ctx:
            return landing_zone_sensor(ctx)

    assert isinstance(tick(None), dg.SkipReason)
    write_jsonl(landing / "a.jsonl", [make_event()])
    (landing / "ignored.jsonl.tmp").write_text("{}")  # a spool file still being written
    first = tick(None)
    assert [r.tags["landing_files"] for r in first.run_requests] == ["1"]
    assert isinstance(tick(first.cursor), dg.SkipReason)
    time.sleep(0.01)
    staged = landing / "b.jsonl.tmp"
    write_jsonl(staged, [make_event()])
    os.replace(staged, landing / "b.jsonl")  # renamed into place after the last tick
    second = tick(first.cursor)
    assert len(second.run_requests) == 1 and second.run_requests[0].run_key != first.run_requests[0].run_key
    assert json.loads(second.cursor)["names"] == [str(landing / "b.jsonl")]
