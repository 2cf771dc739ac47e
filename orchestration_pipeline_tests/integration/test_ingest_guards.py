"""What ingestion stored stays stored: the guard triggers (migration 0015) refuse removing or
rewriting it, admit the pipeline's own changes, and ``events_accounted_for`` counts every file's
rows and fails when the guard is off."""

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from orchestration_pipeline.lib.ingestion.checks import events_accounted_for
from orchestration_pipeline.lib.ingestion.guard import WANTED, guard_problems
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline.lib.ingestion.quarantine import discard_quarantine, replay_quarantine
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db
WHO = {"actor": "test:guard", "request_id": "req-guard"}
GUARDED = ("events", "ingest_files", "error_groups", "error_occurrences", "error_group_runs", "quarantine")


def ingest(conn, *paths):
    return Ingestor(conn).ingest_paths(paths).as_dict()


def refused(conn, statement, *params):
    """The guard's refusal message for ``statement``; fails the test when it is not refused."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        conn.execute(statement, params)
    conn.rollback()
    return str(caught.value)


def unguarded(conn, statement, *params):
    """Run ``statement`` with the guard triggers off, as a superuser could, and commit."""
    with conn.transaction():
        for table in GUARDED:
            conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        conn.execute(statement, params)
        for table in GUARDED:
            conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


@pytest.fixture
def ingested(orch_conn, tmp_path):
    """Two files of one run: a task, a bad line and an error flood that the second file's error
    joins (bumping the count of the run's event of the group); the paths ingested."""
    errors = [make_event("error", payload={"message": "disk full"}) for _ in range(3)]
    a = write_jsonl(tmp_path / "a.jsonl", [make_event("task_start", task_id="T1"), *errors, "{broken"])
    b = write_jsonl(
        tmp_path / "b.jsonl",
        [make_event(), make_event(), make_event("error", payload={"message": "disk full"})],
    )
    summary = ingest(orch_conn, a, b)
    assert (summary["accepted"], summary["collapsed"], summary["quarantined"]) == (4, 3, 1)
    assert orch_conn.execute(
        "SELECT payload->>'count' FROM events WHERE event_type = 'error'"
    ).fetchone() == ("4",)
    return {"a": str(a), "b": str(b)}


def test_delete_and_truncate_are_refused_on_every_guarded_table(orch_conn, ingested):
    for table in GUARDED:
        assert f"{table} keeps what was ingested: DELETE refused" in refused(
            orch_conn, f"DELETE FROM {table}"
        )
        # error_groups is referenced by the other error tables: truncated with them, or not at all
        message = refused(orch_conn, f"TRUNCATE {table} CASCADE")
        assert "TRUNCATE refused" in message
    assert orch_conn.execute("SELECT count(*) FROM events").fetchone()[0] == 4


def test_rewriting_what_was_ingested_is_refused(orch_conn, ingested):
    assert "UPDATE of event" in refused(
        orch_conn, "UPDATE events SET payload = '{}' WHERE event_type = 'decision'"
    )
    assert "UPDATE of event" in refused(orch_conn, "UPDATE events SET source_file = 'elsewhere'")
    # an error event's count may only grow, and nothing else of it change
    refused(
        orch_conn, "UPDATE events SET payload = jsonb_set(payload, '{count}', '1') WHERE event_type = 'error'"
    )
    refused(orch_conn, "UPDATE events SET stage = 'other' WHERE event_type = 'error'")
    assert "UPDATE refused" in refused(orch_conn, "UPDATE ingest_files SET accepted = accepted + 1")
    refused(orch_conn, "UPDATE error_groups SET count = count - 1")
    refused(orch_conn, "UPDATE error_groups SET message_template = 'hidden'")
    refused(orch_conn, "UPDATE error_groups SET sample_event_ids = '{}'")
    refused(orch_conn, "UPDATE error_group_runs SET count = count - 1")
    refused(orch_conn, "UPDATE error_occurrences SET run_id = gen_random_uuid()")
    message = refused(orch_conn, "UPDATE quarantine SET raw_line = 'clean'")
    assert "may change only through replay or discard" in message and "never change" in message
    refused(orch_conn, "UPDATE quarantine SET replay_attempts = -1")
    refused(orch_conn, "UPDATE quarantine SET replayed_at = now(), discarded_at = now(), discarded_by = 'x', "
                       "discard_reason = 'y'")  # fmt: skip
    refused(orch_conn, "UPDATE quarantine SET replay_outcome = 'accepted'")  # an outcome without replayed_at


def test_the_pipelines_own_changes_pass_the_guard(orch_conn, tmp_path, ingested):
    """Error counts grow across files of a run; quarantined lines are replayed and discarded."""
    flood = [make_event("error", stage="api", payload={"message": "timeout after 30 s"}) for _ in range(9)]
    c = write_jsonl(tmp_path / "c.jsonl", flood[:4])
    d = write_jsonl(tmp_path / "d.jsonl", flood[4:])
    summary = ingest(orch_conn, c, d)  # the run's event of the group is bumped by the second file
    assert (summary["accepted"], summary["collapsed"]) == (1, 8)
    counts = orch_conn.execute(
        "SELECT (payload->>'count')::int FROM events WHERE event_type = 'error' ORDER BY 1"
    ).fetchall()
    assert counts == [(4,), (9,)]
    future = make_event(occurred_at=(datetime.now(UTC) + timedelta(days=2)).isoformat())
    e = write_jsonl(tmp_path / "e.jsonl", [future, "{never json"])
    ingest(orch_conn, e)
    assert replay_quarantine(orch_conn, **WHO).still_failing == 3  # attempts counted
    later = datetime.now(UTC) + timedelta(days=2)
    assert replay_quarantine(orch_conn, **WHO, now=later).accepted == 1
    discarded = discard_quarantine(orch_conn, **WHO, reason="not an event", failure_type="malformed_json")
    assert len(discarded.discarded_ids) == 2
    refused(orch_conn, "UPDATE quarantine SET discard_reason = 'changed my mind'")  # a discard is final
    refused(orch_conn, "UPDATE quarantine SET last_replay_detail = 'again' WHERE replayed_at IS NOT NULL")
    verdict = events_accounted_for(orch_conn)
    assert verdict.passed, verdict.description  # the replayed line counts for e.jsonl
    assert verdict.metadata["files"] == 5


def test_a_discarded_partial_line_is_left_discarded_when_the_file_grows(orch_conn, tmp_path):
    growing = make_event(task_id="T-grow")
    path = tmp_path / "live.jsonl"
    whole = json.dumps(growing)
    path.write_text(whole[:25])
    ingest(orch_conn, path)
    discard_quarantine(orch_conn, **WHO, reason="producer restarted", source_file=str(path))
    path.write_text(whole + "\n")
    summary = ingest(orch_conn, path)  # the guard would refuse to mark the discarded row superseded
    assert (summary["accepted"], summary["superseded_quarantine"]) == (1, 0)
    row = orch_conn.execute("SELECT replayed_at, discarded_at IS NOT NULL FROM quarantine").fetchone()
    assert row == (None, True)


def test_events_gone_after_ingestion_fail_the_check_naming_the_files(orch_conn, ingested):
    assert events_accounted_for(orch_conn).passed
    unguarded(
        orch_conn, "DELETE FROM events WHERE source_file = %s AND event_type = 'task_start'", ingested["a"]
    )
    unguarded(orch_conn, "DELETE FROM events WHERE source_file = %s", ingested["b"])
    verdict = events_accounted_for(orch_conn)
    assert not verdict.passed
    assert verdict.description.startswith("3 events gone from 2 files after ingestion: ")
    assert ingested["a"] in verdict.description and ingested["b"] in verdict.description
    missing = {
        f["path"]: (f["accepted"], f["stored"], f["missing"]) for f in verdict.metadata["files_missing_rows"]
    }
    assert missing == {ingested["a"]: (2, 1, 1), ingested["b"]: (2, 0, 2)}
    assert verdict.metadata["unbalanced"] == []  # the ledger itself still balances: only a count shows it


def test_events_no_ledger_entry_accepted_fail_the_check(orch_conn, ingested):
    orch_conn.execute(
        "INSERT INTO events (event_id, event_type, occurred_at, payload, source_file, source_line) "
        "VALUES (gen_random_uuid(), 'decision', now(), '{\"rationale\": \"slipped in\"}', %s, 99)",
        (ingested["b"],),
    )
    orch_conn.commit()
    verdict = events_accounted_for(orch_conn)
    assert not verdict.passed
    assert verdict.description == f"1 event that no ledger entry accepted, in {ingested['b']} (1)"
    assert verdict.metadata["files_with_unaccounted_rows"][0]["stored"] == 3


def test_a_disabled_or_missing_guard_fails_the_check(orch_conn, ingested):
    assert guard_problems(orch_conn) == []
    orch_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_delete")
    orch_conn.execute("DROP TRIGGER quarantine_guard_update ON quarantine")
    orch_conn.commit()
    verdict = events_accounted_for(orch_conn)
    assert not verdict.passed
    problems = verdict.metadata["guard_problems"]
    assert problems == [
        "events: the DELETE guard events_no_delete is disabled — ALTER TABLE events ENABLE TRIGGER events_no_delete",
        "quarantine: the BEFORE UPDATE guard (row-level, quarantine_guard_update()) is missing — "
        "reapply sql/orchestration/0015_ingest_guards.sql (psql -1 -f)",
    ]
    assert verdict.description == f"guard: {problems[0]} (+1 more)"
    orch_conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_delete")
    orch_conn.commit()
    assert len(guard_problems(orch_conn)) == 1


def test_the_guard_covers_every_operation_on_every_table():
    covered = {(table, operation) for table, operation, _function, _row in WANTED}
    assert covered == {(t, op) for t in GUARDED for op in ("UPDATE", "DELETE", "TRUNCATE")}
