"""CLI failures against a real database: one line naming the fix, a non-zero exit, no traceback."""

import hashlib
import json
import os

import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli import main
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db


@pytest.fixture
def cli(tmp_path):
    """Runs the CLI in-process against the given databases; returns (result, stderr lines)."""

    def _cli(orch: str, tasks: str, *args: str):
        cleared = {k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))}
        env = {
            **cleared,
            "ORCH_HOME": str(tmp_path / "home"),
            "ORCH_DATABASE_URL": orch,
            "TASKS_DATABASE_URL": tasks,
            "ORCH_ACTOR": "test:cli",
        }
        result = CliRunner().invoke(main, list(args), env=env)
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result, result.stderr.strip().splitlines()

    return _cli


@pytest.mark.parametrize(
    "argv",
    [
        ["policy", "list"],
        ["policy", "set", "p1", "--effect", "label"],
        ["decisions", "execute", "p1"],
        ["decisions", "list"],
        ["projection", "update"],
        ["projection", "reconcile"],
        ["projection", "reports"],
        ["demo", "generate", "--sessions", "1"],
    ],
)
def test_unmigrated_database_is_one_line_naming_the_fix(argv, cli, databases, tmp_path):
    result, err = cli(databases.create(), databases.create(), *argv)
    assert result.exit_code == 1
    assert len(err) == 1, err
    assert err[0].startswith("error: schema not ready: missing tables ")
    assert "run 'orchestration-pipeline db migrate'" in err[0]
    landing = tmp_path / "home" / "landing"
    assert not landing.exists() or not any(landing.iterdir())  # nothing half-made left behind


def test_demo_generate_checks_the_tasks_db_before_writing_files(cli, orch_dsn, fresh_dsn, tmp_path):
    landing = tmp_path / "landing"
    result, err = cli(
        orch_dsn, fresh_dsn, "demo", "generate", "--sessions", "1", "--landing-dir", str(landing)
    )
    assert result.exit_code == 1 and err == [
        "error: schema not ready: missing tables tasks — run 'orchestration-pipeline db migrate'"
    ]
    assert not landing.exists()


def test_any_missing_table_ends_in_the_schema_message(cli, orch_dsn, tasks_dsn, monkeypatch):
    """The safety net: an UndefinedTable that escapes the up-front checks is still one line."""

    def reads_a_dropped_table(conn):
        conn.execute("SELECT * FROM a_table_no_migration_made")

    monkeypatch.setattr("orchestration_pipeline.lib.executions.policies.list_policies", reads_a_dropped_table)
    result, err = cli(orch_dsn, tasks_dsn, "policy", "list")
    assert result.exit_code == 1
    assert err == [
        "error: schema not ready: missing tables a_table_no_migration_made — run 'orchestration-pipeline db migrate'"
    ]


@pytest.mark.parametrize(
    ("policy_id", "name", "fragment"),
    [
        ("", None, "policy id '' is not valid"),
        ("has space", None, "is not valid"),
        ("p1", "  ", "name is blank"),
    ],
)
def test_policy_set_refuses_a_blank_id_or_name_before_writing(
    cli, orch_dsn, tasks_dsn, policy_id, name, fragment
):
    args = ["policy", "set", policy_id, "--effect", "label", *(["--name", name] if name is not None else [])]
    result, err = cli(orch_dsn, tasks_dsn, *args)
    assert result.exit_code == 1 and len(err) == 1 and fragment in err[0], err
    with connection(orch_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM policies").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM audit_ledger").fetchone()[0] == 0


def test_ingest_of_a_device_is_one_line(cli, orch_dsn, tasks_dsn):
    result, err = cli(orch_dsn, tasks_dsn, "ingest", "/dev/null")
    assert result.exit_code == 1
    assert err == [
        "error: /dev/null is not a regular file (a device, FIFO or socket) — give event files or directories"
    ]


def test_an_unreadable_file_is_named_and_the_others_are_still_ingested(
    cli, orch_dsn, tasks_dsn, tmp_path, monkeypatch
):
    import orchestration_pipeline.lib.ingestion.ingest as ingest_module

    landing = tmp_path / "landing"
    for name in ("a", "b", "c"):
        write_jsonl(landing / f"{name}.jsonl", [make_event(), make_event()])
    real_sha256 = ingest_module.file_sha256

    def denied(path):  # root reads every file, whatever its mode: the error is made here
        if path.name == "b.jsonl":
            raise PermissionError(13, "Permission denied", str(path))
        return real_sha256(path)

    monkeypatch.setattr(ingest_module, "file_sha256", denied)
    result, err = cli(orch_dsn, tasks_dsn, "ingest", "--json", "--quiet", str(landing))
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert (body["files"], body["accepted"], body["balanced"]) == (2, 4, True)
    assert body["unreadable_files"] == [
        {"path": str(landing / "b.jsonl"), "error": "PermissionError: Permission denied"}
    ]
    assert err[0] == f"error: not ingested: {landing / 'b.jsonl'}: PermissionError: Permission denied"
    assert "fix their permissions and run again" in err[1] and len(err) == 2
    with connection(orch_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM ingest_runs").fetchone()[0] == 1  # the run is recorded
    # readable again: the next run ingests just that file
    monkeypatch.setattr(ingest_module, "file_sha256", real_sha256)
    result, err = cli(orch_dsn, tasks_dsn, "ingest", "--json", "--quiet", str(landing))
    body = json.loads(result.stdout)
    assert result.exit_code == 0 and (body["skipped_files"], body["accepted"]) == (2, 2)


def test_a_schema_behind_the_code_is_one_line_naming_the_migration(cli, orch_dsn, tasks_dsn, tmp_path):
    with connection(orch_dsn) as conn:  # as if the last migration had not been applied yet
        conn.execute("ALTER TABLE quarantine DROP COLUMN derived_event_id")
        conn.commit()
    path = write_jsonl(tmp_path / "bad.jsonl", ["{not json"])
    result, err = cli(orch_dsn, tasks_dsn, "ingest", "--quiet", str(path))
    assert result.exit_code == 1 and len(err) == 1, err
    assert "schema is older than this version" in err[0] and "db migrate" in err[0]


def _quarantine_two(orch_dsn, tmp_path) -> list[int]:
    with connection(orch_dsn) as conn:
        Ingestor(conn).ingest_paths([write_jsonl(tmp_path / "q.jsonl", ["{broken", "{also broken"])])
        ids = [r[0] for r in conn.execute("SELECT quarantine_id FROM quarantine ORDER BY 1").fetchall()]
    assert len(ids) == 2
    return ids


def test_replay_of_an_unknown_id_is_an_error_naming_it(cli, orch_dsn, tasks_dsn, tmp_path):
    first, _ = _quarantine_two(orch_dsn, tmp_path)
    result, err = cli(orch_dsn, tasks_dsn, "quarantine", "replay", "--id", str(first), "--id", "99999")
    assert result.exit_code == 1 and len(err) == 1
    assert err[0].startswith("error: no quarantined line with id 99999 — ")
    with connection(orch_dsn) as conn:  # nothing was replayed, not even the id that exists
        assert conn.execute("SELECT sum(replay_attempts) FROM quarantine").fetchone()[0] == 0


def test_replay_of_an_already_replayed_id_says_so(cli, orch_dsn, tasks_dsn, tmp_path):
    first, second = _quarantine_two(orch_dsn, tmp_path)
    with connection(orch_dsn) as conn:
        conn.execute(
            "UPDATE quarantine SET replayed_at = now(), replay_outcome = 'accepted' WHERE quarantine_id = %s",
            (first,),
        )
        conn.commit()
    result, _ = cli(orch_dsn, tasks_dsn, "quarantine", "replay", "--id", str(first))
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith(f"already replayed, left alone: #{first}")
    assert "examined 0" in result.stdout
    result, _ = cli(
        orch_dsn, tasks_dsn, "quarantine", "replay", "--id", str(first), "--id", str(second), "--json"
    )
    body = json.loads(result.stdout)
    assert (body["examined"], body["already_replayed"]) == (1, [first])


@pytest.mark.parametrize("parse_workers", [0, 1])
def test_a_bom_at_the_start_of_a_file_does_not_cost_its_first_line(orch_conn, tmp_path, parse_workers):
    path = write_jsonl(tmp_path / "bom.jsonl", [make_event(), make_event(), "{broken"])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ingestor = Ingestor(orch_conn, parse_workers=parse_workers, parallel_min_bytes=0)
    summary = ingestor.ingest_paths([path]).as_dict()
    assert (summary["lines"], summary["accepted"], summary["quarantined"]) == (3, 2, 1)
    lines = [r[0] for r in orch_conn.execute("SELECT source_line FROM events ORDER BY 1").fetchall()]
    assert lines == [1, 2]
    row = orch_conn.execute("SELECT source_line, byte_offset FROM quarantine").fetchone()
    assert row == (3, path.read_bytes().index(b"{broken"))  # offsets into the file, BOM included
    stored = orch_conn.execute("SELECT file_sha256 FROM ingest_files").fetchone()[0]
    assert stored == hashlib.sha256(path.read_bytes()).hexdigest()
    orch_conn.rollback()
    again = Ingestor(orch_conn).ingest_paths([path]).as_dict()  # exactly once still holds
    assert (again["skipped_files"], again["accepted"]) == (1, 0)


def test_quarantine_list_and_replay_accept_a_known_failure_type(cli, orch_dsn, tasks_dsn, tmp_path):
    _quarantine_two(orch_dsn, tmp_path)
    result, _ = cli(orch_dsn, tasks_dsn, "quarantine", "list", "--failure-type", "malformed_json", "--json")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2
    result, _ = cli(
        orch_dsn, tasks_dsn, "quarantine", "replay", "--failure-type", "malformed_json", "--limit", "1"
    )
    assert result.exit_code == 0 and result.stdout.startswith("examined 1:")
