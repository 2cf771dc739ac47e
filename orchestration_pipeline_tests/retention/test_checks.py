"""Each retention check passes on a healthy state and fails on the state it exists to catch."""

import pytest
from psycopg import errors

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.retention import checks
from orchestration_pipeline.lib.retention.run import run_retention, today_utc
from orchestration_pipeline_tests.retention._support import WHO, old_day, policy, seed_events

pytestmark = pytest.mark.db


@pytest.fixture
def conn(orch_dsn):
    with connection(orch_dsn) as conn:
        yield conn


def _due(tmp_path):
    return policy(tmp_path).due_before(today_utc())


def test_archive_verified_passes_then_fails_on_a_failed_verification(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 20)
    run_retention(conn, policy(tmp_path), WHO)
    assert checks.archive_verified(conn, due_before=_due(tmp_path), days=[day]).passed
    (tmp_path / "archive" / "events" / f"{day:%Y-%m-%d}.parquet").unlink()
    conn.execute(
        "UPDATE archive_manifests SET status = 'failed', error = 'file missing' WHERE table_name = 'events'"
    )
    conn.commit()
    verdict = checks.archive_verified(conn, due_before=_due(tmp_path), days=[day])
    assert not verdict.passed and not verdict.warn_only
    assert verdict.metadata["samples"][0]["status"] == "failed"


def test_archive_verified_fails_for_a_requested_day_never_archived(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 5)
    verdict = checks.archive_verified(conn, due_before=_due(tmp_path), days=[day])
    assert not verdict.passed
    assert {"table": "events", "day": day.isoformat(), "status": "not archived"} in verdict.metadata[
        "samples"
    ]


def test_nothing_purged_unarchived_catches_a_partition_dropped_by_hand(conn, tmp_path):
    kept, dropped = old_day(40), old_day(41)
    seed_events(conn, kept, 5)
    seed_events(conn, dropped, 5)
    run_retention(conn, policy(tmp_path, purge=True), WHO, days=[kept])  # purged the verified way
    assert checks.nothing_purged_unarchived(conn).passed  # and it has seen `dropped`
    name = f"events_p{dropped:%Y%m%d}"
    conn.execute(f"ALTER TABLE events DETACH PARTITION {name}")
    conn.execute(f"DROP TABLE {name}")
    conn.commit()
    verdict = checks.nothing_purged_unarchived(conn)
    assert not verdict.passed
    assert verdict.metadata["samples"] == [
        {
            "table": "events",
            "partition": name,
            "day": dropped.isoformat(),
            "problem": "dropped without a verified archive",
        }
    ]


def test_nothing_purged_unarchived_catches_a_lost_archive_file(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 5)
    run_retention(conn, policy(tmp_path, purge=True), WHO)
    assert checks.nothing_purged_unarchived(conn).passed
    (tmp_path / "archive" / "events" / f"{day:%Y-%m-%d}.parquet").unlink()
    verdict = checks.nothing_purged_unarchived(conn)
    assert not verdict.passed and verdict.metadata["samples"][0]["problem"] == "purged archive file missing"


def test_retention_policy_active_warns_about_unarchived_old_days(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 5)
    verdict = checks.retention_policy_active(conn, due_before=_due(tmp_path), purge_enabled=False)
    assert not verdict.passed and verdict.warn_only
    assert verdict.metadata["unarchived_samples"] == [f"events {day}"]
    run_retention(conn, policy(tmp_path), WHO)
    assert checks.retention_policy_active(conn, due_before=_due(tmp_path), purge_enabled=False).passed
    # with the purge on, a verified day that stays well past its window is reported too
    lingering = checks.retention_policy_active(conn, due_before=_due(tmp_path), purge_enabled=True)
    assert not lingering.passed and lingering.metadata["verified_not_purged"] == 1


def test_default_partition_empty_warns_about_stray_rows(conn):
    assert checks.default_partition_empty(conn).passed
    seed_events(conn, old_day(60), 3, partition=False)
    verdict = checks.default_partition_empty(conn)
    assert not verdict.passed and verdict.warn_only and verdict.metadata["rows"]["events"] == 3


def test_manifests_refuse_deletion_rewrites_and_backward_moves(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 5)
    run_retention(conn, policy(tmp_path, purge=True), WHO)
    for statement, error in (
        ("DELETE FROM archive_manifests", errors.InsufficientPrivilege),
        ("TRUNCATE archive_manifests CASCADE", errors.InsufficientPrivilege),
        ("UPDATE archive_manifests SET row_count = row_count + 1", errors.InsufficientPrivilege),
        ("UPDATE archive_manifests SET status = 'verified'", errors.CheckViolation),
    ):
        with pytest.raises(error):
            conn.execute(statement)
        conn.rollback()
    conn.execute("UPDATE archive_manifests SET status = 'restored'")  # purged -> restored is allowed
    conn.rollback()
