"""``alerts list|show|ack|deliver`` through click against a real orchestration DB."""

import json
import os
import shutil
from datetime import UTC, datetime

import click
import dagster as dg
import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli._common import ErrorReportingGroup
from orchestration_pipeline.cli.alerts import alerts
from orchestration_pipeline.lib.alerting.model import Observation
from orchestration_pipeline.lib.alerting.streaks import apply_observations
from orchestration_pipeline.lib.audit.ledger import AuditFilter, query_audit
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline_tests.alerting._support import notices_of, webhook_receiver

pytestmark = pytest.mark.db


@click.group(cls=ErrorReportingGroup)
def main() -> None:
    """The console script's error handling around the alerts group."""


main.add_command(alerts)


@pytest.fixture
def cli(orch_dsn, tasks_dsn, tmp_path):
    def _cli(*args: str, **env: str):
        cleared = {k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))}
        full_env = {
            **cleared,
            "ORCH_HOME": str(tmp_path / "home"),
            "ORCH_DATABASE_URL": orch_dsn,
            "TASKS_DATABASE_URL": tasks_dsn,
            "ORCH_ACTOR": "test:oncall",
            **env,
        }
        return CliRunner().invoke(main, ["alerts", *args], env=full_env, catch_exceptions=False)

    return _cli


def _seed(dsn: str) -> None:
    """Alert 1: resolved; alert 2: open (failed twice); alert 3: a notify alert."""
    t = [datetime(2026, 3, 1, 12, n, tzinfo=UTC) for n in range(5)]
    observations = [
        Observation("check:a:c", True, t[0], "r#0", "c on a failed (ERROR): 2 rows", details={"metadata": {"rows": 2}},
                    runbook="docs/runbooks/x.md#c", link_path="/assets/a?view=checks&checkDetail=c"),
        Observation("check:a:c", False, t[1], "r#1", "c on a passes again"),
        Observation("run:ingest_job", True, t[2], "r#2", "run r2 of ingest_job failed", run_id="r2"),
        Observation("run:ingest_job", True, t[3], "r#3", "run r3 of ingest_job failed", run_id="r3"),
    ]  # fmt: skip
    with connection(dsn) as conn:
        apply_observations(conn, observations, min_severity="WARN")
        conn.execute(
            "INSERT INTO alerts (source, severity, subject, message) VALUES ('policy:p', 'info', 's', 'm')"
        )
        conn.commit()


def test_list_shows_status_and_open_keeps_only_what_needs_someone(cli, orch_dsn):
    _seed(orch_dsn)
    every = [json.loads(line) for line in cli("list", "--json").output.splitlines()]
    assert {r["alert_id"]: r["status"] for r in every} == {1: "resolved", 2: "open", 3: "open"}
    assert every[-1]["details"]["metadata"] == {"rows": 2} and every[-1]["delivery"] == "pending"
    opened = [json.loads(line) for line in cli("list", "--open", "--json").output.splitlines()]
    assert sorted(r["alert_id"] for r in opened) == [2, 3]
    table = cli("list").output
    assert "run:ingest_job" in table and "run r3 of ingest_job failed" not in table
    assert "run r2 of ingest_job failed (failed 2 times)" in table
    assert "runbook docs/runbooks/x.md#c" in table


def test_ack_is_recorded_with_who_and_why_and_audited(cli, orch_dsn):
    _seed(orch_dsn)
    result = cli("ack", "2", "--reason", "INC-88: re-running the ingest", "--request-id", "req-ack-1")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("alert 2 acknowledged by test:oncall at ")
    shown = json.loads(cli("show", "2", "--json").output)
    assert (shown["status"], shown["acknowledged_by"], shown["ack_reason"]) == (
        "acknowledged", "test:oncall", "INC-88: re-running the ingest")  # fmt: skip
    with connection(orch_dsn) as conn:
        [entry] = query_audit(conn, AuditFilter(entity_type="alert", entity_id="2"))
    assert (entry["actor"], entry["request_id"], entry["operation"]) == ("test:oncall", "req-ack-1", "update")
    assert entry["reason"] == "INC-88: re-running the ingest" and entry["source"] == "cli:alerts ack"
    assert (
        entry["before_data"]["acknowledged_at"] is None
        and entry["after_data"]["acknowledged_by"] == "test:oncall"
    )
    assert [r["alert_id"] for r in map(json.loads, cli("list", "--open", "--json").output.splitlines())] == [
        3
    ]


def test_a_second_ack_is_refused_naming_the_first_and_nothing_is_audited_twice(cli, orch_dsn):
    _seed(orch_dsn)
    cli("ack", "2", "--reason", "mine")
    again = cli("ack", "2", "--reason", "no, mine", "--actor", "test:other")
    assert again.exit_code == 1
    assert "alert 2 was already acknowledged by test:oncall at" in again.output
    with connection(orch_dsn) as conn:
        assert len(query_audit(conn, AuditFilter(entity_type="alert"))) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("ack", "99", "--reason", "x"),
            "no alert 99 — 'orchestration-pipeline alerts list' shows the alert ids",
        ),
        (("ack", "2", "--reason", "  "), "an acknowledgement needs a reason"),
        (("show", "99"), "no alert 99"),
    ],
)
def test_refusals_are_one_line_naming_the_fix(cli, orch_dsn, args, message):
    _seed(orch_dsn)
    result = cli(*args)
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_ack_requires_a_reason_option(cli):
    result = CliRunner().invoke(main, ["alerts", "ack", "1"])
    assert result.exit_code == 2 and "--reason" in result.output


def test_show_lists_every_webhook_attempt(cli, orch_dsn):
    _seed(orch_dsn)
    with webhook_receiver(fail_first=1) as receiver:
        result = cli("deliver", ORCH_ALERT_WEBHOOK_URL=receiver.url)
        assert result.exit_code == 0, result.output
        assert len(receiver.accepted) == 3  # raised and resolved of alert 1, raised of alert 2
    assert "notices: 3 delivered, 0 failed" in result.output
    shown = cli("show", "1").output
    assert "attempt 1 of notice 1" in shown and "failed (HTTP 503" in shown
    assert "attempt 2 of notice 1" in shown and "delivered (HTTP 200" in shown
    assert "secret-token" not in shown


def test_deliver_exits_1_while_the_webhook_fails_and_retry_failed_sends_again(cli, orch_dsn):
    _seed(orch_dsn)
    with webhook_receiver(fail_first=100, fail_status=404) as receiver:
        failed = cli("deliver", ORCH_ALERT_WEBHOOK_URL=receiver.url)
    assert failed.exit_code == 1 and "3 failed" in failed.output
    with webhook_receiver() as receiver:
        fixed = cli("deliver", "--retry-failed", ORCH_ALERT_WEBHOOK_URL=receiver.url)
        assert len(receiver.accepted) == 3
    assert fixed.exit_code == 0 and "3 failed notices put back for delivery" in fixed.output
    assert [state for _, _, state in notices_of(orch_dsn)] == ["delivered"] * 3


def test_deliver_without_a_webhook_prints_to_stderr_only(cli, orch_dsn):
    _seed(orch_dsn)
    result = cli("deliver")
    assert result.exit_code == 0 and "3 unsent (no webhook)" in result.output
    assert (
        "alert #1 raised [error] c on a failed (ERROR): 2 rows" in result.output
    )  # stderr, mixed in by CliRunner


@dg.asset
def nightly_export():
    return 1


@dg.asset_check(asset=nightly_export)
def export_complete() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="3 rows missing", metadata={"missing": 3})


def test_scan_runs_the_sensors_once_against_the_dagster_instance_and_twice_changes_nothing(
    cli, orch_dsn, databases, tmp_path, monkeypatch
):
    """Without the daemon: a check evaluated by a run that stopped is alerted on by `alerts scan`."""
    from orchestration_pipeline.lib.embedded import to_sqlalchemy_psycopg2
    from orchestration_pipeline.lib.project_files import project_root

    dagster_url = databases.create("dagster")
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    shutil.copy(project_root() / "deploy" / "dagster.yaml", home / "dagster" / "dagster.yaml")
    env = {"DAGSTER_DATABASE_URL": dagster_url, "ORCH_DAGSTER_PG_URL": to_sqlalchemy_psycopg2(dagster_url),
           "DAGSTER_HOME": str(home / "dagster")}  # fmt: skip
    monkeypatch.setenv("ORCH_DAGSTER_PG_URL", env["ORCH_DAGSTER_PG_URL"])
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        dg.materialize([nightly_export, export_complete], instance=instance)

    first = cli("scan", "--json", **env)
    assert first.exit_code == 0, first.output
    summaries = json.loads(first.output.strip().splitlines()[-1])
    assert set(summaries) == {
        "asset_check_alert_sensor",
        "asset_freshness_alert_sensor",
        "run_failure_alert_sensor",
    }
    assert "1 raised" in summaries["asset_check_alert_sensor"]
    again = json.loads(cli("scan", "--json", **env).output.strip().splitlines()[-1])
    assert "1 replayed" in again["asset_check_alert_sensor"]
    [alert] = [json.loads(line) for line in cli("list", "--json").output.splitlines()]
    assert alert["source"] == "check:nightly_export:export_complete" and alert["details"]["metadata"] == {
        "missing": 3
    }
