"""Discarding quarantined lines that will never be events, and paging through quarantine."""

import json
import os
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli import main
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline.lib.ingestion.quarantine import (
    DiscardRefused,
    UnknownQuarantineId,
    count_quarantine,
    discard_quarantine,
    list_quarantine,
    quarantine_counts,
    replay_quarantine,
)
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db

WHO = {"actor": "oncall:alice", "request_id": "INC-7"}


@pytest.fixture
def cli(orch_dsn, tasks_dsn, tmp_path):
    def _cli(*args: str):
        cleared = {k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))}
        env = {
            **cleared,
            "ORCH_HOME": str(tmp_path / "home"),
            "ORCH_DATABASE_URL": orch_dsn,
            "TASKS_DATABASE_URL": tasks_dsn,
            "ORCH_ACTOR": "test:cli",
        }
        result = CliRunner().invoke(main, list(args), env=env)
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result

    return _cli


def _ingest(conn: psycopg.Connection, path) -> None:
    Ingestor(conn).ingest_paths([path])


def _readme(tmp_path, lines: int = 7):
    """A README ingested by mistake: every line is malformed JSON."""
    path = tmp_path / "README.md"
    path.write_text("".join(f"line {n} of the readme\n" for n in range(lines)))
    return path


def _audit(conn, operation: str) -> list[tuple]:
    return conn.execute(
        "SELECT entity_id, actor, request_id, reason, after_data FROM audit_ledger "
        "WHERE entity_type = 'quarantine' AND operation = %s ORDER BY entity_id::bigint",
        (operation,),
    ).fetchall()


def test_discard_by_file_keeps_the_rows_marks_them_and_audits_each(orch_conn, tmp_path):
    readme = _readme(tmp_path)
    _ingest(orch_conn, readme)
    other = write_jsonl(tmp_path / "other.jsonl", ["{broken"])
    _ingest(orch_conn, other)
    assert quarantine_counts(orch_conn) == {"malformed_json": 8}

    result = discard_quarantine(
        orch_conn, **WHO, reason="README ingested by mistake", source_file=str(readme)
    )

    assert len(result.discarded_ids) == 7 and result.already_discarded == []
    rows = orch_conn.execute(
        "SELECT quarantine_id, discarded_by, discard_reason, discarded_at IS NOT NULL, replayed_at FROM quarantine "
        "WHERE source_file = %s ORDER BY 1",
        (str(readme.resolve()),),
    ).fetchall()
    assert [r[0] for r in rows] == result.discarded_ids  # kept, not deleted
    assert {r[1:] for r in rows} == {("oncall:alice", "README ingested by mistake", True, None)}
    assert quarantine_counts(orch_conn) == {"malformed_json": 1}  # only other.jsonl's line is pending
    entries = _audit(orch_conn, "delete")
    assert [int(e[0]) for e in entries] == result.discarded_ids
    assert {e[1:4] for e in entries} == {("oncall:alice", "INC-7", "README ingested by mistake")}
    assert all(e[4]["discard_reason"] == "README ingested by mistake" for e in entries)
    # every file still balances: the ledger's quarantine count still matches the table
    from orchestration_pipeline.lib.ingestion.checks import events_accounted_for

    assert events_accounted_for(orch_conn).passed


def test_discarding_twice_is_harmless(orch_conn, tmp_path):
    readme = _readme(tmp_path, lines=3)
    _ingest(orch_conn, readme)
    first = discard_quarantine(orch_conn, **WHO, reason="mistake", source_file=str(readme))
    again = discard_quarantine(
        orch_conn, actor="oncall:bob", request_id="INC-8", reason="again", source_file=str(readme)
    )
    assert (len(first.discarded_ids), again.discarded_ids) == (3, [])
    assert again.already_discarded == first.discarded_ids
    stored = orch_conn.execute("SELECT DISTINCT discarded_by, discard_reason FROM quarantine").fetchall()
    assert stored == [("oncall:alice", "mistake")]  # the first discard stands
    assert len(_audit(orch_conn, "delete")) == 3  # the second wrote nothing


def test_discarded_rows_are_not_listed_counted_or_replayed(orch_conn, tmp_path):
    future = make_event(occurred_at=(datetime.now(UTC) + timedelta(days=2)).isoformat())
    _ingest(orch_conn, write_jsonl(tmp_path / "f.jsonl", [future, "{broken"]))
    ids = {r["failure_type"]: r["quarantine_id"] for r in list_quarantine(orch_conn)}
    discard_quarantine(orch_conn, **WHO, reason="clock was wrong", ids=[ids["future_timestamp"]])

    assert [r["quarantine_id"] for r in list_quarantine(orch_conn)] == [ids["malformed_json"]]
    assert count_quarantine(orch_conn) == 1 and count_quarantine(orch_conn, include_replayed=True) == 2
    assert quarantine_counts(orch_conn) == {"malformed_json": 1}
    shown = {r["quarantine_id"]: r for r in list_quarantine(orch_conn, include_replayed=True)}
    assert shown[ids["future_timestamp"]]["discard_reason"] == "clock was wrong"

    # two days later the discarded line would be valid, but replay leaves it alone
    later = datetime.now(UTC) + timedelta(days=2)
    result = replay_quarantine(orch_conn, **WHO, now=later)
    assert (result.examined, result.accepted) == (1, 0)
    asked = replay_quarantine(orch_conn, **WHO, now=later, ids=[ids["future_timestamp"]])
    assert (asked.examined, asked.already_discarded) == (0, [ids["future_timestamp"]])
    assert orch_conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0


def test_a_replayed_row_is_left_alone_by_discard(orch_conn, tmp_path):
    future = make_event(occurred_at=(datetime.now(UTC) + timedelta(days=2)).isoformat())
    _ingest(orch_conn, write_jsonl(tmp_path / "f.jsonl", [future]))
    replay_quarantine(orch_conn, **WHO, now=datetime.now(UTC) + timedelta(days=2))
    (qid,) = orch_conn.execute("SELECT quarantine_id FROM quarantine").fetchone()
    result = discard_quarantine(orch_conn, **WHO, reason="too late", ids=[qid])
    assert (result.discarded_ids, result.already_replayed) == ([], [qid])
    orch_conn.rollback()
    assert orch_conn.execute("SELECT discarded_at FROM quarantine").fetchone() == (None,)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"reason": "x"}, DiscardRefused, "say which lines"),
        ({"reason": "  ", "ids": [1]}, DiscardRefused, "a reason is required"),
        ({"reason": "x", "ids": [1, 999]}, UnknownQuarantineId, "no quarantined line with id 999"),
        ({"reason": "x", "source_file": "/nowhere/notes.md"}, DiscardRefused, "--file /nowhere/notes.md"),
    ],
)
def test_a_discard_that_names_nothing_real_changes_nothing(orch_conn, tmp_path, kwargs, error, text):
    _ingest(orch_conn, _readme(tmp_path, lines=1))
    with pytest.raises(error, match=text):
        discard_quarantine(orch_conn, **WHO, **kwargs)
    orch_conn.rollback()
    discarded = orch_conn.execute("SELECT count(*) FROM quarantine WHERE discarded_at IS NOT NULL").fetchone()
    assert discarded == (0,)
    assert _audit(orch_conn, "delete") == []


def test_the_table_refuses_a_discard_without_who_or_why(orch_conn, tmp_path):
    _ingest(orch_conn, _readme(tmp_path, lines=1))
    with pytest.raises(psycopg.errors.CheckViolation):
        orch_conn.execute("UPDATE quarantine SET discarded_at = now(), discarded_by = 'x'")
    orch_conn.rollback()


def test_cli_discard_by_file_from_here_then_list_all_shows_them_marked(cli, orch_dsn, tmp_path, monkeypatch):
    readme = _readme(tmp_path, lines=3)
    with connection(orch_dsn) as conn:
        _ingest(conn, readme)
    monkeypatch.chdir(tmp_path)  # --file as the user types it: relative to where they are
    result = cli("quarantine", "discard", "--file", "README.md", "--reason", "README by mistake")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("discarded 3 quarantined lines (request ")
    again = cli("quarantine", "discard", "--file", "README.md", "--reason", "again", "--json")
    body = json.loads(again.stdout)
    assert (body["discarded"], len(body["already_discarded"])) == (0, 3)

    listed = cli("quarantine", "list")
    assert listed.stdout.splitlines()[0] == "pending by type: none" and "README.md" not in listed.stdout
    shown = cli("quarantine", "list", "--all")
    assert shown.stdout.count("[discarded ") == 3 and "by test:cli: README by mistake]" in shown.stdout
    with connection(orch_dsn) as conn:
        sources = conn.execute(
            "SELECT DISTINCT operation, source FROM audit_ledger WHERE entity_type = 'quarantine'"
        ).fetchall()
    assert sources == [("delete", "cli:quarantine discard")]


def test_cli_discard_without_a_selection_is_a_usage_error(cli):
    result = cli("quarantine", "discard", "--reason", "x")
    assert result.exit_code == 2 and "--id, --file or --failure-type" in result.stderr


def test_quarantine_list_says_when_more_rows_match(cli, orch_dsn, tmp_path):
    with connection(orch_dsn) as conn:
        _ingest(conn, _readme(tmp_path, lines=5))
    first = cli("quarantine", "list", "--limit", "2")
    assert first.stdout.splitlines()[-1] == "showing 1–2 of 5; --offset 2 for more"
    last = cli("quarantine", "list", "--limit", "2", "--offset", "4")
    assert last.stdout.splitlines()[-1] == "showing 5–5 of 5"
    whole = cli("quarantine", "list")
    assert "showing" not in whole.stdout and whole.stdout.count("README.md:") == 5
    as_json = cli("quarantine", "list", "--limit", "2", "--json")
    assert len(as_json.stdout.splitlines()) == 2  # stdout stays JSON lines; the hint goes to stderr
    assert "showing 1–2 of 5; --offset 2 for more" in as_json.stderr


def test_ingest_summary_of_one_file_says_one_file(cli, tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [make_event(), "{broken"])
    result = cli("ingest", "--quiet", str(path))
    assert result.exit_code == 0
    assert result.stdout.startswith(
        "1 file (0 already ingested), 2 lines: 1 accepted, 1 quarantined, 0 duplicates"
    )


def test_ingest_warns_about_a_directory_without_event_files_and_ingests_the_rest(cli, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "events.json").write_text("{}\n")
    good = write_jsonl(tmp_path / "landing" / "a.jsonl", [make_event()])
    result = cli("ingest", "--quiet", str(tmp_path / "docs"), str(good.parent))
    assert result.exit_code == 0
    assert result.stdout.startswith("1 file ")
    assert result.stderr.startswith("warning: no event files in ")
    assert "events.json: not an event file name" in result.stderr
