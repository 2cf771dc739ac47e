"""Forensics: an archived day read back, restored into a new table, or into the live table."""

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.retention.restore import read_archive, read_archive_file, restore_day
from orchestration_pipeline.lib.retention.run import run_retention
from orchestration_pipeline.lib.retention.verify import ArchiveProblem, verify
from orchestration_pipeline_tests.retention._support import (
    WHO,
    old_day,
    policy,
    seed_events,
    seed_metrics,
    statuses,
)

pytestmark = pytest.mark.db


@pytest.fixture
def conn(orch_dsn):
    with connection(orch_dsn) as conn:
        yield conn


def _rows(conn, query, *params):
    rows = conn.execute(query, params).fetchall()
    conn.rollback()
    return rows


EVENTS_OF_DAY = (
    "SELECT * FROM {} WHERE occurred_at >= %s AND occurred_at < %s + interval '1 day' ORDER BY event_id"
)


def test_restore_into_a_new_table_equals_the_purged_rows(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 150)
    original = _rows(conn, EVENTS_OF_DAY.format("events"), day, day)
    run_retention(conn, policy(tmp_path, purge=True), WHO)
    restored = restore_day(conn, "events", day, actor=WHO.actor, request_id=WHO.request_id)
    assert restored.into == f"events_restored_{day:%Y%m%d}" and restored.rows == 150 and not restored.live
    assert _rows(conn, EVENTS_OF_DAY.format(restored.into), day, day) == original
    with pytest.raises(ValueError, match="already exists"):
        restore_day(conn, "events", day, actor=WHO.actor, request_id=WHO.request_id)


def test_restore_into_the_live_table_then_archive_it_again(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 80)
    original = _rows(conn, EVENTS_OF_DAY.format("events"), day, day)
    run_retention(conn, policy(tmp_path, purge=True), WHO)
    assert _rows(conn, EVENTS_OF_DAY.format("events"), day, day) == []
    restored = restore_day(conn, "events", day, into="events", actor=WHO.actor, request_id=WHO.request_id)
    assert restored.live and restored.rows == 80
    assert _rows(conn, EVENTS_OF_DAY.format("events"), day, day) == original
    assert statuses(conn, "events", day) == ["restored"]
    assert _rows(
        conn, "SELECT count(*) FROM audit_ledger WHERE operation = 'replay' AND source = 'retention'"
    ) == [(1,)]
    # the next run archives the restored day afresh (part 2) and purges it again
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    assert [d.outcome for d in report.days if d.table == "events"] == ["purged"]
    assert statuses(conn, "events", day) == ["restored", "purged"]
    assert len(read_archive(conn, "events", day)) == 80  # the restored part is not counted twice


def test_live_restore_is_refused_while_the_day_holds_rows(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 10)
    run_retention(conn, policy(tmp_path, purge=True), WHO)
    seed_events(conn, day, 2)  # the day has live rows again
    with pytest.raises(ValueError, match="still holds 2 rows"):
        restore_day(conn, "events", day, into="events", actor=WHO.actor, request_id=WHO.request_id)
    assert statuses(conn, "events", day) == ["purged"]


def test_metrics_restore_keeps_the_identity_values(conn, tmp_path):
    day = old_day()
    seed_metrics(conn, day, 25)
    ids = _rows(conn, "SELECT metric_id FROM metrics WHERE recorded_at::date = %s ORDER BY 1", day)
    run_retention(conn, policy(tmp_path, purge=True), WHO)
    restore_day(conn, "metrics", day, into="metrics", actor=WHO.actor, request_id=WHO.request_id)
    assert _rows(conn, "SELECT metric_id FROM metrics WHERE recorded_at::date = %s ORDER BY 1", day) == ids


def test_a_tampered_archive_is_never_read_or_restored(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 20)
    run_retention(conn, policy(tmp_path, purge=True), WHO)
    path = tmp_path / "archive" / "events" / f"{day:%Y-%m-%d}.parquet"
    assert len(read_archive_file(str(path))) == 20  # the file alone, unchecked, for a notebook
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveProblem, match="changed"):
        read_archive(conn, "events", day)
    with pytest.raises(ArchiveProblem):
        restore_day(conn, "events", day, into="events", actor=WHO.actor, request_id=WHO.request_id)
    assert statuses(conn, "events", day) == ["purged"]


def test_a_day_without_archive_says_how_to_find_one(conn):
    with pytest.raises(LookupError, match="archive list"):
        read_archive(conn, "events", old_day())


def test_a_purged_archive_can_be_checked_on_demand(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 12)
    run_retention(conn, policy(tmp_path, purge=True), WHO)
    manifest_id = conn.execute("SELECT manifest_id FROM archive_manifests").fetchone()[0]
    conn.rollback()
    assert verify(conn, manifest_id).ok
    (tmp_path / "archive" / "events" / f"{day:%Y-%m-%d}.parquet").unlink()
    result = verify(conn, manifest_id)
    assert not result.ok and "missing" in result.reason
    assert statuses(conn, "events", day) == ["purged"]  # what happened to the rows does not change
