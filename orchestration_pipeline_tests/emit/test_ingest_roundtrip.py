"""SDK output through the real ingestion into PostgreSQL: accepted whole, and every check passes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestration_pipeline.emit import EventWriter
from orchestration_pipeline.lib.ingestion.checks import (
    core_event_coverage,
    events_accounted_for,
    policy_violations_complete,
    provider_metric_present,
)
from orchestration_pipeline.lib.ingestion.ingest import Ingestor

pytestmark = pytest.mark.db


def test_a_run_with_failures_ingests_cleanly_and_passes_the_checks(orch_conn, tmp_path):
    landing = tmp_path / "landing"
    (tmp_path / "report.xml").write_text("<testsuite/>")
    for session in ("sess-a", "sess-b"):
        with EventWriter(landing, source="roundtrip", session_id=session, max_file_bytes=4096) as w:
            with w.task("T-1", title="build"):
                with w.command("make"):
                    w.provider_selected("Microsoft", cache_hit=True)
                w.artifact(tmp_path / "report.xml")
            with pytest.raises(RuntimeError):
                with w.task("T-2", title="deploy"):
                    with w.command("kubectl", argv=["kubectl", "apply"]):
                        w.error("deploy", "connection refused to 10.0.0.7:6443")
                        raise RuntimeError("deploy failed")
            w.policy_violation("build-02", "C:/agent/x.ps1", "Signing", "unsigned-script")
            w.agent_started("coder", "agent-7", "fix the build", project_id="p-1")
            w.agent_completed("coder", "agent-7", "fix the build", project_id="p-1", result="build fixed")

    summary = Ingestor(orch_conn).ingest_paths([landing]).as_dict()
    assert summary["quarantined"] == 0 and summary["balanced"], summary
    assert summary["lines"] == 2 * 15 and summary["duplicates"] == 0
    # the second session's identical error joins the first one's error group
    assert (summary["accepted"], summary["collapsed"]) == (2 * 15 - 1, 1)
    assert events_accounted_for(orch_conn).passed
    coverage = core_event_coverage(orch_conn, grace=timedelta(0))
    assert coverage.passed and coverage.metadata["coverage_report"]["overall_status"] == "PASS", coverage
    assert coverage.metadata["coverage_report"]["sessions_judged"] == 2
    assert policy_violations_complete(orch_conn).passed
    assert provider_metric_present(orch_conn).passed
    failed = orch_conn.execute(
        "SELECT count(*) FROM events WHERE event_type IN ('task_end', 'command_end') AND status = 'failed'"
    ).fetchone()[0]
    orch_conn.rollback()
    assert failed == 2 * 2
