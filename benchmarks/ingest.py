"""Ingestion throughput against raw COPY and row-at-a-time INSERT, in one process.

    python benchmarks/ingest.py [--events 1000000] [--min-file-mb 1024] [--dsn postgresql://...]

(a) end-to-end ``Ingestor`` on a generated JSON-lines file (parse, validate, redact, dedupe, COPY);
(b) raw psycopg COPY of the very same rows (exported from ``events``) into a same-shaped table;
(c) row-at-a-time autocommit INSERT of a 5,000-row sample into a same-shaped table (median of 3);
(d) COPY of the same events into a lean table (the event id as primary key, the event as jsonb).
Prints one JSON line. Targets: a/b >= 0.6, a/c >= 20, a/d >= 0.45, peak RSS < 500 MB (also for one 1 GB file:
``--min-file-mb 1024``). ``ratio_b_c`` is the ceiling of a/c on the machine at hand: ingestion
ends in a COPY of these rows into a table of this shape, so a cannot beat b, while c follows the
disk's commit latency rather than the CPU. Without --dsn an embedded PostgreSQL is started in a temporary directory;
the generated file and that directory are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from _scratch import Scratch

from orchestration_pipeline.lib.db import connection, migrate
from orchestration_pipeline.lib.ingestion.ingest import Ingestor

HERE = Path(__file__).resolve().parent


def generate(path: Path, n: int, seed: int = 1, min_bytes: int = 0) -> tuple[int, int]:
    """Write ``n`` realistic, distinct events, or more until the file has ``min_bytes``;
    returns (events, file size in bytes)."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=1)
    agent = {
        "agent_type": "coder",
        "agent_name": "agent-7",
        "task_description": "refactor the ingestion module",
        "project_id": "proj-42",
    }
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        i = -1
        while (i := i + 1) < n or written < min_bytes:
            kind = i % 10
            session = f"sess-{i // 50:07d}"
            task = f"T-{i // 10:08d}"
            at = (start + timedelta(milliseconds=i * 50)).isoformat()
            base = {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "occurred_at": at,
                "session_id": session,
                "task_id": task,
                "source": "bench-orchestrator",
            }
            if kind == 0:
                ev = {
                    **base,
                    "event_type": "task_start",
                    "status": "started",
                    "payload": {"title": f"task {i}"},
                }
            elif kind == 1:
                ev = {
                    **base,
                    "event_type": "task_end",
                    "status": "succeeded",
                    "duration_ms": 1200,
                    "payload": {"success": True, "duration_ms": 1200},
                }
            elif kind in (2, 3):
                ev = {
                    **base,
                    "event_type": "metric",
                    "payload": {
                        "name": "rows_inserted",
                        "value": rng.randint(0, 9999),
                        "unit": "rows",
                        "tags": {"table": "events"},
                    },
                }
            elif kind == 4:
                ev = {
                    **base,
                    "event_type": "decision",
                    "stage": "plan",
                    "payload": {
                        "rationale": "selected System provider after cache miss",
                        "provider": "System",
                    },
                }
            elif kind == 5:
                ev = {
                    **base,
                    "event_type": "command_start",
                    "payload": {"command_id": f"c{i}", "command": "pytest -q"},
                }
            elif kind == 6:
                ev = {
                    **base,
                    "event_type": "command_end",
                    "payload": {"command_id": f"c{i - 1}", "exit_code": 0, "duration_ms": 830},
                }
            else:
                ev = {
                    **base,
                    "event_type": "agent.progress",
                    "status": "in_progress",
                    "severity": "info",
                    "payload": {**agent, "progress": round(rng.random(), 3)},
                }
            written += out.write(json.dumps(ev)) + out.write("\n")  # ASCII: characters are bytes
    return i, path.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--min-file-mb", type=float, default=0, help="generate more events until the file has this size"
    )
    parser.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded, temporary)")
    parser.add_argument(
        "--sample", type=int, default=5_000, help="rows for the row-at-a-time INSERT baseline"
    )
    parser.add_argument(
        "--parse-workers",
        type=int,
        default=None,
        help="parse worker processes (default: cores - 1; 0 = in-process)",
    )
    args = parser.parse_args()

    scratch = Scratch.open(args.dsn, "orchestration")
    work, dsn = scratch.work, scratch.dsns["orchestration"]
    try:
        data = work / "events.jsonl"
        t0 = time.perf_counter()
        events, size = generate(data, args.events, min_bytes=int(args.min_file_mb * 1024 * 1024))
        gen_s = time.perf_counter() - t0
        with connection(dsn) as conn:
            migrate(conn, "orchestration")
            conn.execute((HERE / "ingest_baseline.sql").read_text())
            conn.commit()

            # (a) end to end
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0 = time.perf_counter()
            ingestor = Ingestor(conn, parse_workers=args.parse_workers)
            summary = ingestor.ingest_paths([data]).as_dict()
            ingest_s = time.perf_counter() - t0
            peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            # parse workers are separate processes; RUSAGE_CHILDREN has the largest one's peak
            worker_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            workers = ingestor.parse_workers
            assert summary["balanced"] and summary["accepted"] == events, summary

            # (b) raw COPY of the same rows
            dump = work / "events.copy"
            columns = (
                "event_id, event_type, occurred_at, session_id, task_id, source, stage, severity, status, "
                "duration_ms, payload, received_at, source_file, source_line"
            )
            with (
                open(dump, "wb") as out,
                conn.cursor().copy(f"COPY (SELECT {columns} FROM events) TO STDOUT") as copy,
            ):
                for chunk in copy:
                    out.write(chunk)
            lean_dump = work / "events_lean.copy"
            with (
                open(lean_dump, "wb") as out,
                conn.cursor().copy("COPY (SELECT event_id, to_jsonb(e) FROM events e) TO STDOUT") as copy,
            ):
                for chunk in copy:
                    out.write(chunk)
            conn.commit()
            t0 = time.perf_counter()
            with (
                conn.cursor().copy(f"COPY bench_events_copy ({columns}) FROM STDIN") as copy,
                open(dump, "rb") as src,
            ):
                while chunk := src.read(1 << 20):
                    copy.write(chunk)
            conn.commit()
            copy_s = time.perf_counter() - t0

            # (d) COPY of the same events into a lean table: the event id as primary key, the event as jsonb
            t0 = time.perf_counter()
            with (
                conn.cursor().copy("COPY bench_events_lean (event_id, event) FROM STDIN") as copy,
                open(lean_dump, "rb") as src,
            ):
                while chunk := src.read(1 << 20):
                    copy.write(chunk)
            conn.commit()
            lean_s = time.perf_counter() - t0

        # (c) row-at-a-time autocommit INSERT of a sample. Each row waits for its own commit, so
        # the rate follows the disk's flush latency, which wanders: the median of three samples.
        with connection(dsn, autocommit=True) as conn:
            rows = conn.execute(f"SELECT {columns} FROM events LIMIT %s", (args.sample,)).fetchall()
            placeholders = ", ".join(["%s"] * 14)
            c_samples = []
            for _ in range(3):
                conn.execute("TRUNCATE bench_events_insert")
                t0 = time.perf_counter()
                for row in rows:
                    conn.execute(
                        f"INSERT INTO bench_events_insert ({columns}) VALUES ({placeholders})",
                        (*row[:10], psycopg.types.json.Jsonb(row[10]), *row[11:]),
                    )
                c_samples.append(len(rows) / (time.perf_counter() - t0))

        a = events / ingest_s
        b = events / copy_s
        c = statistics.median(c_samples)
        d = events / lean_s
        print(
            json.dumps(
                {
                    "benchmark": "ingest",
                    "events": events,
                    "file_mb": round(size / 1e6, 1),
                    "generate_s": round(gen_s, 2),
                    "a_ingest_s": round(ingest_s, 2),
                    "a_ingest_rows_per_s": round(a),
                    "b_copy_rows_per_s": round(b),
                    "c_insert_rows_per_s": round(c),
                    "c_samples_rows_per_s": [round(x) for x in c_samples],
                    "d_lean_copy_rows_per_s": round(d),
                    "ratio_a_d": round(a / d, 3),
                    "ratio_a_b": round(a / b, 3),
                    "ratio_a_c": round(a / c, 1),
                    "ratio_b_c": round(b / c, 1),
                    "peak_rss_mb": round(peak_rss_mb, 1),
                    "peak_rss_parse_worker_mb": round(worker_rss_mb, 1),
                    "peak_rss_total_mb": round(peak_rss_mb + worker_rss_mb * workers, 1),
                    "rss_before_ingest_mb": round(rss_before / 1024, 1),
                    "write_latency_p95_ms": summary["telemetry"]["DatabaseWriteLatency_p95_ms"],
                    "targets_met": a / b >= 0.6
                    and a / c >= 20
                    and a / d >= 0.45
                    and peak_rss_mb + worker_rss_mb * workers < 500,
                }
            )
        )
    finally:
        scratch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
