"""The README's first command, as a new user runs it: `orchestration-pipeline demo` on a fresh home.

It must end with every check evaluated, exactly one alert per seeded fault, and nothing else
alerting. (`--no-ui`: the test stops where the command would start serving the Dagster UI.)
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline_tests.conftest import clean_env

pytestmark = [pytest.mark.db, pytest.mark.slow]

# The demo's deliberate faults, each made to fail exactly one check.
SEEDED_FAULTS = {
    "raw_events:core_event_coverage": "a session whose task never ends",
    "raw_events:policy_violations_complete": "a policy violation without its file, policy and rule",
}


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "orch"
    yield home
    subprocess.run(
        [str(Path(sys.executable).parent / "orchestration-pipeline"), "down"],
        env=clean_env(ORCH_HOME=str(home)), capture_output=True, timeout=120,
    )  # fmt: skip


def test_demo_ends_with_one_alert_per_seeded_fault_and_nothing_else(home):
    demo = subprocess.run(
        [str(Path(sys.executable).parent / "orchestration-pipeline"), "demo", "--no-ui"],
        env=clean_env(ORCH_HOME=str(home), ORCH_EMBEDDER="hashing"),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    summary = re.search(r"(\d+) checks passed, (\d+) failed", demo.stdout)
    assert summary and int(summary[1]) >= 20, demo.stdout[-2000:]
    failed = set(re.findall(r"^check failed: (\S+) (\S+) \[", demo.stdout, re.M))
    assert {f"{asset}:{check}" for asset, check in failed} == set(SEEDED_FAULTS)
    url = re.search(r"ORCH_DATABASE_URL='?([^'\s]+)", _env(home))
    with connection(url[1]) as conn:
        alerts = conn.execute("SELECT subject FROM alerts WHERE resolved_at IS NULL").fetchall()
    assert sorted(a[0] for a in alerts) == sorted(SEEDED_FAULTS)
    assert "'orchestration-pipeline dev' opens the Dagster UI" in demo.stdout


def _env(home: Path) -> str:
    up = subprocess.run(
        [str(Path(sys.executable).parent / "orchestration-pipeline"), "up", "--env"],
        env=clean_env(ORCH_HOME=str(home)), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return up.stdout
