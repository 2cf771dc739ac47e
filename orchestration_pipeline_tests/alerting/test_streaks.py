"""Streaks in the database: one alert per failure streak, escalation, resolution, the threshold,
replays, and the alerts of the notify effect beside them."""

from datetime import UTC, datetime, timedelta

import pytest

from orchestration_pipeline.lib.alerting.model import Observation
from orchestration_pipeline.lib.alerting.streaks import apply_observations
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline_tests.alerting._support import alerts_of, notices_of

pytestmark = pytest.mark.db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _obs(n: int, failing: bool, severity: str = "error", source: str = "check:a:c", **extra) -> Observation:
    return Observation(
        source=source,
        failing=failing,
        observed_at=T0 + timedelta(minutes=n),
        event_ref=f"run-{n}#{n}",
        message=f"c on a {'failed' if failing else 'passed'} ({n})",
        severity=severity,
        details={"metadata": {"bad_rows": n}},
        check_key="a:c",
        asset_key="a",
        run_id=f"run-{n}",
        **extra,
    )


def _apply(dsn: str, *observations: Observation, threshold: str = "WARN"):
    with connection(dsn) as conn:
        return apply_observations(conn, list(observations), min_severity=threshold)


def test_fail_fail_pass_is_one_alert_and_one_resolve(orch_dsn):
    report = _apply(orch_dsn, _obs(1, True), _obs(2, True), _obs(3, False))
    assert dict(report.outcomes) == {"raised": 1, "repeated": 1, "resolved": 1}
    [alert] = alerts_of(orch_dsn)
    assert alert["source"] == "check:a:c" and alert["severity"] == "error"
    assert alert["occurrences"] == 2 and alert["failed_at"] == T0 + timedelta(minutes=1)
    assert alert["last_failed_at"] == T0 + timedelta(minutes=2)
    assert alert["resolved_at"] == T0 + timedelta(minutes=3) and alert["resolution"] == "c on a passed (3)"
    assert alert["details"]["metadata"] == {"bad_rows": 1} and alert["details"]["latest"]["run_id"] == "run-2"
    assert notices_of(orch_dsn) == [
        (alert["alert_id"], "raised", "pending"),
        (alert["alert_id"], "resolved", "pending"),
    ]


def test_a_new_failure_after_the_resolve_is_a_new_streak_and_a_new_alert(orch_dsn):
    _apply(orch_dsn, _obs(1, True), _obs(2, False), _obs(3, True))
    first, second = alerts_of(orch_dsn)
    assert first["resolved_at"] is not None and second["resolved_at"] is None
    assert [n[1] for n in notices_of(orch_dsn)] == ["raised", "resolved", "raised"]


def test_the_same_observations_applied_twice_change_nothing(orch_dsn):
    batch = [_obs(1, True), _obs(2, True)]
    _apply(orch_dsn, *batch)
    again = _apply(orch_dsn, *batch)
    assert dict(again.outcomes) == {"replayed": 2}
    [alert] = alerts_of(orch_dsn)
    assert alert["occurrences"] == 2 and len(notices_of(orch_dsn)) == 1


def test_below_the_threshold_nothing_is_raised_until_the_streak_reaches_it(orch_dsn):
    report = _apply(orch_dsn, _obs(1, True, "warning"), _obs(2, True, "warning"), threshold="ERROR")
    assert dict(report.outcomes) == {"below_threshold": 2} and alerts_of(orch_dsn) == []
    report = _apply(orch_dsn, _obs(3, True, "error"), threshold="ERROR")
    [alert] = alerts_of(orch_dsn)
    assert dict(report.outcomes) == {"raised": 1}
    assert alert["occurrences"] == 3 and alert["failed_at"] == T0 + timedelta(minutes=1)


def test_a_warning_streak_that_passes_below_the_threshold_sends_nothing(orch_dsn):
    report = _apply(orch_dsn, _obs(1, True, "warning"), _obs(2, False), threshold="ERROR")
    assert dict(report.outcomes) == {"below_threshold": 1, "passing": 1}
    assert alerts_of(orch_dsn) == [] and notices_of(orch_dsn) == []


def test_a_more_severe_failure_escalates_the_open_alert_once(orch_dsn):
    _apply(
        orch_dsn,
        _obs(1, True, "warning"),
        _obs(2, True, "error"),
        _obs(3, True, "error"),
        _obs(4, True, "warning"),
    )
    [alert] = alerts_of(orch_dsn)
    assert alert["severity"] == "error" and alert["occurrences"] == 4
    assert [n[1] for n in notices_of(orch_dsn)] == ["raised", "escalated"]


def test_sources_have_separate_streaks(orch_dsn):
    _apply(orch_dsn, _obs(1, True), _obs(2, True, source="check:a:other"), _obs(3, False))
    by_source = {a["source"]: a for a in alerts_of(orch_dsn)}
    assert by_source["check:a:c"]["resolved_at"] is not None
    assert by_source["check:a:other"]["resolved_at"] is None


def test_secrets_in_a_failure_are_redacted_before_they_are_stored(orch_dsn):
    secret = "postgresql://app:hunter2-very-secret@db.internal:5432/orch"
    leaky = Observation("run:ingest_job", True, T0, "r#1", f"cannot connect to {secret}",
                        details={"error": f"password=hunter2-very-secret {secret}"})  # fmt: skip
    _apply(orch_dsn, leaky)
    [alert] = alerts_of(orch_dsn)
    assert "hunter2" not in alert["message"] and "hunter2" not in str(alert["details"])


def test_notify_alerts_live_beside_streaks_and_may_be_open_together(orch_dsn):
    """The notify effect's alerts (source policy:<id>) belong to no streak: the one-open-alert
    rule does not apply to them."""
    with connection(orch_dsn) as conn:
        for _ in range(2):
            conn.execute(
                "INSERT INTO alerts (source, severity, subject, message) VALUES ('policy:page', 'warning', 's', 'm')"
            )
        conn.commit()
    _apply(orch_dsn, _obs(1, True))
    assert [a["source"] for a in alerts_of(orch_dsn)] == ["policy:page", "policy:page", "check:a:c"]


def test_the_database_refuses_a_second_open_alert_for_one_streak(orch_dsn):
    import psycopg

    _apply(orch_dsn, _obs(1, True))
    with connection(orch_dsn) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO alerts (source, severity, subject, message) VALUES ('check:a:c', 'error', 's', 'm')"
        )


def test_before_the_migration_alerting_names_the_fix_and_writes_no_event_per_try(databases):
    from orchestration_pipeline.errors import SchemaNotReady

    dsn = databases.migrated("orchestration", upto=22)
    for _ in range(2):  # a sensor tries every 30 s
        with pytest.raises(SchemaNotReady, match="alert_streaks.*run 'orchestration-pipeline db migrate'"):
            _apply(dsn, _obs(1, True))
    with connection(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE event_type = 'decision'").fetchone()[0] == 0
