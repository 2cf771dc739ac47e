"""`up`/`down`/`run`/`demo` edge cases that must end in one line (or do nothing), fast: no server."""

from __future__ import annotations

import errno
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli import main
from orchestration_pipeline.errors import ConfigError
from orchestration_pipeline.lib import demo as demo_module
from orchestration_pipeline.lib.demo import generate_demo
from orchestration_pipeline.lib.embedded import ensure_postgres
from orchestration_pipeline.settings import load_settings

PIPELINE_PREFIXES = ("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_")


def invoke(*args: str, **env: str):
    cleared = {k: None for k in os.environ if k.startswith(PIPELINE_PREFIXES)}
    return CliRunner().invoke(main, list(args), env={**cleared, **env})


def _one_line(result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("sessions", [5, 200, 2000, 10_000])
def test_demo_events_are_all_in_the_past_for_any_session_count(tmp_path, sessions, monkeypatch):
    # what is checked here is timestamps, not durability: skip the fsync of each of the files
    monkeypatch.setattr(demo_module.os, "fsync", lambda fd: None)
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    written = generate_demo(tmp_path, sessions=sessions, faults=True, seed=1, now=now)
    latest = None
    session_starts = []
    for path in written:
        for raw in path.read_text().splitlines():
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                continue
            at = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            latest = at if latest is None else max(latest, at)
        if "faults" not in path.name:
            first = json.loads(path.read_text().splitlines()[0])
            session_starts.append(datetime.fromisoformat(first["occurred_at"].replace("Z", "+00:00")))
    assert latest < now
    # the demo's shape: sessions a minute apart, the newest starting about two hours ago
    assert max(session_starts) <= now - timedelta(hours=2)
    assert max(session_starts) >= now - timedelta(hours=2, minutes=2)


def test_embedded_server_refuses_a_path_with_spaces_up_front(tmp_path):
    with pytest.raises(ConfigError, match="cannot use a path with spaces") as caught:
        ensure_postgres(tmp_path / "with space")
    assert "ORCH_HOME without spaces" in str(caught.value) and "ORCH_DATABASE_URL" in str(caught.value)
    assert not (tmp_path / "with space" / "pg").exists()


def test_up_with_a_spaced_orch_home_is_one_line(tmp_path):
    result = invoke("up", ORCH_HOME=str(tmp_path / "has space"))
    assert result.exit_code == 1
    assert "cannot use a path with spaces" in _one_line(result)
    assert not (tmp_path / "has space").exists()


def _socket_settings(home, orchestration_host=None):
    socket = f"host={home / 'pg'}"
    return load_settings(
        {
            "ORCH_HOME": str(home),
            "ORCH_DATABASE_URL": f"postgresql://postgres:@/orchestration?{orchestration_host or socket}",
            "TASKS_DATABASE_URL": f"postgresql://postgres:@/tasks?{socket}",
        }
    )


@pytest.mark.parametrize("home", ["orch", "c++/orch"])  # libpq reads "+" in a query as a plus, not a space
def test_the_embedded_socket_urls_that_up_env_exports_still_mean_embedded(tmp_path, home):
    home = tmp_path / home
    assert _socket_settings(home).embedded_postgres
    assert not _socket_settings(home, f"host={tmp_path / 'elsewhere'}").embedded_postgres
    assert not (
        load_settings(
            {
                "ORCH_HOME": str(home),
                "ORCH_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/orchestration",
                "TASKS_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/tasks",
            }
        )
    ).embedded_postgres


@pytest.mark.parametrize("argv", [["down"], ["up"], ["decisions", "list"]])
def test_a_url_that_does_not_parse_is_one_line_naming_the_setting(tmp_path, argv):
    result = invoke(
        *argv,
        ORCH_HOME=str(tmp_path / "h"),
        ORCH_DATABASE_URL="postgresql://[::1/orchestration",
        TASKS_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/tasks",
    )
    assert result.exit_code == 1, result.output
    line = _one_line(result)
    assert line.startswith("error: ORCH_DATABASE_URL does not parse") and "Traceback" not in result.output
    assert not (tmp_path / "h").exists()


def test_down_with_a_missing_orch_home_creates_nothing(tmp_path):
    home = tmp_path / "nonexistent" / "deeper"
    result = invoke("down", ORCH_HOME=str(home))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("argv", [["up"], ["run"], ["demo", "generate", "--no-tasks"]])
def test_an_unwritable_orch_home_is_one_line_naming_it(tmp_path, argv):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    home = blocker / "home"  # mkdir fails (ENOTDIR) even for root, like a read-only file system
    result = invoke(*argv, ORCH_HOME=str(home))
    assert result.exit_code == 1
    line = _one_line(result)
    assert str(home) in line and "Traceback" not in result.output


def test_an_unwritable_orch_home_for_the_lock_is_one_line(tmp_path, monkeypatch):
    from orchestration_pipeline.lib import embedded

    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(embedded, "open", read_only, raising=False)
    with pytest.raises(ConfigError, match="cannot write to ORCH_HOME") as caught:
        with embedded._home_lock(tmp_path):
            pass
    assert str(tmp_path) in str(caught.value) and "Read-only file system" in str(caught.value)


@pytest.mark.parametrize(
    "code,message", [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")]
)
def test_demo_into_a_full_or_read_only_landing_dir_is_one_line_and_leaves_no_temp_file(
    tmp_path, monkeypatch, code, message
):
    def fail(_fd):
        raise OSError(code, message)

    monkeypatch.setattr(demo_module.os, "fsync", fail)
    landing = tmp_path / "landing"
    result = invoke(
        "demo", "generate", "--no-tasks", "--landing-dir", str(landing), ORCH_HOME=str(tmp_path / "h")
    )
    assert result.exit_code == 1
    line = _one_line(result)
    assert line == f"Error: cannot write to {landing}: {message} — check the landing directory"
    assert list(Path(landing).iterdir()) == []


def test_run_with_an_unknown_asset_is_a_usage_error_listing_the_assets(tmp_path):
    home = tmp_path / "h"
    result = invoke("run", "--select", "nonexistent_asset", ORCH_HOME=str(home))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "'nonexistent_asset' selects no asset" in result.output
    assert "raw_events" in result.output and "task_projection" in result.output
    assert not home.exists()  # refused before anything was started or created


def test_run_reads_the_checks_of_its_own_run_not_one_a_sensor_launched_meanwhile():
    from types import SimpleNamespace

    from orchestration_pipeline.cli.run import _cli_run_id

    def run(run_id, **tags):
        return SimpleNamespace(run_id=run_id, tags={k.replace("__", "/"): v for k, v in tags.items()})

    newest_first = [
        run("sensor-2", dagster__sensor_name="landing_zone_sensor"),
        run("later-cli"),
        run("schedule-1", dagster__schedule_name="nightly"),
        run("ours"),
        run("sensor-1", dagster__sensor_name="landing_zone_sensor"),
    ]
    assert _cli_run_id(newest_first) == "ours"
    assert _cli_run_id([run("s", dagster__sensor_name="x"), run("b", dagster__backfill="y")]) is None
    assert _cli_run_id([]) is None
