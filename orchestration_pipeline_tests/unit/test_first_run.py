"""What a new user sees first: `run`'s report, runbook pointers, settings errors, a second `dev`, `--help`."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli import main
from orchestration_pipeline.cli.run import CheckRow, _finish, _print_report, log_excerpt
from orchestration_pipeline.errors import ConfigError
from orchestration_pipeline.lib.services import record_dagster_dev, running_dagster
from orchestration_pipeline.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
PIPELINE_PREFIXES = ("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_")
CLOSED_PORT = {
    "ORCH_DATABASE_URL": "postgresql://svc:TopS3cret@127.0.0.1:1/orch",
    "TASKS_DATABASE_URL": "postgresql://svc:TopS3cret@127.0.0.1:1/tasks",
}


def invoke(*args: str, terminal_width: int | None = None, **env: str):
    cleared = {k: None for k in os.environ if k.startswith(PIPELINE_PREFIXES)}
    runner = CliRunner()
    return runner.invoke(main, list(args), env={**cleared, **env}, terminal_width=terminal_width)


def _check_specs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from orchestration_pipeline.definitions import defs

        graph = defs().resolve_asset_graph()
    return [graph.get_check_spec(key) for key in graph.asset_check_keys]


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(markdown: Path) -> set[str]:
    lines = markdown.read_text(encoding="utf-8").splitlines()
    fenced = False
    found = set()
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.add(_github_anchor(line.lstrip("#")))
    return found


# --- 2. every check declares its severity and a runbook section that exists --------------------


def test_every_check_declares_severity_and_a_runbook_heading_that_exists():
    specs = _check_specs()
    assert len(specs) >= 12
    for spec in specs:
        meta = {k: getattr(v, "value", v) for k, v in spec.metadata.items()}
        assert meta.get("severity") in ("ERROR", "WARN"), spec.name
        path, _, anchor = str(meta.get("runbook", "")).partition("#")
        assert path.startswith("docs/runbooks/") and anchor, (spec.name, meta)
        runbook = REPO_ROOT / path
        assert runbook.is_file(), f"{spec.name}: {path} does not exist"
        assert anchor in _anchors(runbook), f"{spec.name}: no heading for #{anchor} in {path}"


def test_the_runbook_explains_the_coverage_codes_and_the_limit():
    section = (REPO_ROOT / "docs/runbooks/ingestion.md").read_text().split("### `core_event_coverage`")[1]
    section = section.split("\n### ")[0]
    for term in ("FAIL_CORE_MISSING", "GAPS", "max_sessions_with_gaps", "limit", "coverage_report"):
        assert term in section, term


def test_the_severity_a_check_declares_is_the_one_the_readme_gives_it():
    readme = (REPO_ROOT / "README.md").read_text()
    for spec in _check_specs():
        declared = {k: getattr(v, "value", v) for k, v in spec.metadata.items()}["severity"]
        row = re.search(rf"`{spec.name}` \(([^)]*)\)", readme)
        assert row, f"README's asset table does not list {spec.name}"
        assert declared in row[1], (spec.name, declared, row[1])


# --- 1. run ends with a table and what to do next ----------------------------------------------


ROWS = [
    CheckRow(
        "raw_events", "events_accounted_for", "ERROR", "docs/runbooks/ingestion.md#events_accounted_for"
    ),
    CheckRow(
        "raw_events", "provider_metric_present", "WARN", "docs/runbooks/ingestion.md#provider_metric_present"
    ),
]


def _rows(*results: tuple[str, str]) -> list[CheckRow]:
    from dataclasses import replace

    return [
        replace(row, result=result, description=text)
        for row, (result, text) in zip(ROWS, results, strict=True)
    ]


def test_the_report_is_a_table_of_every_check_with_its_asset_severity_and_result(capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    _print_report(
        _rows(("passed", "all 5 files balance"), ("failed", "2 of 5 sessions lack provider metrics"))
    )
    lines = capsys.readouterr().out.splitlines()
    table = [line.split() for line in lines if line.strip() and not line.startswith("check failed")]
    assert table[0] == ["check", "asset", "severity", "result"]
    assert ["events_accounted_for", "raw_events", "ERROR", "passed"] in table
    assert ["provider_metric_present", "raw_events", "WARN", "failed"] in table
    failed = [line for line in lines if line.startswith("check failed:")]
    assert failed == [
        "check failed: raw_events provider_metric_present [WARN] 2 of 5 sessions lack provider metrics"
        " — read docs/runbooks/ingestion.md#provider_metric_present"
    ]


def test_outside_the_checkout_the_runbook_is_named_by_its_absolute_path(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    _print_report(_rows(("failed", "x"), ("passed", "")))
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("check failed:")]
    assert failed[0].endswith(f"— read {REPO_ROOT / 'docs/runbooks/ingestion.md'}#events_accounted_for")


def test_checks_that_did_not_run_are_not_reported_as_passed(capsys):
    _finish(_rows(("passed", ""), ("not run", "")), 0, None)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("1 checks passed, 1 did not run") and "all" not in last


def test_run_logs_keep_only_the_newest(tmp_path):
    from orchestration_pipeline.cli.run import KEEP_LOGS, _new_log_path

    settings = load_settings({"ORCH_HOME": str(tmp_path)})
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(KEEP_LOGS + 5):
        (logs / f"run-20260101T0000{i:02d}Z-1.log").write_text("")
    fresh = _new_log_path(settings)
    kept = sorted(p.name for p in logs.glob("run-*.log"))
    assert len(kept) == KEEP_LOGS - 1 and kept[0] == "run-20260101T000006Z-1.log"
    assert fresh.parent == logs and not fresh.exists()


def test_all_passed_ends_with_the_way_to_the_ui(capsys):
    _finish(_rows(("passed", ""), ("passed", "")), 0, Path("/h/logs/run.log"))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("all 2 checks passed") and "orchestration-pipeline dev" in last


def test_a_warn_failure_keeps_exit_0_and_says_where_to_read(capsys):
    _finish(_rows(("passed", ""), ("failed", "x")), 0, None)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "1 WARN check(s) failed" in last and "runbook" in last


def test_an_error_failure_exits_1_naming_the_runbooks_and_the_log():
    with pytest.raises(click.ClickException) as caught:
        _finish(_rows(("failed", "x"), ("passed", "")), 1, Path("/h/logs/run-1.log"))
    message = caught.value.format_message()
    assert "1 ERROR-severity check(s) failed" in message
    assert "runbook" in message and "/h/logs/run-1.log" in message


def test_a_failed_materialization_exits_1_naming_the_full_log():
    with pytest.raises(click.ClickException) as caught:
        _finish(_rows(("not run", ""), ("not run", "")), 1, Path("/h/logs/run-2.log"))
    message = caught.value.format_message()
    assert "materialization failed (exit 1)" in message and "/h/logs/run-2.log" in message


# the output of a failed `dagster asset materialize`, as captured in a log file
DAGSTER_LOG = (Path(__file__).parents[1] / "data" / "dagster_failed_run.log").read_text(encoding="utf-8")


def test_the_log_excerpt_keeps_the_errors_without_timestamps_noise_or_repeats():
    excerpt = log_excerpt(DAGSTER_LOG)
    assert "NameError: name 'Counts' is not defined" in excerpt
    assert excerpt.count("NameError: name 'Counts' is not defined") == 1
    assert (
        "Step raw_events finished without success or failure event. Downstream steps will not execute."
        in excerpt
    )
    assert not any("were not executed" in line or "DEBUG" in line or "File " in line for line in excerpt)
    assert not any(line.startswith("2026-") or "0b5d7c1e" in line for line in excerpt)
    assert excerpt[-1] == "NameError: name 'Counts' is not defined"


def test_a_log_without_error_lines_shows_its_tail():
    text = "\n".join(f"line {i}" for i in range(30))
    assert log_excerpt(text, limit=3) == ["line 27", "line 28", "line 29"]


# --- 3. settings errors name the environment variable ------------------------------------------


@pytest.mark.parametrize(
    "env, variable",
    [
        (
            {"ORCH_DATABASE_URL": "mysql://u:p@db/x", "TASKS_DATABASE_URL": "postgresql://db/t"},
            "ORCH_DATABASE_URL",
        ),
        (
            {"ORCH_DATABASE_URL": "postgresql://db/x", "TASKS_DATABASE_URL": "mysql://db/t"},
            "TASKS_DATABASE_URL",
        ),
        (
            {
                "ORCH_DATABASE_URL": "postgresql://db/x",
                "TASKS_DATABASE_URL": "postgresql://db/t",
                "DAGSTER_DATABASE_URL": "sqlite:///dagster.db",
            },
            "DAGSTER_DATABASE_URL",
        ),
    ],
)
def test_a_wrong_url_scheme_names_the_variable_and_asks_for_postgresql(tmp_path, env, variable):
    with pytest.raises(ConfigError) as caught:
        load_settings({"ORCH_HOME": str(tmp_path), **env})
    message = str(caught.value)
    assert message.startswith(variable) and "postgresql://" in message
    assert "key=value" not in message  # says nothing about a form the user did not write
    for internal in ("Value error", "Input should", "database_url", "invalid setting"):
        assert internal not in message


def test_a_url_that_does_not_parse_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "ORCH_HOME": str(tmp_path),
                "ORCH_DATABASE_URL": "postgresql://db/x",
                "TASKS_DATABASE_URL": "postgresql://[::1/tasks",
            }
        )
    assert str(caught.value).startswith("TASKS_DATABASE_URL does not parse")
    assert "Value error" not in str(caught.value)


def test_a_qdrant_url_without_http_names_qdrant_url(tmp_path):
    with pytest.raises(ConfigError, match=r"^QDRANT_URL must be the http:// or https:// URL"):
        load_settings({"ORCH_HOME": str(tmp_path), "QDRANT_URL": "qdrant:6333"})


def test_an_orch_home_of_an_unknown_user_is_one_line_naming_orch_home():
    with pytest.raises(ConfigError, match=r"^ORCH_HOME ~no-such-user-here/x cannot be used"):
        load_settings({"ORCH_HOME": "~no-such-user-here/x"})


@pytest.mark.parametrize("command", ["up", "run"])
def test_unreachable_servers_name_the_variable_the_user_set(tmp_path, command):
    result = invoke(command, ORCH_HOME=str(tmp_path / "h"), **CLOSED_PORT)
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(
        "error: cannot connect to ORCH_DATABASE_URL (postgresql://svc:***@127.0.0.1:1/orch)"
    )
    assert "connection refused" in line and "is the server running" in line
    assert "dagster" not in line and "TopS3cret" not in result.output


# --- 4. a second `dev` refuses at once ----------------------------------------------------------


@pytest.fixture
def dagster_like_process():
    """A live process whose command line says dagster, standing in for a running `dagster dev`."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dagster", "dev"])
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 10
    # until the child has exec'd, /proc shows the parent's command line
    while cmdline.exists() and b"dagster" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_second_dev_for_the_same_home_refuses_naming_the_running_one(tmp_path, dagster_like_process):
    home = tmp_path / "h"
    settings = load_settings({"ORCH_HOME": str(home)})
    settings.dagster_home.mkdir(parents=True)
    record_dagster_dev(settings, "http://127.0.0.1:3000", pid=dagster_like_process)
    result = invoke("dev", "--port", "3999", ORCH_HOME=str(home), **CLOSED_PORT)
    assert result.exit_code == 1, result.output
    assert (
        f"Dagster is already running for this ORCH_HOME on http://127.0.0.1:3000 (pid {dagster_like_process})"
        in result.output
    )
    assert "cannot connect" not in result.output  # refused before bringing anything up


def test_a_record_of_a_process_that_ended_or_is_not_dagster_is_ignored(tmp_path):
    settings = load_settings({"ORCH_HOME": str(tmp_path)})
    settings.dagster_home.mkdir(parents=True)
    ended = subprocess.Popen([sys.executable, "-c", "pass", "dagster"])
    ended.wait()
    record_dagster_dev(settings, "http://127.0.0.1:3000", pid=ended.pid)
    assert running_dagster(settings) is None
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record_dagster_dev(settings, "http://127.0.0.1:3000", pid=other.pid)
        if Path("/proc").is_dir():
            assert running_dagster(settings) is None  # a reused pid is not a running Dagster
    finally:
        other.kill()
        other.wait()
    (settings.dagster_home / "dev.json").write_text(json.dumps({"pid": "x"}))
    assert running_dagster(settings) is None


def test_dev_on_a_taken_port_refuses_before_starting_anything(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = invoke("dev", "--port", str(port), ORCH_HOME=str(tmp_path / "h"), **CLOSED_PORT)
    assert result.exit_code == 1, result.output
    assert f"port {port} on 127.0.0.1 is already in use" in result.output
    assert "--port" in result.output and "cannot connect" not in result.output


# --- 5. top-level --help shows whole summaries --------------------------------------------------


def test_top_level_help_shows_each_commands_whole_summary_on_a_narrow_terminal():
    result = invoke("--help", terminal_width=80)
    assert result.exit_code == 0, result.output
    listing = result.output.split("Commands:")[1]
    assert "..." not in listing
    squeezed = re.sub(r"\s+", "", listing)  # a summary may wrap onto the next lines
    for name, command in main.commands.items():
        summary = command.get_short_help_str(limit=1_000)
        assert summary.endswith("."), (name, summary)  # the whole first sentence
        assert re.sub(r"\s+", "", f"{name} {summary}") in squeezed, name


def test_definitions_that_do_not_load_are_one_line_unless_verbose(tmp_path, monkeypatch):
    import orchestration_pipeline.definitions as definitions

    def broken():
        raise ImportError("cannot import name 'x' from 'orchestration_pipeline.lib.ingestion.events'")

    monkeypatch.setattr(definitions, "defs", broken)
    home = tmp_path / "h"
    result = invoke("run", ORCH_HOME=str(home))
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith(
        "Error: the pipeline's Dagster definitions do not load: ImportError: cannot import"
    )
    assert "--verbose" in lines[0] and not home.exists()
    verbose = invoke("run", "--verbose", ORCH_HOME=str(home))
    assert isinstance(verbose.exception, ImportError)  # the traceback, for whoever asked for it
