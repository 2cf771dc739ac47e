"""What an emit costs the caller, against hand-written ``json.dumps`` + ``file.write``, in one process.

    python benchmarks/emit.py [--calls 20000] [--warmup 2000]

Three workloads, timed per call with ``time.perf_counter_ns`` and interleaved in chunks of 1,000
calls so that machine noise hits all of them alike:

* ``baseline``: ``f.write(json.dumps(event) + "\\n")`` of a metric-shaped event (prebuilt dict) to
  a buffered text file in a temporary directory — the cheapest a script can log;
* ``metric``: ``writer.metric("rows_inserted", i, unit="rows", table="events")``;
* ``task``: an empty ``with writer.task(task_id):`` block (two events: task_start + task_end).

The writer uses its defaults (8 MiB / 60 s spools, fsync + rename on the background thread), so
spool rotations during the run are part of the measurement. Prints one JSON line with p50/p99/max
in µs, the p99 ratios to the baseline p99 (target: <= 5), the p50 ratios for context, and
``targets_met``: both p99 ratios <= 5 and every emitted line published, with no ``.tmp`` left.
Per-call p99s on a shared machine follow its load (reported as ``loadavg_1m``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestration_pipeline.emit import EventWriter  # noqa: E402

TARGET_RATIO = 5.0
CHUNK = 1000


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in µs."""
    index = min(len(sorted_ns) - 1, max(0, round(q / 100 * len(sorted_ns)) - 1))
    return sorted_ns[index] / 1000


def summary(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(percentile(ordered, 50), 2),
        "p99": round(percentile(ordered, 99), 2),
        "max": round(ordered[-1] / 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls per workload")
    parser.add_argument("--warmup", type=int, default=2_000, help="untimed calls per workload first")
    args = parser.parse_args(argv)
    clock = time.perf_counter_ns

    with tempfile.TemporaryDirectory(prefix="emit-bench-") as tmp:
        root = Path(tmp)
        event = {
            "event_id": str(uuid.uuid4()),
            "event_type": "metric",
            "occurred_at": datetime.now(UTC).isoformat(),
            "session_id": "bench-session",
            "source": "bench",
            "payload": {"name": "rows_inserted", "value": 1, "unit": "rows", "tags": {"table": "events"}},
        }
        handle = open(root / "baseline.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        writer = EventWriter(root / "landing", source="bench", session_id="bench-session")
        dumps, write, metric, task = json.dumps, handle.write, writer.metric, writer.task
        task_ids = [f"T-{i}" for i in range(args.calls + args.warmup)]

        def run_baseline(n: int, out: list[int] | None) -> None:
            for _ in range(n):
                t0 = clock()
                write(dumps(event) + "\n")
                t1 = clock()
                if out is not None:
                    out.append(t1 - t0)

        def run_metric(n: int, out: list[int] | None) -> None:
            for i in range(n):
                t0 = clock()
                metric("rows_inserted", i, unit="rows", table="events")
                t1 = clock()
                if out is not None:
                    out.append(t1 - t0)

        def run_task(n: int, out: list[int] | None, offset: int) -> None:
            for i in range(n):
                tid = task_ids[offset + i]
                t0 = clock()
                with task(tid):
                    pass
                t1 = clock()
                if out is not None:
                    out.append(t1 - t0)

        run_baseline(args.warmup, None)
        run_metric(args.warmup, None)
        run_task(args.warmup, None, 0)
        baseline: list[int] = []
        metrics: list[int] = []
        tasks: list[int] = []
        done = 0
        while done < args.calls:
            n = min(CHUNK, args.calls - done)
            run_baseline(n, baseline)
            run_metric(n, metrics)
            run_task(n, tasks, args.warmup + done)
            done += n

        close_t0 = clock()
        delivered = writer.close()
        close_ms = (clock() - close_t0) / 1e6
        handle.close()
        files = sorted((root / "landing").glob("*.jsonl"))
        lines = sum(p.read_bytes().count(b"\n") for p in files)
        leftovers = len(list((root / "landing").glob("*.tmp")))

    base, met, tsk = summary(baseline), summary(metrics), summary(tasks)
    metric_ratio = round(met["p99"] / base["p99"], 2)
    task_ratio = round(tsk["p99"] / base["p99"], 2)
    expected = 3 * (args.calls + args.warmup)  # metric: 1 line per call, task: 2
    result = {
        "benchmark": "emit",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # the p99s are sensitive to other load
        "calls": args.calls,
        "warmup": args.warmup,
        "metric_us": met,
        "task_block_us": tsk,
        "baseline_dumps_write_us": base,
        "metric_p99_over_baseline_p99": metric_ratio,
        "task_p99_over_baseline_p99": task_ratio,
        "metric_p50_over_baseline_p50": round(met["p50"] / base["p50"], 2),
        "task_p50_over_baseline_p50": round(tsk["p50"] / base["p50"], 2),
        "target_ratio": TARGET_RATIO,
        "close_ms": round(close_ms, 1),
        "files_published": len(files),
        "lines_published": lines,
        "lines_expected": expected,
        "tmp_leftovers": leftovers,
        "targets_met": bool(
            metric_ratio <= TARGET_RATIO
            and task_ratio <= TARGET_RATIO
            and delivered
            and lines == expected
            and not leftovers
        ),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
