"""event_archives and event_purge, their checks (each made to fail), the sensor and the schedule."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.defs.retention.assets import ARCHIVE_FRESHNESS, event_archives, event_purge
from orchestration_pipeline.defs.retention.checks import (
    archive_verified,
    default_partition_empty,
    nothing_purged_unarchived,
    retention_policy_active,
)
from orchestration_pipeline.defs.retention.resources import RetentionSettings
from orchestration_pipeline.defs.retention.sensors import nightly_retention, retention_sensor
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.retention.run import today_utc
from orchestration_pipeline_tests.retention._support import old_day, partition_exists, seed_events, statuses

pytestmark = pytest.mark.db

CHECKS = [archive_verified, nothing_purged_unarchived, retention_policy_active, default_partition_empty]


def _resources(orch_dsn, tmp_path, **settings):
    return {
        "orchestration_db": OrchestrationDatabase(dsn=orch_dsn),
        "retention_settings": RetentionSettings(archive_uri=str(tmp_path / "archive"), **settings),
    }


def _materialize(orch_dsn, tmp_path, day, selection=None, **settings):
    return dg.materialize(
        [event_archives, event_purge, *CHECKS],
        resources=_resources(orch_dsn, tmp_path, **settings),
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=day.isoformat() if day else None,
        selection=selection,
        raise_on_error=False,
    )


def _evaluations(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_day_is_archived_verified_and_kept_while_the_purge_is_off(orch_dsn, tmp_path):
    day = old_day()
    with connection(orch_dsn) as conn:
        seed_events(conn, day, 40)
    result = _materialize(orch_dsn, tmp_path, day, purge=False)
    assert result.success
    checks = _evaluations(result)
    assert all(e.passed for e in checks.values()), {k: e.description for k, e in checks.items()}
    archived = result.asset_materializations_for_node("event_archives")[0].metadata
    assert archived["outcomes"].value == {f"events {day}": "verified", f"metrics {day}": "nothing"}
    purge = result.asset_materializations_for_node("event_purge")[0].metadata
    assert purge["outcomes"].value[f"events {day}"] == "would_purge" and purge["purge_enabled"].value is False
    with connection(orch_dsn) as conn:
        assert partition_exists(conn, f"events_p{day:%Y%m%d}")


def test_with_the_purge_on_the_day_is_dropped(orch_dsn, tmp_path):
    day = old_day()
    with connection(orch_dsn) as conn:
        seed_events(conn, day, 40)
    result = _materialize(orch_dsn, tmp_path, day, purge=True)
    assert result.success
    with connection(orch_dsn) as conn:
        assert not partition_exists(conn, f"events_p{day:%Y%m%d}")
        assert statuses(conn, "events", day) == ["purged"]
        actor = conn.execute(
            "SELECT actor, request_id FROM audit_ledger WHERE operation = 'purge'"
        ).fetchone()
    assert actor == ("automation:dagster", result.run_id)
    assert _evaluations(result)["nothing_purged_unarchived"].passed


def test_archive_verified_fails_and_blocks_the_purge_in_the_same_run(orch_dsn, tmp_path):
    day, broken = old_day(40), old_day(41)
    with connection(orch_dsn) as conn:
        seed_events(conn, day, 10)
        seed_events(conn, broken, 10)
    assert _materialize(orch_dsn, tmp_path, broken, purge=False).success
    (tmp_path / "archive" / "events" / f"{broken:%Y-%m-%d}.parquet").write_bytes(b"not parquet")
    with connection(orch_dsn) as conn:  # the file of another due day was found damaged
        conn.execute(
            "UPDATE archive_manifests SET status = 'failed', error = 'sha256 differs' WHERE day = %s",
            (broken,),
        )
        conn.commit()
    result = _materialize(orch_dsn, tmp_path, day, purge=True)
    verdict = _evaluations(result)["archive_verified"]
    assert not verdict.passed and verdict.severity == dg.AssetCheckSeverity.ERROR
    assert verdict.metadata["samples"].value[0]["day"] == broken.isoformat()
    assert not result.asset_materializations_for_node("event_purge")  # blocked
    with connection(orch_dsn) as conn:
        assert partition_exists(conn, f"events_p{day:%Y%m%d}")
        assert statuses(conn, "events", day) == ["verified"]


def test_nothing_purged_unarchived_fails_after_a_drop_by_hand(orch_dsn, tmp_path):
    day = old_day()
    with connection(orch_dsn) as conn:
        seed_events(conn, day, 5)
    assert _materialize(orch_dsn, tmp_path, day, purge=False).success  # retention has seen the partition
    with connection(orch_dsn) as conn:
        conn.execute(f"ALTER TABLE events DETACH PARTITION events_p{day:%Y%m%d}")
        conn.execute(f"DROP TABLE events_p{day:%Y%m%d}")
        conn.commit()
    result = _materialize(
        orch_dsn, tmp_path, None, selection=dg.AssetSelection.checks(nothing_purged_unarchived)
    )
    verdict = _evaluations(result)["nothing_purged_unarchived"]
    assert not verdict.passed and verdict.severity == dg.AssetCheckSeverity.ERROR


def test_warnings_for_unarchived_days_and_stray_rows(orch_dsn, tmp_path):
    day = old_day()
    with connection(orch_dsn) as conn:
        seed_events(conn, day, 5)
        seed_events(conn, old_day(70), 2, partition=False)
    checks = dg.AssetSelection.checks(retention_policy_active, default_partition_empty)
    result = _materialize(orch_dsn, tmp_path, None, selection=checks)
    evaluations = _evaluations(result)
    for name in ("retention_policy_active", "default_partition_empty"):
        assert not evaluations[name].passed and evaluations[name].severity == dg.AssetCheckSeverity.WARN


def test_a_day_inside_the_window_is_refused(orch_dsn, tmp_path):
    result = _materialize(orch_dsn, tmp_path, today_utc() - timedelta(days=2))
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "archive window" in failure


def test_freshness_policy_is_declared_on_the_archives():
    spec = next(iter(event_archives.specs))
    assert spec.freshness_policy == ARCHIVE_FRESHNESS
    assert ARCHIVE_FRESHNESS.fail_window.to_timedelta() == timedelta(hours=50)


def test_sensor_requests_waiting_days_and_the_schedule_the_newest(orch_dsn, tmp_path):
    days = [old_day(40), old_day(42)]
    with connection(orch_dsn) as conn:
        for day in days:
            seed_events(conn, day, 3)
    resources = _resources(orch_dsn, tmp_path, purge=False)
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(instance=instance, resources=resources) as ctx,
    ):
        result = retention_sensor(ctx)
    requested = sorted(r.partition_key for r in result.run_requests)
    assert requested == sorted(d.isoformat() for d in days)
    tick = datetime.now(UTC)
    with dg.build_schedule_context(scheduled_execution_time=tick, resources=resources) as ctx:
        schedule = nightly_retention(ctx)
    assert schedule.partition_key == (tick.date() - timedelta(days=31)).isoformat()


def test_archives_without_a_partition_take_every_due_day(orch_dsn, tmp_path):
    """event_archives on its own in a run without a partition (the implicit asset job) archives every
    due day. (event_purge needs a partitioned run: Dagster reads its partitioned input's version.)"""
    days = [old_day(40), old_day(50)]
    with connection(orch_dsn) as conn:
        for day in days:
            seed_events(conn, day, 4)
    result = dg.materialize(
        [event_archives, archive_verified],
        resources=_resources(orch_dsn, tmp_path, purge=False),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    counts = result.asset_materializations_for_node("event_archives")[0].metadata["outcome_counts"].value
    assert counts == {"verified": 2}
    assert all(e.passed for e in result.get_asset_check_evaluations())
