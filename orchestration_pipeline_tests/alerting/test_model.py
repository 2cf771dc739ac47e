"""Alerting without a database: thresholds, observations from each source, the webhook message,
the settings, and the runbook sections alerts point to."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestration_pipeline.errors import ConfigError
from orchestration_pipeline.lib.alerting.delivery import WebhookConfig, slack_payload, stderr_line
from orchestration_pipeline.lib.alerting.model import AlertError, Observation, meets, parse_threshold
from orchestration_pipeline.lib.alerting.sources import (
    CheckEvaluation,
    FailedStep,
    FreshnessChange,
    RunFailure,
    check_observation,
    covered_by_checks,
    freshness_observation,
    run_failure_observation,
    run_source,
)
from orchestration_pipeline.settings import load_settings
from orchestration_pipeline_tests.conftest import REPO_ROOT

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _evaluation(**overrides) -> CheckEvaluation:
    fields = {
        "asset": ("qdrant_index_state",),
        "check_name": "index_drift_zero",
        "passed": False,
        "severity": "ERROR",
        "description": "drift 3 after reconciliation",
        "metadata": {"remaining_drift": 3, "samples": ["d1", "d2"]},
        "run_id": "0123456789abcdef",
        "storage_id": 42,
        "evaluated_at": NOW,
        "declared": {"severity": "ERROR", "runbook": "docs/runbooks/index.md#index_drift_zero"},
    }
    return CheckEvaluation(**{**fields, **overrides})


@pytest.mark.parametrize(
    "severity, threshold, expected",
    [
        ("warning", "WARN", True),
        ("error", "WARN", True),
        ("warning", "ERROR", False),
        ("error", "error", True),
    ],
)
def test_the_threshold_is_a_minimum_severity(severity, threshold, expected):
    assert meets(severity, threshold) is expected


def test_an_unknown_threshold_is_refused_naming_the_variable_and_the_choices():
    assert parse_threshold(None) == "WARN" and parse_threshold(" error ") == "ERROR"
    with pytest.raises(AlertError, match="ORCH_ALERT_MIN_SEVERITY must be WARN or ERROR, not 'info'"):
        parse_threshold("info")


def test_an_observation_needs_a_known_source_kind_and_an_aware_time():
    with pytest.raises(AlertError, match="kind one of check, freshness, run"):
        Observation("policy:x", True, NOW, "r", "m")
    with pytest.raises(AlertError, match="timezone"):
        Observation("check:a:b", True, NOW.replace(tzinfo=None), "r", "m")


def test_a_failed_evaluation_carries_its_metadata_link_and_the_checks_runbook():
    obs = check_observation(_evaluation())
    assert obs.source == "check:qdrant_index_state:index_drift_zero" and obs.failing
    assert obs.severity == "error"
    assert (
        obs.message == "index_drift_zero on qdrant_index_state failed (ERROR): drift 3 after reconciliation"
    )
    assert obs.details["metadata"] == {"remaining_drift": 3, "samples": ["d1", "d2"]}
    assert obs.link_path == "/assets/qdrant_index_state?view=checks&checkDetail=index_drift_zero"
    assert obs.runbook == "docs/runbooks/index.md#index_drift_zero"


def test_a_warn_evaluation_is_a_warning_and_a_multi_part_key_is_quoted_in_the_link():
    obs = check_observation(_evaluation(severity="WARN", asset=("raw", "events v2"), declared={}))
    assert obs.severity == "warning"
    assert obs.link_path == "/assets/raw/events%20v2?view=checks&checkDetail=index_drift_zero"
    assert obs.runbook == "docs/runbooks/alerting.md#a-check-failed"


def test_a_long_description_becomes_one_bounded_line():
    obs = check_observation(_evaluation(description="line one\nline two " + "x" * 500))
    assert "\n" not in obs.message and len(obs.message) <= 300 and obs.message.endswith("…")


@pytest.mark.parametrize(
    "state, failing, severity", [("WARN", True, "warning"), ("FAIL", True, "error"), ("PASS", False, "info")]
)
def test_freshness_states_map_to_failing_or_passing(state, failing, severity):
    change = FreshnessChange(
        ("event_archives",), state, "PASS", NOW, 7, policy="warn after 26h, fail after 50h"
    )
    obs = freshness_observation(change)
    assert (obs.source, obs.failing, obs.severity) == ("freshness:event_archives", failing, severity)
    assert obs.link_path == "/assets/event_archives"


@pytest.mark.parametrize("state", ["UNKNOWN", "NOT_APPLICABLE"])
def test_freshness_states_without_information_are_not_observations(state):
    assert freshness_observation(FreshnessChange(("a",), state, "PASS", NOW, 1)) is None


def test_a_run_failure_names_the_first_failed_step_and_its_error():
    failure = RunFailure(
        "abcdef0123", "ingest_job", NOW, 9, "STEP_FAILURE",
        steps=(FailedStep("raw_events", "DagsterExecutionStepExecutionError", "RuntimeError: disk full"),
               FailedStep("task_projection", "DagsterExecutionStepExecutionError", "boom")),
    )  # fmt: skip
    obs = run_failure_observation(failure)
    assert obs.source == "run:ingest_job" and obs.link_path == "/runs/abcdef0123"
    assert (
        obs.message
        == "run abcdef01 of ingest_job failed at step raw_events (and 1 more step): RuntimeError: disk full"
    )
    assert [s["step"] for s in obs.details["failed_steps"]] == ["raw_events", "task_projection"]
    assert not covered_by_checks(failure)


def test_a_run_failed_only_by_blocking_checks_is_left_to_the_check_alerts():
    only_checks = RunFailure(
        "r", "j", NOW, 1, steps=(FailedStep("a_c", "DagsterAssetCheckFailedError", "x"),)
    )
    assert covered_by_checks(only_checks)
    assert not covered_by_checks(RunFailure("r", "j", NOW, 1, reason="RUN_EXCEPTION", error="worker died"))


def test_implicit_asset_jobs_streak_per_selection_and_long_selections_by_hash():
    assert run_source("ingest_job", ["a"]) == "run:ingest_job"
    assert run_source("__ASSET_JOB", ["b", "a"]) == "run:__ASSET_JOB[a,b]"
    long = run_source("__ASSET_JOB", [f"asset_{i:03d}" for i in range(40)])
    assert re.fullmatch(r"run:__ASSET_JOB\[40 assets #[0-9a-f]{12}\]", long)


def _alert(**overrides) -> dict:
    alert = {
        "alert_id": 7, "severity": "error", "source": "check:a:b", "message": "b on a failed (ERROR): x < y & z",
        "resolution": None, "link_path": "/assets/a?view=checks&checkDetail=b", "runbook": "docs/runbooks/x.md#b",
        "occurrences": 3, "details": {"metadata": {"rows": 12, "samples": ["<id1>"]}, "partition": "2026-01-01"},
    }  # fmt: skip
    return {**alert, **overrides}


def test_the_webhook_message_is_slack_json_with_text_and_blocks():
    body = slack_payload(_alert(), "raised", ui_url="http://dagster.internal:3000/")
    assert json.loads(json.dumps(body)) == body
    assert body["text"].endswith("Alert #7 [ERROR] b on a failed (ERROR): x < y & z")
    header, fields, context = body["blocks"]
    assert "x &lt; y &amp; z" in header["text"]["text"]  # mrkdwn control characters escaped
    assert {"type": "mrkdwn", "text": "*rows*\n12"} in fields["fields"]
    assert any("partition" in f["text"] for f in fields["fields"])
    links = context["elements"][0]["text"]
    assert "<http://dagster.internal:3000/assets/a?view=checks&checkDetail=b|Dagster UI>" in links
    assert "docs/runbooks/x.md#b" in links and "failed 3 times" in links


def test_a_resolved_message_says_so_without_the_failure_details():
    body = slack_payload(_alert(resolution="b on a passed"), "resolved")
    assert "Resolved #7" in body["text"] and body["text"].endswith("b on a passed")
    assert [b["type"] for b in body["blocks"]] == ["section", "context"]
    assert "Dagster UI `/assets/a?view=checks&amp;checkDetail=b`" in body["blocks"][1]["elements"][0]["text"]


def test_the_stderr_line_names_the_ui_path_and_the_runbook():
    line = stderr_line(_alert(), "raised")
    assert line.startswith("alert #7 raised [error] b on a failed")
    assert "| ui /assets/a?view=checks&checkDetail=b | runbook docs/runbooks/x.md#b" in line


def test_the_webhook_target_recorded_is_the_host_never_the_secret_path():
    config = WebhookConfig("https://hooks.slack.com/services/T0/B0/SECRET")
    assert config.target == "https://hooks.slack.com"
    assert [config.backoff(n) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


@pytest.mark.parametrize("url", ["ftp://host/SECRET", "hooks.slack.com/services/SECRET", "http://[SECRET"])
def test_a_bad_webhook_url_is_refused_without_echoing_it(url, tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings({"ORCH_HOME": str(tmp_path), "ORCH_ALERT_WEBHOOK_URL": url})
    assert "ORCH_ALERT_WEBHOOK_URL" in str(info.value) and "SECRET" not in str(info.value)
    with pytest.raises(AlertError) as again:
        WebhookConfig(url)
    assert "SECRET" not in str(again.value)


def test_the_alert_settings_are_read_from_the_environment(tmp_path):
    settings = load_settings({"ORCH_HOME": str(tmp_path), "ORCH_ALERT_MIN_SEVERITY": "error"})
    assert settings.alert_min_severity == "ERROR" and settings.alert_webhook_url is None
    assert load_settings({"ORCH_HOME": str(tmp_path)}).alert_min_severity == "WARN"
    with pytest.raises(ConfigError, match="ORCH_ALERT_MIN_SEVERITY must be WARN or ERROR"):
        load_settings({"ORCH_HOME": str(tmp_path), "ORCH_ALERT_MIN_SEVERITY": "critical"})


def _anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of the Markdown headings outside code fences."""
    found, fenced = set(), False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.add(re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-"))
    return found


def test_every_runbook_section_an_alert_points_to_exists():
    sources = (REPO_ROOT / "orchestration_pipeline/lib/alerting/sources.py").read_text()
    anchors = set(re.findall(r"\{RUNBOOK\}#([a-z0-9-]+)", sources))
    assert anchors == {"a-check-failed", "an-asset-is-stale", "a-run-failed"}
    assert anchors <= _anchors(REPO_ROOT / "docs/runbooks/alerting.md")
