import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from orchestration_pipeline.lib.activity import ActivityFilter, activity_stats, query_activity
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.checks import events_accounted_for
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline.lib.ingestion.quarantine import list_quarantine, replay_quarantine
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db
WHO = {"actor": "test:replayer", "request_id": "req-replay"}


def ingest(conn, *paths, **kwargs):
    return Ingestor(conn, **kwargs).ingest_paths(paths).as_dict()


def count(conn, sql, *params):
    value = conn.execute(sql, params).fetchone()[0]
    conn.rollback()
    return value


def test_valid_file_lands_with_artifacts_and_metrics(orch_conn, tmp_path):
    events = [
        make_event("task_start", task_id="t1"),
        make_event("metric", payload={"name": "rows", "value": 5, "tags": {"table": "x"}}),
        make_event("artifact_emit"),
        make_event("task_end", task_id="t1"),
    ]
    summary = ingest(orch_conn, write_jsonl(tmp_path / "a.jsonl", events))
    assert (summary["lines"], summary["accepted"], summary["balanced"]) == (4, 4, True)
    assert count(orch_conn, "SELECT count(*) FROM events") == 4
    assert count(orch_conn, "SELECT count(*) FROM artifacts") == 1
    assert count(orch_conn, "SELECT value FROM metrics WHERE name = 'rows'") == 5
    assert count(orch_conn, "SELECT duration_ms FROM events WHERE event_type = 'task_end'") == 10
    assert count(orch_conn, "SELECT source_line FROM events WHERE event_type = 'task_end'") == 4


def test_redropped_and_renamed_files_never_insert_twice(orch_conn, tmp_path):
    path = write_jsonl(tmp_path / "landing" / "a.jsonl", [make_event() for _ in range(50)])
    first = ingest(orch_conn, path)
    again = ingest(orch_conn, path)
    renamed = tmp_path / "landing" / "renamed.jsonl"
    shutil.copy(path, renamed)
    third = ingest(orch_conn, tmp_path / "landing")
    assert first["accepted"] == 50
    assert (again["skipped_files"], again["lines"], again["accepted"]) == (1, 0, 0)
    assert (third["files"], third["skipped_files"], third["accepted"]) == (2, 2, 0)
    assert count(orch_conn, "SELECT count(*) FROM events") == 50
    assert count(orch_conn, "SELECT count(*) FROM ingest_files") == 1


def test_lines_resent_in_another_file_are_duplicates(orch_conn, tmp_path):
    shared = [make_event() for _ in range(10)]
    no_id = {k: v for k, v in make_event().items() if k != "event_id"}
    ingest(orch_conn, write_jsonl(tmp_path / "a.jsonl", [*shared, no_id]))
    summary = ingest(orch_conn, write_jsonl(tmp_path / "b.jsonl", [*shared, no_id, make_event(), shared[0]]))
    assert (summary["lines"], summary["accepted"], summary["duplicates"]) == (13, 1, 12)
    assert summary["balanced"]
    assert count(orch_conn, "SELECT count(*) FROM events") == 12


def test_error_flood_collapses_into_one_group_and_one_event(orch_conn, tmp_path):
    base = datetime.now(UTC) - timedelta(hours=1)
    flood = [
        make_event(
            "error",
            stage="db_insert",
            occurred_at=(base + timedelta(milliseconds=i)).isoformat(),
            payload={"message": f'ERROR: duplicate key value violates unique constraint "pk" (id={i})'},
        )
        for i in range(10_000)
    ]
    other = make_event("error", stage="api", payload={"message": "timeout after 30 s"})
    summary = ingest(orch_conn, write_jsonl(tmp_path / "flood.jsonl", [*flood, other]), batch_rows=3000)
    assert (summary["lines"], summary["accepted"], summary["collapsed"], summary["duplicates"]) == (
        10_001,
        2,
        9_999,
        0,
    )
    groups = orch_conn.execute(
        "SELECT stage, count, cardinality(sample_event_ids), first_seen < last_seen "
        "FROM error_groups ORDER BY stage"
    ).fetchall()
    assert groups == [("api", 1, 1, False), ("db_insert", 10_000, 5, True)]
    events = orch_conn.execute(
        "SELECT stage, (payload->>'count')::int FROM events WHERE event_type = 'error' ORDER BY stage"
    ).fetchall()
    assert events == [("api", 1), ("db_insert", 10_000)]

    # A second run with more of the same error: the group grows, and the new run gets its own event.
    more = [
        make_event(
            "error",
            stage="db_insert",
            payload={"message": 'ERROR: duplicate key value violates unique constraint "pk" (id=77777)'},
        )
        for _ in range(3)
    ]
    again = ingest(orch_conn, write_jsonl(tmp_path / "more.jsonl", [*more, flood[0]]))
    assert (again["accepted"], again["collapsed"], again["duplicates"]) == (1, 2, 1)  # flood[0] was re-sent
    assert count(orch_conn, "SELECT count FROM error_groups WHERE stage = 'db_insert'") == 10_003
    runs = orch_conn.execute(
        "SELECT (payload->>'count')::int FROM events WHERE stage = 'db_insert' ORDER BY 1"
    ).fetchall()
    assert runs == [(3,), (10_000,)]


def test_one_event_per_group_per_run_across_files(orch_conn, tmp_path):
    files = [
        write_jsonl(
            tmp_path / f"{i}.jsonl", [make_event("error", payload={"message": "disk full"}) for _ in range(4)]
        )
        for i in range(3)
    ]
    summary = ingest(orch_conn, *files)
    assert (summary["accepted"], summary["collapsed"]) == (1, 11)
    assert count(orch_conn, "SELECT (payload->>'count')::int FROM events WHERE event_type = 'error'") == 12


def test_bad_lines_are_quarantined_with_location_and_never_lost(orch_conn, tmp_path):
    lines = [
        make_event(),
        "{broken",
        b"\xff\xfe",
        json.dumps(make_event("nope")),
        json.dumps(make_event("task_end", payload={"success": True})),
        "",
        "   ",
        json.dumps(make_event(occurred_at=(datetime.now(UTC) + timedelta(days=3)).isoformat())),
    ]
    summary = ingest(orch_conn, write_jsonl(tmp_path / "bad.jsonl", lines))
    assert (summary["lines"], summary["accepted"], summary["quarantined"]) == (6, 1, 5)
    assert summary["quarantine_by_type"] == {
        "future_timestamp": 1,
        "invalid_utf8": 1,
        "malformed_json": 1,
        "missing_field": 1,
        "unknown_event_type": 1,
    }
    rows = list_quarantine(orch_conn, limit=10)
    by_type = {r["failure_type"]: r for r in rows}
    assert by_type["malformed_json"]["source_line"] == 2
    assert by_type["missing_field"]["json_pointer"] == "/payload/duration_ms"
    assert by_type["invalid_utf8"]["raw_preview"] == "\\xff\\xfe"
    assert by_type["future_timestamp"]["source_line"] == 8
    assert all(r["source_file"].endswith("bad.jsonl") for r in rows)


def test_a_second_version_of_a_stored_event_is_quarantined_not_dropped(orch_conn, tmp_path):
    first = make_event("task_start", task_id="T-1", status="started")
    metric = make_event("metric", payload={"name": "rows", "value": 1})
    ingest(orch_conn, write_jsonl(tmp_path / "a.jsonl", [first, metric]))
    edited = {**first, "task_id": "T-2"}  # same event_id and occurred_at, other content
    edited_metric = {**metric, "payload": {"name": "rows", "value": 2}}
    summary = ingest(orch_conn, write_jsonl(tmp_path / "b.jsonl", [first, edited, edited_metric]))
    assert (summary["lines"], summary["duplicates"], summary["quarantined"]) == (3, 1, 2)
    assert summary["balanced"] and summary["quarantine_by_type"] == {"conflicting_duplicate": 2}
    # the stored versions are kept, nothing was added twice
    assert orch_conn.execute(
        "SELECT task_id FROM events WHERE event_id = %s", (first["event_id"],)
    ).fetchall() == [("T-1",)]
    assert count(orch_conn, "SELECT count(*) FROM metrics WHERE event_id = %s", metric["event_id"]) == 1
    rows = sorted(list_quarantine(orch_conn), key=lambda r: r["source_line"])
    assert [(r["failure_type"], r["source_line"], r["json_pointer"]) for r in rows] == [
        ("conflicting_duplicate", 2, "/event_id"),
        ("conflicting_duplicate", 3, "/event_id"),
    ]
    assert "different task_id" in rows[0]["detail"] and "a.jsonl line 1" in rows[0]["detail"]
    assert "different payload" in rows[1]["detail"]
    kept = orch_conn.execute(
        "SELECT raw_line FROM quarantine WHERE quarantine_id = %s", (rows[0]["quarantine_id"],)
    ).fetchone()[0]
    assert json.loads(kept)["task_id"] == "T-2"  # the second version is kept, as JSON
    # a replay cannot make it fit: it stays quarantined, with the reason
    result = replay_quarantine(orch_conn, **WHO).as_dict()
    assert (result["examined"], result["still_failing"], result["accepted"]) == (2, 2, 0)
    assert count(orch_conn, "SELECT count(*) FROM quarantine") == 2


def test_a_repeat_within_one_batch_with_other_content_is_a_conflict_too(orch_conn, tmp_path):
    event = make_event("decision", payload={"rationale": "first"})
    other = {**event, "payload": {"rationale": "second"}}
    summary = ingest(orch_conn, write_jsonl(tmp_path / "a.jsonl", [event, event, other]))
    assert (summary["accepted"], summary["duplicates"], summary["quarantined"]) == (1, 1, 1)
    stored = orch_conn.execute("SELECT payload->>'rationale' FROM events").fetchall()
    assert stored == [("first",)]


def test_an_error_reusing_a_stored_events_id_is_quarantined_not_folded_into_it(orch_conn, tmp_path):
    start = make_event("task_start", task_id="T-1", payload={"note": "original"})
    ingest(orch_conn, write_jsonl(tmp_path / "a.jsonl", [start]))
    reused = make_event("error", event_id=start["event_id"], occurred_at=start["occurred_at"],
                        payload={"message": "quota hit 1"})  # fmt: skip
    same_group = make_event("error", payload={"message": "quota hit 2"})
    summary = ingest(orch_conn, write_jsonl(tmp_path / "b.jsonl", [reused, same_group]))
    assert summary["balanced"] and (summary["accepted"], summary["quarantined"]) == (1, 1)
    assert summary["quarantine_by_type"] == {"conflicting_duplicate": 1}
    # the task_start is untouched, and the group got its own event, counting only its own line
    payload = orch_conn.execute("SELECT payload FROM events WHERE event_id = %s", (start["event_id"],))
    assert payload.fetchall() == [({"note": "original"},)]
    assert count(orch_conn, "SELECT count FROM error_groups") == 1
    assert count(orch_conn, "SELECT payload->>'count' FROM events WHERE event_type = 'error'") == "1"
    (row,) = list_quarantine(orch_conn)
    assert "event_type (task_start, not error)" in row["detail"] and "a.jsonl line 1" in row["detail"]


def test_an_error_id_sent_again_with_another_message_is_a_conflict(orch_conn, tmp_path):
    first = make_event("error", payload={"message": "boom A"})
    other = {**first, "payload": {"message": "totally different thing"}}
    summary = ingest(orch_conn, write_jsonl(tmp_path / "a.jsonl", [first, first, other]))
    assert (summary["accepted"], summary["duplicates"], summary["quarantined"]) == (1, 1, 1)
    # in a later file: the same error again is a duplicate, another message under its id a conflict
    later = {**first, "payload": {"message": "yet another thing"}}
    summary = ingest(orch_conn, write_jsonl(tmp_path / "b.jsonl", [first, later]))
    assert (summary["lines"], summary["duplicates"], summary["quarantined"]) == (2, 1, 1)
    assert summary["balanced"]
    details = [r["detail"] for r in sorted(list_quarantine(orch_conn), key=lambda r: r["quarantine_id"])]
    assert all("another error group" in d for d in details) and len(details) == 2
    assert count(orch_conn, "SELECT count(*) FROM events") == 1
    assert count(orch_conn, "SELECT sum(count) FROM error_groups") == 1
    # a replay cannot make them fit either
    result = replay_quarantine(orch_conn, **WHO).as_dict()
    assert (result["still_failing"], result["accepted"], result["collapsed"]) == (2, 0, 0)
    # the stored error again, after a conflicting line with its id: still a duplicate, in any batch
    for n, batch_rows in enumerate((10_000, 1)):
        again = write_jsonl(
            tmp_path / f"c{n}.jsonl", [{**first, "payload": {"message": f"other {n}"}}, first]
        )
        summary = ingest(orch_conn, again, batch_rows=batch_rows)
        assert (summary["duplicates"], summary["quarantined"], summary["balanced"]) == (1, 1, True)


def test_one_event_id_at_two_times_is_one_event_and_a_conflict_naming_occurred_at(orch_conn, tmp_path):
    # a producer's retry that re-stamps occurred_at but keeps the event_id (its idempotency key)
    first = make_event("artifact_emit", minutes_ago=10)
    later = {
        **first,
        "occurred_at": (datetime.fromisoformat(first["occurred_at"]) + timedelta(seconds=5)).isoformat(),
    }
    summary = ingest(orch_conn, write_jsonl(tmp_path / "a.jsonl", [make_event(), first, later]))
    assert (summary["accepted"], summary["quarantined"], summary["balanced"]) == (2, 1, True)
    assert count(orch_conn, "SELECT count(*) FROM artifacts WHERE event_id = %s", first["event_id"]) == 1
    assert count(orch_conn, "SELECT count(*) FROM events WHERE event_id = %s", first["event_id"]) == 1
    detail = orch_conn.execute(
        "SELECT detail FROM quarantine WHERE failure_type = 'conflicting_duplicate'"
    ).fetchone()[0]
    assert "different occurred_at" in detail
    # in a later file too, and whatever else the line says
    again = {
        **later,
        "occurred_at": (datetime.fromisoformat(first["occurred_at"]) + timedelta(minutes=1)).isoformat(),
    }
    summary = ingest(orch_conn, write_jsonl(tmp_path / "b.jsonl", [again, first]))
    assert (summary["duplicates"], summary["quarantined"]) == (1, 1)


def test_a_replayed_line_without_an_id_keeps_the_id_its_original_content_gave(orch_conn, tmp_path):
    # no event_id and a secret: the stored raw line is redacted, so an id derived from it at
    # replay would differ from the one the original line gets
    when = datetime.now(UTC) + timedelta(days=2)
    line = {k: v for k, v in make_event(occurred_at=when.isoformat()).items() if k != "event_id"}
    line["payload"] = {"rationale": "rotate password=hunter2x"}
    ingest(orch_conn, write_jsonl(tmp_path / "early.jsonl", [line]))  # the producer's clock was ahead
    later = datetime.now(UTC) + timedelta(days=2)
    resent = write_jsonl(tmp_path / "resent.jsonl", [line, make_event()])  # the line, in another file
    assert ingest(orch_conn, resent, now=lambda: later)["accepted"] == 2
    result = replay_quarantine(orch_conn, **WHO, now=later).as_dict()
    assert (result["duplicates"], result["accepted"]) == (1, 0)
    assert count(orch_conn, "SELECT count(*) FROM events") == 2
    stored = orch_conn.execute("SELECT payload FROM events WHERE payload ? 'rationale'").fetchall()
    assert len(stored) == 2 and "hunter2x" not in json.dumps(stored)


def test_replay_after_a_fix(orch_conn, tmp_path):
    future = make_event(occurred_at=(datetime.now(UTC) + timedelta(days=2)).isoformat())
    ingest(orch_conn, write_jsonl(tmp_path / "f.jsonl", [future, "{still broken"]))
    assert replay_quarantine(orch_conn, **WHO).as_dict()["still_failing"] == 2  # nothing fixed yet
    # The producer's clock was wrong; two days later the same line is valid.
    result = replay_quarantine(orch_conn, **WHO, now=datetime.now(UTC) + timedelta(days=2)).as_dict()
    assert (result["accepted"], result["still_failing"]) == (1, 1)
    assert count(orch_conn, "SELECT count(*) FROM events WHERE event_id = %s", future["event_id"]) == 1
    replayed = orch_conn.execute(
        "SELECT replay_outcome, replay_attempts FROM quarantine WHERE replayed_at IS NOT NULL"
    ).fetchall()
    assert replayed == [("accepted", 2)]
    pending = list_quarantine(orch_conn)
    assert [r["replay_attempts"] for r in pending] == [2]
    # Replaying again touches only what is still pending and never inserts twice.
    again = replay_quarantine(orch_conn, **WHO, now=datetime.now(UTC) + timedelta(days=2)).as_dict()
    assert (again["examined"], again["accepted"]) == (1, 0)
    assert count(orch_conn, "SELECT count(*) FROM events") == 1


def test_replay_writes_derived_rows_like_ingestion(orch_conn, tmp_path):
    """A replayed metric and artifact land in metrics and artifacts, as they would have at ingestion."""
    ahead = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    metric = make_event(
        "metric", occurred_at=ahead, payload={"name": "late_metric", "value": 7, "tags": {"k": "v"}}
    )
    artifact = make_event("artifact_emit", occurred_at=ahead)
    ingest(orch_conn, write_jsonl(tmp_path / "late.jsonl", [metric, artifact]))
    result = replay_quarantine(orch_conn, **WHO, now=datetime.now(UTC) + timedelta(days=2)).as_dict()
    assert result["accepted"] == 2
    assert orch_conn.execute("SELECT value, tags FROM metrics WHERE name = 'late_metric'").fetchall() == [
        (7.0, {"k": "v"})
    ]
    assert count(orch_conn, "SELECT count(*) FROM artifacts WHERE event_id = %s", artifact["event_id"]) == 1


def test_secrets_never_reach_storage(orch_conn, tmp_path):
    secret_event = make_event(
        payload={
            "rationale": "connect postgresql://svc:hunter2@db/app",
            "config": {"api_key": "hunter2", "nested": [{"password": "hunter2"}]},
        }
    )
    broken = '{"event_type": "decision", "token": "hunter2", "auth": "Bearer hunter2hunter2"'
    summary = ingest(orch_conn, write_jsonl(tmp_path / "s.jsonl", [secret_event, broken]))
    assert summary["redactions"] == 5
    assert count(orch_conn, "SELECT count(*) FROM events WHERE payload::text LIKE '%%hunter2%%'") == 0
    assert count(orch_conn, "SELECT count(*) FROM quarantine WHERE raw_line LIKE '%%hunter2%%'") == 0
    assert count(orch_conn, "SELECT count(*) FROM events WHERE payload::text LIKE '%%[REDACTED]%%'") == 1


def test_telemetry_is_written_to_metrics(orch_conn, tmp_path):
    ingest(orch_conn, write_jsonl(tmp_path / "a.jsonl", [make_event(), make_event()]))
    names = {r[0] for r in orch_conn.execute("SELECT DISTINCT name FROM metrics")}
    assert {"ParseDuration", "RowsWritten", "SkippedDuplicate", "DatabaseWriteLatency"} <= names
    assert count(orch_conn, "SELECT value FROM metrics WHERE name = 'RowsWritten'") == 2
    assert count(orch_conn, "SELECT count(*) FROM ingest_runs") == 1


def test_activity_queries(orch_conn, tmp_path):
    agent = {"agent_type": "coder", "agent_name": "a1", "task_description": "t", "project_id": "p1"}
    events = [
        make_event("agent.started", payload=agent, status="started", severity="info", minutes_ago=30),
        make_event("agent.completed", payload=agent, status="completed", severity="success", minutes_ago=20),
        make_event("agent.error", payload=agent, status="failed", severity="error", minutes_ago=10),
        make_event(
            "agent.completed",
            payload={**agent, "agent_type": "reviewer", "agent_name": "r1", "project_id": "p2"},
            severity="success",
            minutes_ago=5,
        ),
    ]
    ingest(orch_conn, write_jsonl(tmp_path / "a.jsonl", events))
    p1 = query_activity(orch_conn, ActivityFilter(project_id="p1"))
    assert [r["event_type"] for r in p1] == ["agent.error", "agent.completed", "agent.started"]
    errors = query_activity(orch_conn, ActivityFilter(agent_type="coder", severity="error"))
    assert len(errors) == 1 and errors[0]["status"] == "failed"
    page = query_activity(orch_conn, ActivityFilter(limit=2, offset=1))
    assert len(page) == 2
    window = query_activity(orch_conn, ActivityFilter(since=datetime.now(UTC) - timedelta(minutes=15)))
    assert len(window) == 2
    stats = activity_stats(orch_conn)
    assert stats["total"] == 4 and stats["by_severity"] == {"info": 1, "success": 2, "error": 1}
    rates = {a["agent_name"]: a["success_rate"] for a in stats["agents"]}
    assert rates == {"a1": 0.5, "r1": 1.0}
    # severity and status filter by the producer's word as stored; a meaning must be one the map has
    assert query_activity(orch_conn, ActivityFilter(severity="loud")) == []
    with pytest.raises(ValueError, match="use one of"):
        ActivityFilter(severity_meaning="loud")
    with pytest.raises(ValueError, match="limit is 64"):
        ActivityFilter(status="x" * 65)


def test_offsets_postgres_refuses_are_stored_as_the_same_instant(orch_conn, tmp_path):
    """RFC 3339 allows offsets up to ±23:59, PostgreSQL only ±15:59: the file must not fail."""
    at = {"+16:00": datetime(2026, 1, 1, 8, tzinfo=UTC), "-23:59": datetime(2026, 1, 2, 23, 59, tzinfo=UTC)}
    texts = {"+16:00": "2026-01-02T00:00:00+16:00", "-23:59": "2026-01-02T00:00:00-23:59"}
    events = [
        make_event(kind, occurred_at=texts[offset], event_id=str(uuid.uuid4()))
        for offset in texts
        for kind in ("decision", "metric", "artifact_emit", "error")
    ]
    summary = ingest(orch_conn, write_jsonl(tmp_path / "tz.jsonl", events))
    assert (summary["lines"], summary["quarantined"], summary["balanced"]) == (8, 0, True)
    stored = orch_conn.execute(
        "SELECT array_agg(DISTINCT occurred_at) FROM events WHERE event_type = 'decision'"
    ).fetchone()[0]
    orch_conn.rollback()
    assert sorted(stored) == sorted(at.values())
    assert count(orch_conn, "SELECT count(*) FROM artifacts WHERE occurred_at = %s", at["+16:00"]) == 1
    assert count(orch_conn, "SELECT count(*) FROM metrics WHERE name = 'm'") == 2


def test_a_resend_that_differs_only_where_redaction_differed_is_a_duplicate(orch_conn, tmp_path):
    """The stored version was redacted by other rules (an older release, or the quarantine path):
    the re-sent line is the same event, not a second version."""
    event = make_event("decision", payload={"rationale": "ran: export PGPASSWORD=hunter2; psql"})
    ingest(orch_conn, write_jsonl(tmp_path / "a.jsonl", [event]))
    # as an older release stored it: the secret inside the text not yet redacted
    with orch_conn.transaction():
        orch_conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
        orch_conn.execute(
            "UPDATE events SET payload = %s::jsonb WHERE event_id = %s",
            (json.dumps({"rationale": "ran: export PGPASSWORD=hunter2; psql"}), event["event_id"]),
        )
        orch_conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
    summary = ingest(orch_conn, write_jsonl(tmp_path / "b.jsonl", [event, make_event()]))
    assert (summary["accepted"], summary["duplicates"], summary["quarantined"]) == (1, 1, 0)


def test_a_partial_last_line_read_in_full_later_leaves_no_stale_quarantine_row(orch_conn, tmp_path):
    """A producer was still writing: its cut-off last line was quarantined. When the grown file is
    ingested, that row is resolved, not left pending for a replay that can never succeed."""
    done, growing = make_event(), make_event(task_id="T-grow")
    path = tmp_path / "live.jsonl"
    whole = json.dumps(growing)
    path.write_text(json.dumps(done) + "\n" + whole[:25])
    first = ingest(orch_conn, path)
    assert (first["accepted"], first["quarantine_by_type"]) == (1, {"malformed_json": 1})
    path.write_text(json.dumps(done) + "\n" + whole + "\n" + json.dumps(make_event()) + "\n")
    second = ingest(orch_conn, path)
    assert (second["accepted"], second["duplicates"], second["superseded_quarantine"]) == (2, 1, 1)
    assert list_quarantine(orch_conn) == []  # nothing pending
    row = orch_conn.execute("SELECT replayed_at IS NOT NULL, last_replay_detail FROM quarantine").fetchone()
    assert row[0] and "superseded" in row[1] and "line 2" in row[1]
    assert count(orch_conn, "SELECT count(*) FROM events WHERE task_id = 'T-grow'") == 1


def test_a_quarantined_line_that_was_complete_is_not_superseded(orch_conn, tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"broken": \n')
    ingest(orch_conn, path)
    path.write_text('{"broken": \n' + json.dumps(make_event()) + "\n")
    second = ingest(orch_conn, path)
    assert (second["superseded_quarantine"], second["duplicates"], second["quarantined"]) == (0, 1, 0)
    # a bad line that had ended: its row stays pending, and reading it again added no second one
    pending = sorted(r["quarantine_id"] for r in list_quarantine(orch_conn))
    assert pending == [1]


def test_a_growing_file_quarantines_each_bad_line_once(orch_conn, tmp_path):
    """A producer appends to one file, ingested after each append: the lines read again are
    duplicates, bad lines and second versions of events included, not quarantined again."""
    event = make_event("decision", payload={"rationale": "first"})
    second_version = {**event, "payload": {"rationale": "second"}}
    path = tmp_path / "appended.jsonl"
    lines = [json.dumps(event), "{not json", json.dumps(second_version)]
    path.write_text("\n".join(lines) + "\n")
    first = ingest(orch_conn, path)
    assert (first["accepted"], first["quarantined"]) == (1, 2)
    for n in range(2):  # two appends, each a new version of the file
        lines += ["{also not json " + str(n), json.dumps(make_event())]
        path.write_text("\n".join(lines) + "\n")
        summary = ingest(orch_conn, path)
        assert (summary["accepted"], summary["quarantined"], summary["duplicates"]) == (1, 1, 3 + 2 * n)
        assert summary["quarantine_by_type"] == {"malformed_json": 1} and summary["balanced"]
    rows = sorted((r["source_line"], r["failure_type"]) for r in list_quarantine(orch_conn))
    assert rows == [
        (2, "malformed_json"),
        (3, "conflicting_duplicate"),
        (4, "malformed_json"),
        (6, "malformed_json"),
    ]
    assert events_accounted_for(orch_conn).passed  # each version's ledger entry matches its rows
    # the same bad line in another file is another occurrence: quarantined there too
    other = tmp_path / "other.jsonl"
    other.write_text("{not json\n")
    assert ingest(orch_conn, other)["quarantined"] == 1


def test_the_earlier_versions_bad_lines_are_looked_up_by_line_not_scanned(orch_conn):
    """A grown file's batch looks up its own lines among the path's pending rows: with a million
    of them pending, scanning them all for every batch made re-reading a file quadratic."""
    from orchestration_pipeline.lib.ingestion import batches as ingest_module

    orch_conn.execute(
        """INSERT INTO quarantine (run_id, file_sha256, source_file, source_line, byte_offset, failure_type,
                                   detail, json_pointer, raw_line, raw_sha256, raw_truncated)
           SELECT gen_random_uuid(), repeat('a', 64), '/landing/grown.jsonl', g, g * 10, 'malformed_json',
                  'bad', '', 'bad', md5(g::text) || md5(g::text), false
           FROM generate_series(1, 20000) g"""
    )
    orch_conn.execute("ANALYZE quarantine")
    batch = [
        (None, "b" * 64, "/landing/grown.jsonl", line, 0, "malformed_json", "", "", "", f"{line:064x}", False)
        for line in range(5000, 5010)
    ]
    query, params = ingest_module.quarantined_before_query(batch, "b" * 64)
    plan = "\n".join(r[0] for r in orch_conn.execute("EXPLAIN " + query, params).fetchall())
    orch_conn.rollback()
    index_conditions = [line for line in plan.splitlines() if "Index Cond" in line]
    assert any("source_line" in line for line in index_conditions), plan


def _paused_ingest(dsn, path, **kwargs):
    """Ingest ``path`` in a thread that stops inside its transaction after its first batch, until
    released. Returns (thread, paused, release, results)."""
    import threading

    from orchestration_pipeline.lib.db import connection

    paused, release, results = threading.Event(), threading.Event(), []

    def progress(info):
        if not info["final"] and not paused.is_set():
            paused.set()
            release.wait(30)

    def work():
        with connection(dsn) as conn:
            results.append(ingest(conn, path, progress=progress, progress_every_s=0, **kwargs))

    thread = threading.Thread(target=work)
    thread.start()
    assert paused.wait(30)
    return thread, release, results


def test_two_ingesters_of_two_versions_of_a_file_quarantine_its_bad_lines_once(orch_dsn, orch_conn, tmp_path):
    """One ingester is still inside version 2 when another reads version 3: the second waits for
    the first and finds its rows, so each bad line is quarantined once, as with one ingester."""
    import os
    import threading

    from orchestration_pipeline.lib.db import connection

    path = tmp_path / "appended.jsonl"
    path.write_text("{bad 1\n{bad 2\n")
    first, release, first_summary = _paused_ingest(orch_dsn, path, batch_rows=1, parse_workers=0)
    # the producer appends by writing the next version and renaming it into place
    grown = tmp_path / ".appended.tmp"
    grown.write_text("{bad 1\n{bad 2\n{bad 3\n")
    os.replace(grown, path)
    second_summary = []

    def second_ingester():
        with connection(orch_dsn) as conn:
            second_summary.append(ingest(conn, path, parse_workers=0))

    second = threading.Thread(target=second_ingester)
    second.start()
    second.join(2)  # with no lock on the path, it finishes meanwhile
    release.set()
    first.join(30)
    second.join(30)
    assert [(s["quarantined"], s["duplicates"]) for s in first_summary + second_summary] == [(2, 0), (1, 2)]
    pending = [(r["source_line"]) for r in list_quarantine(orch_conn)]
    assert sorted(pending) == [1, 2, 3]
    assert events_accounted_for(orch_conn).passed


def test_a_superseded_partial_line_does_not_overwrite_a_replay_that_resolved_it_meanwhile(
    orch_dsn, orch_conn, tmp_path
):
    """The replay committed its outcome while the ingestion of the grown file was resolving the
    same row: the replay's outcome stands, and the summary does not count the row as superseded."""
    import threading

    from orchestration_pipeline.lib.db import connection

    growing = make_event(task_id="T-grow")
    whole = json.dumps(growing)
    path = tmp_path / "live.jsonl"
    path.write_text(whole[:25])
    ingest(orch_conn, path)
    (qid,) = [r["quarantine_id"] for r in list_quarantine(orch_conn)]
    with connection(orch_dsn) as replayer:
        # a replay holds the row, about to record its outcome
        replayer.execute(
            "UPDATE quarantine SET replayed_at = now(), replay_outcome = 'accepted', replay_attempts = 1 "
            "WHERE quarantine_id = %s",
            (qid,),
        )
        path.write_text(whole + "\n")
        summaries = []
        grown = threading.Thread(target=lambda: summaries.append(_ingest_with_new_connection(orch_dsn, path)))
        grown.start()
        grown.join(2)  # it waits for the replay's row lock
        replayer.commit()
        grown.join(30)
    assert summaries[0]["superseded_quarantine"] == 0
    row = orch_conn.execute(
        "SELECT replay_outcome, last_replay_detail FROM quarantine WHERE quarantine_id = %s", (qid,)
    ).fetchone()
    assert row == ("accepted", None)


def _ingest_with_new_connection(dsn, path):
    from orchestration_pipeline.lib.db import connection

    with connection(dsn) as conn:
        return ingest(conn, path)


def test_one_wake_up_per_committed_file_and_none_for_a_file_of_duplicates(orch_dsn, tmp_path):
    import psycopg

    from orchestration_pipeline.lib.ingestion.notify import EVENTS_CHANNEL

    path = write_jsonl(tmp_path / "a.jsonl", [make_event() for _ in range(50)])
    with psycopg.connect(orch_dsn, autocommit=True) as listener, connection(orch_dsn) as conn:
        listener.execute(f"LISTEN {EVENTS_CHANNEL}")
        Ingestor(conn).ingest_paths([path])
        Ingestor(conn).ingest_paths(
            [write_jsonl(tmp_path / "b.jsonl", [json.loads(path.read_text().splitlines()[0])])]
        )
        got = list(listener.notifies(timeout=1.0))
    assert len(got) == 1 and got[0].channel == EVENTS_CHANNEL
