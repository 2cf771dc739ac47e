"""`orchestration-pipeline emit --status/--severity`: a harness's own words, as ingestion takes them."""

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
        env=clean_env(ORCH_SESSION_ID="S1", ORCH_SOURCE="deploy.ps1"),
    )


def test_a_harness_writes_its_own_words_and_agent_types_keep_their_enums(tmp_path):
    landing = tmp_path / "landing"
    ok = _emit(
        landing, "task-end", "--task-id", "T1", "--duration-ms", "5", "-f", "success=true",
        "--status", "SUCCESS", "--severity", "Information",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    (written,) = discover_files([landing])
    event = parse_line(written.read_bytes().rstrip(b"\n"))
    assert isinstance(event, ParsedEvent) and (event.status, event.severity) == ("SUCCESS", "Information")

    too_long = _emit(landing, "metric", "-f", "name=m", "-f", "value=1", "--status", "x" * 65)
    agent = _emit(
        landing, "agent-paused", "-f", "agent_type=coder", "-f", "agent_name=a", "-f", "task_description=t",
        "--status", "SUCCESS",
    )  # fmt: skip
    assert (too_long.returncode, agent.returncode) == (2, 2)
    assert "limit is 64" in too_long.stderr and "paused" in agent.stderr
    assert len(discover_files([landing])) == 1  # nothing more written
