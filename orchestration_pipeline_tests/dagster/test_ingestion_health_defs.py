"""The raw_events checks on what ingestion kept and how it is keeping up, each made to fail on
purpose: rows gone after ingestion, the ingestion KPIs, the quarantine backlog, and the pairs
core_event_coverage judges (commands, agents and their results)."""

import json
import uuid

import dagster as dg
import pytest

from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.ingestion.checks import (
    core_event_coverage,
    events_accounted_for,
    ingest_kpis_within_targets,
    quarantine_backlog,
)
from orchestration_pipeline.defs.resources import IngestionSettings, OrchestrationDatabase, PipelineHome
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db

CHECKS = [events_accounted_for, core_event_coverage, ingest_kpis_within_targets, quarantine_backlog]


def _evaluate(dsn, home, **settings):
    """Run the checks alone (no materialization) and return their evaluations by name."""
    result = dg.materialize(
        [raw_events, *CHECKS],
        resources={
            "orchestration_db": OrchestrationDatabase(dsn=dsn),
            "pipeline_home": PipelineHome(orch_home=str(home)),
            "ingestion_settings": IngestionSettings(**settings),
        },
        instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.checks(*CHECKS),
        raise_on_error=False,
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _ingest(dsn, *paths):
    with connection(dsn) as conn:
        return Ingestor(conn).ingest_paths(paths).as_dict()


def _value(evaluation, key):
    return evaluation.metadata[key].value


# --- events_accounted_for: rows gone after ingestion ----------------------------------------


def test_events_accounted_for_fails_when_rows_are_gone_after_ingestion(orch_dsn, tmp_path):
    path = write_jsonl(tmp_path / "kept.jsonl", [make_event() for _ in range(4)])
    _ingest(orch_dsn, path)
    assert _evaluate(orch_dsn, tmp_path)["events_accounted_for"].passed
    with connection(orch_dsn) as conn, conn.transaction():
        conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_delete")  # as a superuser could
        conn.execute("DELETE FROM events WHERE ctid IN (SELECT ctid FROM events LIMIT 3)")
        conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_delete")
    evaluation = _evaluate(orch_dsn, tmp_path)["events_accounted_for"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.description == f"3 events gone from 1 file after ingestion: {path} (3)"
    assert _value(evaluation, "rows_missing") == 3


# --- ingest_kpis_within_targets ---------------------------------------------------------------


def _record_run(dsn, parse_ms, write_p95_ms, *, lines=100, duplicates=0, files=None, skipped=0):
    """An ingestion run as the Ingestor records it: its summary and its telemetry."""
    run_id = str(uuid.uuid4())
    files = len(parse_ms) + skipped if files is None else files
    summary = {
        "run_id": run_id,
        "files": files,
        "skipped_files": skipped,
        "lines": lines,
        "duplicates": duplicates,
    }
    with connection(dsn) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO ingest_runs (run_id, started_at, finished_at, summary) "
            "VALUES (%s, now() - interval '1 minute', now(), %s)",
            (run_id, json.dumps(summary)),
        )
        for i, ms in enumerate(parse_ms):
            conn.execute(
                "INSERT INTO metrics (name, value, unit, tags) VALUES ('ParseDuration', %s, 'ms', %s)",
                (ms, json.dumps({"run_id": run_id, "file": f"/landing/f{i}.jsonl"})),
            )
        conn.execute(
            "INSERT INTO metrics (name, value, unit, tags) VALUES ('DatabaseWriteLatency', %s, 'ms', %s)",
            (write_p95_ms, json.dumps({"run_id": run_id, "stat": "p95"})),
        )
    return run_id


def test_ingest_kpis_warn_on_a_slow_run_naming_what_missed(orch_dsn, tmp_path):
    # 40 files: the p95 (nearest rank) is the 38th fastest; one file takes 12 s
    parse_ms = [500.0] * 36 + [3_500.0, 3_600.0, 3_700.0, 12_000.0]
    slow = _record_run(orch_dsn, parse_ms, 250.0, lines=200, duplicates=50)
    evaluation = _evaluate(orch_dsn, tmp_path)["ingest_kpis_within_targets"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description == (
        f"run {slow[:8]}: ParseDuration p95 3.60 s > 3.00 s, 1 file took 10.00 s or more "
        "(slowest /landing/f39.jsonl: 12.00 s), DatabaseWriteLatency p95 250 ms > 200 ms; "
        "SkippedDuplicate 25.0% of 200 lines, 0 of 40 files re-dropped"
    )
    [run] = _value(evaluation, "runs")
    assert (run["ParseDuration_p95_ms"], run["ParseDuration_max_ms"]) == (3_600.0, 12_000.0)
    # the targets are settings: with looser ones the same run passes
    loose = _evaluate(
        orch_dsn, tmp_path, kpi_parse_p95_ms=4_000, kpi_parse_max_ms=15_000, kpi_write_p95_ms=300
    )
    assert loose["ingest_kpis_within_targets"].passed


def test_ingest_kpis_judge_the_latest_runs_only(orch_dsn, tmp_path):
    _record_run(orch_dsn, [20_000.0], 10.0)  # an old slow run
    _record_run(orch_dsn, [100.0], 10.0)
    assert _evaluate(orch_dsn, tmp_path)["ingest_kpis_within_targets"].passed
    both = _evaluate(orch_dsn, tmp_path, kpi_runs=2)["ingest_kpis_within_targets"]
    assert not both.passed and "1 file took 10.00 s or more" in both.description


def test_ingest_kpis_pass_on_a_real_run_and_count_re_dropped_files(orch_dsn, tmp_path):
    shared = [make_event() for _ in range(2)]
    first = write_jsonl(tmp_path / "a.jsonl", shared)
    _ingest(orch_dsn, first)
    second = write_jsonl(tmp_path / "b.jsonl", [*shared, make_event(), make_event()])
    _ingest(orch_dsn, first, second)  # a.jsonl dropped again whole; half of b.jsonl re-sent
    evaluation = _evaluate(orch_dsn, tmp_path)["ingest_kpis_within_targets"]
    assert evaluation.passed, evaluation.description
    assert evaluation.description.startswith("latest run within targets: ParseDuration p95 ")
    assert evaluation.description.endswith("SkippedDuplicate 50.0% of 4 lines, 1 of 2 files re-dropped")
    ratio = _value(evaluation, "skipped_duplicate")
    assert (ratio["duplicate_lines"], ratio["redropped_files"], ratio["redropped_file_ratio"]) == (2, 1, 0.5)


# --- quarantine_backlog -----------------------------------------------------------------------


def _quarantined(conn, failure_type, hours_ago, *, replayed=False, discarded=False):
    conn.execute(
        """INSERT INTO quarantine (run_id, source_file, source_line, failure_type, detail, raw_line, raw_sha256,
                                   quarantined_at, replayed_at, discarded_at, discarded_by, discard_reason)
           VALUES (gen_random_uuid(), '/landing/x.jsonl', 1, %s, 'bad', '{', repeat('0', 64),
                   now() - %s * interval '1 hour', CASE WHEN %s THEN now() END,
                   CASE WHEN %s THEN now() END, CASE WHEN %s THEN 'oncall' END, CASE WHEN %s THEN 'junk' END)""",
        (failure_type, hours_ago, replayed, discarded, discarded, discarded),
    )


def test_quarantine_backlog_warns_on_old_pending_lines_by_failure_type(orch_dsn, tmp_path):
    with connection(orch_dsn) as conn, conn.transaction():
        _quarantined(conn, "malformed_json", 1)  # fresh: not a backlog yet
    assert _evaluate(orch_dsn, tmp_path)["quarantine_backlog"].passed
    with connection(orch_dsn) as conn, conn.transaction():
        for _ in range(2):
            _quarantined(conn, "malformed_json", 30)
        _quarantined(conn, "missing_field", 50)
        _quarantined(conn, "wrong_type", 80, replayed=True)  # resolved: not pending
        _quarantined(conn, "wrong_type", 80, discarded=True)
    evaluation = _evaluate(orch_dsn, tmp_path)["quarantine_backlog"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description == (
        "3 quarantined lines pending longer than 24 h: malformed_json 2 (oldest 30 h), "
        "missing_field 1 (oldest 50 h) — replay them after a fix, or discard them"
    )
    by_type = _value(evaluation, "by_failure_type")
    assert {t: (v["pending"], v["older_than_max_age"]) for t, v in by_type.items()} == {
        "malformed_json": (3, 2),
        "missing_field": (1, 1),
    }
    assert _evaluate(orch_dsn, tmp_path, quarantine_max_age_hours=72)["quarantine_backlog"].passed


# --- core_event_coverage: commands, agents and their results ----------------------------------


def _agent(event_type, session, task, *, minutes_ago=120, **payload):
    body = {"agent_type": "coder", "agent_name": "a1", "task_description": "fix it", **payload}
    return make_event(event_type, session_id=session, task_id=task, minutes_ago=minutes_ago, payload=body)


def _coverage(dsn, home, *events):
    _ingest(dsn, write_jsonl(home / f"{uuid.uuid4().hex}.jsonl", events))
    return _evaluate(dsn, home)["core_event_coverage"]


def test_a_command_start_without_its_end_fails_coverage(orch_dsn, tmp_path):
    evaluation = _coverage(
        orch_dsn,
        tmp_path,
        make_event(
            "command_start", session_id="s", task_id="T", payload={"command_id": "c1", "command": "make"}
        ),
        make_event(
            "command_start", session_id="s", task_id="T", payload={"command_id": "c2", "command": "make"}
        ),
        make_event(
            "command_end", session_id="s", payload={"command_id": "c2", "exit_code": 0, "duration_ms": 1}
        ),
    )
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert _value(evaluation, "coverage_report")["sessions"] == [
        {"session_id": "s", "status": "FAIL_CORE_MISSING", "missing": ["command_end for c1"]}
    ]


def test_an_agent_started_without_completed_or_error_fails_coverage(orch_dsn, tmp_path):
    evaluation = _coverage(
        orch_dsn,
        tmp_path,
        _agent("agent.started", "lost", "T1"),
        _agent("agent.progress", "lost", "T1", minutes_ago=110),
        _agent("agent.started", "failed", "T2"),
        _agent("agent.error", "failed", "T2", minutes_ago=110),
        _agent("agent.started", "done", "T3"),
        _agent("agent.completed", "done", "T3", minutes_ago=110, result={"pr": 12}),
        _agent("agent.started", "running", "T4", minutes_ago=1),  # in the grace window
    )
    assert not evaluation.passed
    report = _value(evaluation, "coverage_report")
    assert report["sessions"] == [
        {
            "session_id": "lost",
            "status": "FAIL_CORE_MISSING",
            "missing": ["agent.completed or agent.error for T1:a1"],
        }
    ]
    assert (report["sessions_judged"], report["sessions_in_grace"]) == (3, 1)


def test_an_agent_completed_without_a_result_fails_coverage(orch_dsn, tmp_path):
    evaluation = _coverage(
        orch_dsn,
        tmp_path,
        _agent("agent.started", "s1", "T1"),
        _agent("agent.completed", "s1", "T1", minutes_ago=110),
        _agent("agent.started", "s2", "T2"),
        _agent("agent.completed", "s2", "T2", minutes_ago=110, result="  "),
        _agent("agent.started", "s3", "T3"),
        _agent("agent.completed", "s3", "T3", minutes_ago=110, result="merged PR 12"),
    )
    assert not evaluation.passed
    assert evaluation.description == "2 sessions FAIL_NO_RESULT, 2 with gaps (limit 2)"
    assert _value(evaluation, "coverage_report")["sessions"] == [
        {"session_id": "s1", "status": "FAIL_NO_RESULT", "missing": ["result of agent.completed for T1:a1"]},
        {"session_id": "s2", "status": "FAIL_NO_RESULT", "missing": ["result of agent.completed for T2:a1"]},
    ]
    assert _value(evaluation, "fail_no_result") == 2


def test_agent_runs_that_end_with_a_result_or_an_error_pass_coverage(orch_dsn, tmp_path):
    evaluation = _coverage(
        orch_dsn,
        tmp_path,
        _agent("agent.started", "s1", "T1"),
        _agent("agent.completed", "s1", "T1", minutes_ago=110, result={"summary": "done", "files": 3}),
        _agent("agent.started", "s1", "T2"),
        _agent("agent.error", "s1", "T2", minutes_ago=110),
    )
    assert evaluation.passed, evaluation.description
    assert _value(evaluation, "coverage_report")["overall_status"] == "PASS"
