"""What a new user reads: why a directory gave nothing to ingest, counts in the singular, flags named."""

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli import main
from orchestration_pipeline.lib.demo import EXAMPLE_TASK_ID, demo_tasks, generate_demo
from orchestration_pipeline.lib.ingestion.discovery_hints import (
    NOT_EVENT_NAME,
    no_event_files_message,
    skipped_files,
)
from orchestration_pipeline.lib.wording import plural


def _cli(*args: str, tmp_path: Path):
    cleared = {k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))}
    # a database nobody listens on: these commands must fail (or succeed) before connecting
    env = {
        **cleared,
        "ORCH_HOME": str(tmp_path / "home"),
        "ORCH_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1",
        "TASKS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1",
    }
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.parametrize(
    ("count", "expected"), [(0, "0 files"), (1, "1 file"), (2, "2 files"), (263, "263 files")]
)
def test_plural(count, expected):
    assert plural(count, "file") == expected


def test_plural_with_an_irregular_plural():
    assert (plural(1, "batch", "batches"), plural(3, "batch", "batches")) == ("1 batch", "3 batches")


def test_each_skipped_file_gets_its_reason(tmp_path):
    (tmp_path / "events.json").write_text("{}\n")
    (tmp_path / "spool.jsonl.tmp").write_text("{}\n")
    (tmp_path / ".partial.jsonl").write_text("{}\n")
    (tmp_path / ".work").mkdir()
    (tmp_path / ".work" / "a.jsonl").write_text("{}\n")
    (tmp_path / "good.NDJSON").write_text("{}\n")  # an event file: not skipped
    reasons = {s.path.relative_to(tmp_path).as_posix(): s.reason for s in skipped_files(tmp_path)}
    assert set(reasons) == {"events.json", "spool.jsonl.tmp", ".partial.jsonl", ".work/a.jsonl"}
    assert reasons["events.json"] == NOT_EVENT_NAME
    assert "tmp" in reasons["spool.jsonl.tmp"]
    assert "hidden file" in reasons[".partial.jsonl"]
    assert "hidden directory" in reasons[".work/a.jsonl"]


def test_the_message_caps_the_files_it_names(tmp_path):
    for n in range(8):
        (tmp_path / f"notes-{n}.txt").write_text("x\n")
    message = no_event_files_message([tmp_path], show=3)
    assert message.count(": not an event file name") == 3
    assert "8 files skipped" in message and "and 5 more files" in message
    assert "\n" not in message


def test_ingest_of_a_directory_holding_only_events_json_fails_naming_it(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "events.json").write_text('{"event_type": "decision"}\n')
    result = _cli("ingest", str(landing), tmp_path=tmp_path)
    assert result.exit_code == 1
    err = result.stderr.strip().splitlines()
    assert len(err) == 1, err
    assert f"{landing / 'events.json'}: not an event file name" in err[0]
    assert "event files end in .jsonl or .ndjson" in err[0]
    assert result.stdout == ""


def test_ingest_of_an_empty_directory_fails_saying_it_is_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _cli("ingest", "--json", str(tmp_path / "empty"), tmp_path=tmp_path)
    assert result.exit_code == 1
    assert "no event files in" in result.stderr and "no files at all" in result.stderr
    assert "event files end in .jsonl or .ndjson" in result.stderr


def test_emit_task_end_without_success_names_the_flag(tmp_path):
    result = _cli(
        "emit", "task-end", "--session-id", "S1", "--source", "t", "--task-id", "T1", "--duration-ms", "5",
        "--landing-dir", str(tmp_path / "landing"), tmp_path=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "payload.success is required" in result.stderr
    assert "-f success=true" in result.stderr
    assert not (tmp_path / "landing").exists() or not any((tmp_path / "landing").iterdir())


def test_emit_task_end_without_duration_names_the_option(tmp_path):
    result = _cli(
        "emit", "task-end", "--session-id", "S1", "--source", "t", "-f", "success=true",
        "--landing-dir", str(tmp_path / "landing"), tmp_path=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 2 and "pass --duration-ms N" in result.stderr


def test_demo_written_to_a_landing_dir_says_1_file_in_the_singular(tmp_path):
    result = _cli(
        "demo", "generate", "--sessions", "1", "--no-tasks", "--landing-dir", str(tmp_path / "l"),
        tmp_path=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote 1 file to {tmp_path / 'l'}")


@pytest.mark.parametrize(("sessions", "seed"), [(1, 1), (2, 5), (4, 11), (30, 3)])
def test_the_demo_always_has_the_readme_example_task_and_never_drifts_it(tmp_path, sessions, seed):
    written = generate_demo(tmp_path, sessions=sessions, seed=seed)
    tasks = {t.task_id: t for t in demo_tasks(written)}
    assert EXAMPLE_TASK_ID in tasks
    assert tasks[EXAMPLE_TASK_ID].status == "done"  # its events say it succeeded: no status drift
