"""The benchmark scripts still run: each on a tiny workload, its one JSON line read back.

Figures from runs this small mean nothing; what is checked is that every script works against
the current schema and API and reports the fields the README promises, consistently.
"""

import json
import subprocess
import sys

import pytest

from orchestration_pipeline_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def run_benchmark(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


@pytest.mark.db
def test_ingest_benchmark(pg_admin_dsn: str) -> None:
    out = run_benchmark(
        "ingest.py", "--dsn", pg_admin_dsn, "--events", "3000", "--sample", "100", "--parse-workers", "0"
    )
    assert out["events"] == 3000
    assert min(out["a_ingest_rows_per_s"], out["b_copy_rows_per_s"], out["c_insert_rows_per_s"]) > 0
    assert out["ratio_a_b"] == pytest.approx(out["a_ingest_rows_per_s"] / out["b_copy_rows_per_s"], rel=0.01)
    assert out["ratio_b_c"] == pytest.approx(out["b_copy_rows_per_s"] / out["c_insert_rows_per_s"], rel=0.01)
    assert len(out["c_samples_rows_per_s"]) == 3
    assert out["peak_rss_mb"] > 0


@pytest.mark.db
def test_audit_benchmark(pg_admin_dsn: str, server_mode: bool) -> None:
    out = run_benchmark(
        "audit.py",
        "--dsn",
        pg_admin_dsn,
        "--writers",
        "2",
        "--seconds",
        "0.3",
        "--rounds",
        "1",
        "--breakdown-transactions",
        "200",
    )
    assert out["baseline_tx_per_s"] > 0 and out["audited_tx_per_s"] > 0
    # every audited transaction of the run left one verified, sealed ledger row
    assert out["ledger_rows"] > 0 and out["chains"] >= 1 and out["checkpoints"] >= 1
    assert out["record_audit_tx_per_s"] > 0
    assert set(out["rounds_tx_per_s"]) == {"baseline", "audited", "record_audit"}
    cpu = out["cpu_us_per_tx"]
    assert set(cpu) == {"baseline", "plain_insert", "audited", "record_audit"}
    for variant in cpu.values():
        assert variant["client"] > 0
        if variant["server"] is not None:
            assert variant["total"] == pytest.approx(variant["client"] + variant["server"], abs=0.2)
    if cpu["baseline"]["server"] is None:  # a server on another machine: no /proc to read
        assert out["audited_cpu_overhead_pct"] is None
    else:
        assert out["audited_cpu_overhead_pct"] is not None


@pytest.mark.db
def test_reconcile_benchmark(pg_admin_dsn: str) -> None:
    out = run_benchmark("reconcile.py", "--dsn", pg_admin_dsn, "--tasks", "2000", "--events", "2000")
    assert out["drift_found"] == out["drift_planted"] > 0
    assert out["action"] == "repair" and out["rows_changed"] == out["drift_planted"]
    assert out["projector_events"] == 2000 and out["projector_events_per_s"] > 0


def test_emit_benchmark() -> None:
    out = run_benchmark("emit.py", "--calls", "200", "--warmup", "20")
    assert out["lines_published"] == out["lines_expected"] > 0
    assert out["tmp_leftovers"] == 0
    assert out["metric_us"]["p50"] <= out["metric_us"]["p99"] <= out["metric_us"]["max"]


def test_redaction_benchmark() -> None:
    out = run_benchmark("redaction.py", "--mib", "0.02", "--repeat", "1")
    assert out["benchmark"] == "redaction" and len(out["cases"]) >= 10
    assert out["worst_s_per_mib"] == max(c["s_per_mib"] for c in out["cases"].values())
    assert all(c["ratio"] is not None and c["baseline_s_per_mib"] > 0 for c in out["cases"].values())
