"""Real producers' status words end to end: stored as given, unknown words counted per producer,
task outcomes projected by meaning, activity statistics, quarantine replay, and the SQL folding."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestration_pipeline.lib.activity import ActivityFilter, activity_stats, query_activity
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline.lib.ingestion.quarantine import replay_quarantine
from orchestration_pipeline.lib.ingestion.status_words import (
    DEFAULT_STATUS_WORDS,
    STATUS_SYNONYMS_ENV,
    configured_status_words,
    fold_word,
    meaning_sql,
)
from orchestration_pipeline.lib.projection.projector import project_events

pytestmark = pytest.mark.db

CORPUS = Path(__file__).parents[1] / "data" / "producer_status_words.jsonl"

# What each task's events say happened, read as each producer means its words. A word with more
# than one reading (UNSTABLE, broken, up_for_retry, upstream_failed, manual, okay-ish) is not in
# the default map: it changes nothing, so the task keeps what its other events said.
EXPECTED_TASKS = {
    "sh-compile": "succeeded",  # ok, then done
    "sh-test": "failed",  # "error " (trimmed)
    "sh-lint": "running",  # okay-ish: unknown
    "ps-stage": "succeeded",  # Running, then SUCCESS
    "ps-swap": "failed",  # FAIL
    "ps-notify": "succeeded",  # "Status" is not the envelope's field: payload.success decides
    "gha-build": "succeeded",
    "gha-test": "failed",
    "gha-e2e": "cancelled",
    "gha-deploy": "pending",  # skipped: no projection status, and no other event
    "gl-build": "succeeded",
    "gl-test": "failed",
    "gl-review": "cancelled",  # canceled
    "gl-deploy": "pending",  # manual: unknown
    "jk-build": "succeeded",  # SUCCESS
    "jk-test": "running",  # UNSTABLE: unknown, although payload.success is true
    "jk-integration": "failed",  # FAILURE
    "jk-deploy": "cancelled",  # ABORTED
    "af-extract": "succeeded",
    "af-transform": "failed",
    "af-load": "pending",  # upstream_failed: unknown
    "af-report": "running",  # up_for_retry: unknown, although payload.success is false
    "bk-unit": "succeeded",  # passed
    "bk-docker": "running",  # broken: unknown
    "ag-fix": "pending",  # agent events never set a task's status
}
EXPECTED_UNKNOWN = {
    "build.sh": {"okay-ish": 3},
    "gitlab-ci": {"manual": 1},
    "jenkins": {"UNSTABLE": 1},
    "airflow": {"up_for_retry": 1, "upstream_failed": 1},
    "buildkite": {"broken": 1},
}


def corpus_lines() -> dict[int, dict]:
    return {n: json.loads(raw) for n, raw in enumerate(CORPUS.read_bytes().splitlines(), 1)}


def ingest_corpus(conn, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    target = landing / "producers.jsonl"
    target.write_bytes(CORPUS.read_bytes())
    return Ingestor(conn, parse_workers=0).ingest_paths([target]).as_dict(), str(target)


@pytest.fixture
def tasks_conn(tasks_dsn):
    with connection(tasks_dsn) as conn:
        yield conn


def test_every_valid_line_is_stored_as_given_and_unknown_words_are_counted(orch_conn, tmp_path):
    summary, path = ingest_corpus(orch_conn, tmp_path)
    lines = corpus_lines()
    assert (summary["lines"], summary["accepted"], summary["quarantined"]) == (len(lines), len(lines) - 2, 2)
    assert summary["unknown_status_words"] == EXPECTED_UNKNOWN
    stored = {
        line: (status, severity, payload)
        for line, status, severity, payload in orch_conn.execute(
            "SELECT source_line, status, severity, payload FROM events WHERE source_file = %s", (path,)
        )
    }
    for number, obj in lines.items():
        if number not in stored:
            continue
        status, severity, payload = stored[number]
        assert status == (obj["status"].strip() if "status" in obj else None), number
        assert severity == (obj.get("severity") or None), number
    # PowerShell's capitalised "Status" is a field outside the envelope: kept, not read as status
    notify = next(n for n, o in lines.items() if o.get("task_id") == "ps-notify")
    assert stored[notify][0] is None
    assert stored[notify][2]["envelope_extra"] == {"Status": "SUCCESS", "Severity": "Information"}
    rejected = orch_conn.execute(
        "SELECT source_line, failure_type, json_pointer, detail FROM quarantine ORDER BY source_line"
    ).fetchall()
    orch_conn.rollback()
    assert set(stored) | {r[0] for r in rejected} == set(lines)
    too_long = next(n for n, o in lines.items() if len(o.get("status", "")) > 64)
    agent_misuse = next(n for n, o in lines.items() if o["event_type"] == "agent.completed")
    assert [r[:3] for r in rejected] == [
        (too_long, "invalid_value", "/status"),
        (agent_misuse, "invalid_value", "/status"),
    ]
    assert "65 characters" in rejected[0][3] and "limit is 64" in rejected[0][3]


def test_the_projection_counts_task_outcomes_by_meaning(orch_conn, tasks_conn, tmp_path):
    ingest_corpus(orch_conn, tmp_path)
    project_events(orch_conn, tasks_conn)
    got = dict(orch_conn.execute("SELECT task_id, status FROM task_projection").fetchall())
    orch_conn.rollback()
    assert got == EXPECTED_TASKS


def test_a_configured_synonym_changes_what_the_projection_and_the_counts_see(
    orch_conn, tasks_conn, tmp_path, monkeypatch
):
    monkeypatch.setenv(STATUS_SYNONYMS_ENV, '{"UNSTABLE": "failed", "broken": "failed", "manual": "blocked"}')
    summary, _ = ingest_corpus(orch_conn, tmp_path)
    assert summary["unknown_status_words"] == {
        k: v for k, v in EXPECTED_UNKNOWN.items() if k not in ("jenkins", "buildkite", "gitlab-ci")
    }
    project_events(orch_conn, tasks_conn, status_words=configured_status_words())
    got = dict(orch_conn.execute("SELECT task_id, status FROM task_projection").fetchall())
    orch_conn.rollback()
    changed = {"jk-test": "failed", "bk-docker": "failed", "gl-deploy": "blocked"}
    assert got == {**EXPECTED_TASKS, **changed}


def test_activity_statistics_read_words_by_meaning(orch_conn, tmp_path):
    ingest_corpus(orch_conn, tmp_path)
    stats = activity_stats(orch_conn)
    sources = {s["source"]: s for s in stats["sources"]}
    jenkins = sources["jenkins"]
    assert (jenkins["task_ends"], jenkins["succeeded"], jenkins["failed"], jenkins["cancelled"]) == (
        4,
        1,
        1,
        1,
    )
    assert (jenkins["unknown"], jenkins["success_rate"]) == (1, 0.5)
    # ps-notify has no status word: its payload.success counts, as in the projection
    assert (sources["deploy.ps1"]["succeeded"], sources["deploy.ps1"]["failed"]) == (2, 1)
    assert sources["github-actions"]["skipped"] == 1
    assert stats["by_severity"]["info"] == 4  # Information x3 (PowerShell) and an agent's info
    assert stats["by_severity"]["warning"] == 2  # PowerShell's Warning and Jenkins' WARN
    assert stats["by_status"]["UNSTABLE"] == 1  # a word without a meaning is shown as written
    failed = query_activity(orch_conn, ActivityFilter(status_meaning="failed", limit=100))
    assert sorted(r["status"] for r in failed) == sorted(
        ["error", "FAIL", "failure", "failed", "FAILURE", "failed", "failed"]
    )
    exact = query_activity(orch_conn, ActivityFilter(status="FAILURE"))
    assert [r["source"] for r in exact] == ["jenkins"]


def test_a_line_quarantined_for_its_status_word_is_accepted_on_replay(orch_conn):
    """Lines quarantined under the former enum (e.g. "ok") are accepted by a replay, as given."""
    raw = json.dumps(
        {
            "event_type": "task_end",
            "occurred_at": "2026-11-30T08:03:11Z",
            "source": "build.sh",
            "task_id": "sh-old",
            "status": "ok",
            "payload": {"success": True, "duration_ms": 5},
        },
        separators=(",", ":"),
    )
    too_long = raw.replace('"ok"', json.dumps("x" * 65))
    for line, text in ((1, raw), (2, too_long)):
        orch_conn.execute(
            """INSERT INTO quarantine (run_id, source_file, source_line, failure_type, detail, json_pointer,
                                       raw_line, raw_sha256)
               VALUES (%s, '/landing/old.jsonl', %s, 'invalid_value', 'former enum', '/status', %s, %s)""",
            (uuid.uuid4(), line, text, hashlib.sha256(text.encode()).hexdigest()),
        )
    orch_conn.commit()
    result = replay_quarantine(orch_conn, actor="test:replay", request_id="R-1")
    assert (result.examined, result.accepted, result.still_failing) == (2, 1, 1)
    row = orch_conn.execute("SELECT status, source FROM events WHERE task_id = 'sh-old'").fetchone()
    detail = orch_conn.execute("SELECT last_replay_detail FROM quarantine WHERE source_line = 2").fetchone()[
        0
    ]
    orch_conn.rollback()
    assert row == ("ok", "build.sh")
    assert "limit is 64" in detail


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    word=st.text(
        alphabet=st.sampled_from("aAzZ _-ÄäİıßẞOoKk✓\u00a0\t"),
        min_size=1,
        max_size=12,
    )
)
def test_sql_folds_words_exactly_as_python_does(orch_dsn, word):
    words = {**DEFAULT_STATUS_WORDS.status.as_json(), fold_word(word): "blocked"}
    with connection(orch_dsn) as conn:
        got = conn.execute(
            f"SELECT {meaning_sql('%(word)s::text', 'words')}",
            {"word": word, "words": json.dumps(words)},
        ).fetchone()[0]
    assert got == "blocked"
