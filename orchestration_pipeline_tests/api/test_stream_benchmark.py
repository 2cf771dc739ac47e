"""``benchmarks/stream.py`` still runs, on a tiny workload: its one JSON line, read back.

Figures from a run this small mean little; what is checked is that every client got every event
exactly once, in order, and that the line reports what the README promises, consistently.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestration_pipeline_tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.db, pytest.mark.slow]


def test_stream_benchmark_delivers_every_event_to_every_client_once(pg_admin_dsn):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "stream.py"),
            *("--dsn", pg_admin_dsn, "--clients", "3", "--rate", "20", "--seconds", "2", "--drain-s", "20"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout
    out = json.loads(lines[0])
    assert (out["clients"], out["files"], out["events"]) == (3, 20, 40)
    assert (out["lost"], out["unexpected"], out["repeated"], out["out_of_order"]) == (0, 0, 0, 0)
    assert out["deliveries"] == out["clients"] * out["events"]
    latency = out["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["max"]
    assert out["server_cpu_pct_of_one_core"] > 0 and out["server_peak_rss_mb"] > 0
    assert out["hub"]["reads"] > 0 and out["hub"]["notifications"] > 0
