"""The retention cycle on native daily partitions: archive, verify, purge only when enabled."""

import json
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.retention import manifests
from orchestration_pipeline.lib.retention.archive import CONTENT_KEY, METADATA_KEY
from orchestration_pipeline.lib.retention.partitions import ensure_partitions
from orchestration_pipeline.lib.retention.restore import read_archive
from orchestration_pipeline.lib.retention.run import RetentionPolicy, run_retention, today_utc
from orchestration_pipeline_tests.retention._support import (
    WHO,
    midnight,
    old_day,
    partition_exists,
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


def test_dry_run_writes_nothing_and_says_what_it_would_do(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 120)
    report = run_retention(conn, policy(tmp_path), WHO, dry_run=True)
    [entry] = [d for d in report.days if d.table == "events"]
    assert entry.outcome == "would_archive" and "120 rows" in entry.steps[0]
    assert statuses(conn, "events", day) == []
    assert not (tmp_path / "archive").exists()


def test_purge_off_archives_and_verifies_but_keeps_the_partition(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 300)
    seed_metrics(conn, day, 40)
    report = run_retention(conn, policy(tmp_path), WHO)
    outcomes = {(d.table, d.outcome) for d in report.days}
    assert outcomes == {("events", "would_purge"), ("metrics", "would_purge")}
    assert partition_exists(conn, f"events_p{day:%Y%m%d}") and partition_exists(
        conn, f"metrics_p{day:%Y%m%d}"
    )
    manifest = manifests.live(conn, "events", day)
    assert manifest.status == "verified" and manifest.row_count == 300
    # per landing file, as ingestion's accounting counts them (rows without a source file are left out)
    counts = manifest.source_file_counts
    assert set(counts) == {f"/landing/file-{i}.jsonl" for i in range(3)}
    live = conn.execute(
        "SELECT count(*) FROM events WHERE source_file = '/landing/file-0.jsonl' AND occurred_at >= %s",
        (manifest.range_start,),
    ).fetchone()[0]
    assert counts["/landing/file-0.jsonl"] == live
    assert manifests.live(conn, "metrics", day).source_file_counts is None


def test_archive_file_is_typed_and_describes_itself(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 50)
    run_retention(conn, policy(tmp_path), WHO)
    path = tmp_path / "archive" / "events" / f"{day:%Y-%m-%d}.parquet"
    table = pq.read_table(path)
    assert table.schema.field("occurred_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("event_id").type == pa.string()
    assert table.schema.field("payload").type == pa.string()
    assert table.schema.field("ingest_xid").type == pa.uint64()
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    described = json.loads(table.schema.metadata[METADATA_KEY])
    assert described["table"] == "events" and described["day"] == day.isoformat()
    content = json.loads(pq.read_metadata(path).metadata[CONTENT_KEY])
    manifest = manifests.live(conn, "events", day)
    assert (content["row_count"], content["content_hash"]) == (50, manifest.content_hash)
    payload = json.loads(table.column("payload")[0].as_py())
    assert "quoted" in payload["rationale"] and "\n" in payload["rationale"]


def test_purge_on_drops_the_verified_day_with_an_audit_entry(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 250)
    keep = old_day(10)  # inside the window: never touched
    seed_events(conn, keep, 10)
    before = conn.execute(
        "SELECT * FROM events WHERE occurred_at::date = %s ORDER BY event_id", (day,)
    ).fetchall()
    conn.rollback()
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    [entry] = [d for d in report.days if d.table == "events"]
    assert entry.outcome == "purged", entry
    assert not partition_exists(conn, f"events_p{day:%Y%m%d}")
    assert partition_exists(conn, f"events_p{keep:%Y%m%d}")
    assert statuses(conn, "events", day) == ["purged"]
    audit = conn.execute(
        "SELECT actor, request_id, entity_id, before_data->>'rows' FROM audit_ledger WHERE operation = 'purge'"
    ).fetchall()
    assert audit == [(WHO.actor, WHO.request_id, f"events/events_p{day:%Y%m%d}", "250")]
    # nothing lost: the archive holds exactly the rows that were dropped
    frame = read_archive(conn, "events", day)
    assert len(frame) == 250
    assert sorted(str(u) for u in frame["event_id"]) == sorted(str(r[0]) for r in before)
    assert str(frame["occurred_at"].dtype) == "datetime64[us, UTC]"


def test_a_second_run_changes_nothing(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 30)
    run_retention(conn, policy(tmp_path, purge=True), WHO)
    again = run_retention(conn, policy(tmp_path, purge=True), WHO)
    assert [d for d in again.days if d.table == "events"] == []  # the purged day has no partition left
    assert statuses(conn, "events", day) == ["purged"]


def test_days_inside_the_window_are_refused_by_name(conn, tmp_path):
    with pytest.raises(ValueError, match="archive window"):
        run_retention(conn, policy(tmp_path), WHO, days=[today_utc()])


def test_rows_waiting_in_the_default_partition_get_their_day(conn, tmp_path):
    day = old_day(50)
    seed_events(conn, day, 20, partition=False)  # e.g. they arrived after their day was purged
    assert conn.execute("SELECT count(*) FROM events_default").fetchone()[0] == 20
    conn.rollback()
    report = run_retention(conn, policy(tmp_path), WHO)
    assert any("moved out of the default partition" in n for n in report.notes)
    assert conn.execute("SELECT count(*) FROM events_default").fetchone()[0] == 0
    assert [d.outcome for d in report.days if d.table == "events"] == ["would_purge"]


def test_a_late_archive_of_a_purged_day_gets_a_new_file(conn, tmp_path):
    """Rows of a purged day that arrive later are archived as part 2: the purged file is never overwritten."""
    day = old_day()
    seed_events(conn, day, 40)
    run_retention(conn, policy(tmp_path, purge=True), WHO)
    first = tmp_path / "archive" / "events" / f"{day:%Y-%m-%d}.parquet"
    first_bytes = first.read_bytes()
    seed_events(conn, day, 5, partition=False)  # land in the default partition
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    assert [d.outcome for d in report.days if d.table == "events"] == ["purged"]
    assert first.read_bytes() == first_bytes
    assert (tmp_path / "archive" / "events" / f"{day:%Y-%m-%d}.2.parquet").exists()
    assert len(read_archive(conn, "events", day)) == 45


def test_an_empty_day_is_archived_and_purged_too(conn, tmp_path):
    day = old_day(45)
    ensure_partitions(conn, "events", day, day)  # created ahead, never written to
    conn.commit()
    report = run_retention(conn, policy(tmp_path, purge=True), WHO, days=[day])
    assert [(d.outcome, d.rows) for d in report.days if d.table == "events"] == [("purged", 0)]
    assert len(read_archive(conn, "events", day)) == 0


def test_archives_go_to_any_uri_pyarrow_opens(conn, tmp_path):
    day = old_day()
    seed_events(conn, day, 15)
    root = (tmp_path / "elsewhere").as_uri()  # file:///…
    report = run_retention(conn, RetentionPolicy(archive_root=root, purge=True), WHO)
    [entry] = [d for d in report.days if d.table == "events"]
    assert entry.outcome == "purged"
    manifest = manifests.for_day(conn, "events", day)[0]
    assert manifest.file_uri == f"{root}/events/{day:%Y-%m-%d}.parquet"
    assert (tmp_path / "elsewhere" / "events" / f"{day:%Y-%m-%d}.parquet").exists()
    assert len(read_archive(conn, "events", day)) == 15


def test_ingested_rows_of_a_purged_day_still_count_as_accounted_for(conn, tmp_path):
    from orchestration_pipeline.lib.ingestion.checks import events_accounted_for
    from orchestration_pipeline.lib.ingestion.ingest import Ingestor
    from orchestration_pipeline_tests.conftest import make_event, write_jsonl

    day = old_day()
    noon = midnight(day) + timedelta(hours=12)
    events = [
        make_event("task_start", occurred_at=(noon + timedelta(seconds=i)).isoformat()) for i in range(30)
    ]
    Ingestor(conn).ingest_paths([write_jsonl(tmp_path / "landing" / "old.jsonl", events)])
    assert {e["occurred_at"][:10] for e in events} == {day.isoformat()}
    assert events_accounted_for(conn).passed
    report = run_retention(conn, policy(tmp_path, purge=True), WHO)
    assert [d.outcome for d in report.days if d.table == "events"] == ["purged"]
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    conn.rollback()
    verdict = events_accounted_for(conn)
    assert verdict.passed, verdict.description
