"""`orchestration-pipeline emit`: shell harnesses emit events that ingestion accepts."""

import subprocess
import sys
from pathlib import Path

from orchestration_pipeline.lib.ingestion.envelope import ParsedEvent
from orchestration_pipeline.lib.ingestion.events import parse_line
from orchestration_pipeline.lib.ingestion.files import discover_files
from orchestration_pipeline_tests.conftest import clean_env

CLI = str(Path(sys.executable).parent / "orchestration-pipeline")


def _emit(landing: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "emit", *args, "--landing-dir", str(landing)],
        capture_output=True,
        text=True,
        env=clean_env(ORCH_SESSION_ID="S1", ORCH_SOURCE="build.sh"),
    )


def test_shell_emits_parse_and_pair(tmp_path):
    landing = tmp_path / "landing"
    artifact = tmp_path / "report.xml"
    artifact.write_text("<ok/>")
    runs = [
        _emit(landing, "task-start", "--task-id", "T1"),
        _emit(landing, "command-start", "--task-id", "T1", "-f", "command_id=c1"),
        _emit(
            landing,
            "command-end",
            "--task-id",
            "T1",
            "--duration-ms",
            "5",
            "-f",
            "command_id=c1",
            "-f",
            "exit_code=0",
        ),
        _emit(landing, "artifact", str(artifact), "--task-id", "T1"),
        _emit(landing, "metric", "-f", "name=rows", "-f", "value=42"),
        _emit(
            landing,
            "agent-started",
            "-f",
            "agent_type=coder",
            "-f",
            "agent_name=a1",
            "-f",
            "task_description=fix it",
            "--status",
            "started",
        ),
        _emit(landing, "task-end", "--task-id", "T1", "--duration-ms", "1200", "-f", "success=true"),
    ]
    assert [r.returncode for r in runs] == [0] * len(runs), [r.stderr for r in runs]
    events = [parse_line(line) for f in discover_files([landing]) for line in f.read_bytes().splitlines()]
    assert all(isinstance(e, ParsedEvent) for e in events), events
    by_type = {e.event_type: e for e in events}
    assert set(by_type) == {
        "task_start",
        "command_start",
        "command_end",
        "artifact_emit",
        "metric",
        "agent.started",
        "task_end",
    }
    assert {e.session_id for e in events} == {"S1"} and {e.source for e in events} == {"build.sh"}
    assert by_type["task_end"].duration_ms == 1200
    assert '"sha256"' in by_type["artifact_emit"].payload_json


def test_missing_field_exits_2_naming_it_and_writes_nothing(tmp_path):
    landing = tmp_path / "landing"
    result = _emit(landing, "task-end", "--task-id", "T1")
    assert result.returncode == 2
    assert "success" in result.stderr.splitlines()[-1]
    assert not landing.exists() or discover_files([landing]) == []


def test_unknown_type_lists_the_accepted_ones(tmp_path):
    result = _emit(tmp_path, "task-teleport")
    assert result.returncode == 2 and "task-start" in result.stderr
