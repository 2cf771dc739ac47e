"""Reconciliation and projector speed, against merely reading both sides, in one process.

    python benchmarks/reconcile.py [--tasks 1000000] [--drift 0.01] [--events 500000] [--dsn postgresql://...]

Builds a Tasks DB with ``--tasks`` tasks and a task_projection that agrees with it except for
``--drift`` of the tasks (a third missing from the projection, a third unknown to the Tasks DB,
a third with another status). Then, in the same run:

(1) read both sides: plain COPY TO of ``tasks`` and of ``task_projection``, row by row;
(2) reconcile: the full ``reconcile()`` (stream, merge, report, repair, audit, metrics);
(3) project ``--events`` task events from ``events`` into the projection: ``--events-per-task``
    of them per task (start, agent activity, a decision, end), committed 5,000 at a time as
    ingestion commits a file at a time, so a batch of 50,000 touches about 50,000 / N tasks.

Prints one JSON line. Targets: reconcile / read <= 3, projector >= 50,000 events/s.
Without --dsn an embedded PostgreSQL is started in a temporary directory.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from _scratch import Scratch
from psycopg import sql

from orchestration_pipeline.lib.db import connection, migrate
from orchestration_pipeline.lib.projection.drift import AuditContext, ReconcileSettings, reconcile
from orchestration_pipeline.lib.projection.projector import enable_projector_writes, project_events

TASK_STATUSES = [("todo", "pending"), ("in_progress", "running"), ("done", "succeeded"), ("failed", "failed")]


def _copy_in(conn, statement: str, lines) -> None:
    buf = io.StringIO()
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for n, line in enumerate(lines, 1):
            buf.write(line)
            if n % 50_000 == 0:
                copy.write(buf.getvalue())
                buf = io.StringIO()
        copy.write(buf.getvalue())


def build_world(orch_dsn: str, tasks_dsn: str, n: int, drift: float, seed: int = 7) -> dict[str, int]:
    """Fill both sides; returns the drift planted per class."""
    rng = random.Random(seed)
    old = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    planted = {"missing_in_projection": 0, "missing_in_tasks": 0, "status_mismatch": 0}
    task_rows, projection_rows = [], []
    for i in range(n):
        task_id = f"T-{i:09d}"
        tasks_status, projected = TASK_STATUSES[i % len(TASK_STATUSES)]
        roll = rng.random()
        if roll < drift / 3:
            planted["missing_in_projection"] += 1
            task_rows.append(f"{task_id}\ttask {i}\t{tasks_status}\t3\t[]\t{old}\n")
            continue
        if roll < 2 * drift / 3:
            planted["missing_in_tasks"] += 1
            projection_rows.append(f"{task_id}\ttask {i}\t{projected}\t{old}\t3\t[]\t{old}\n")
            continue
        if roll < drift:
            planted["status_mismatch"] += 1
            projected = "blocked"
        task_rows.append(f"{task_id}\ttask {i}\t{tasks_status}\t3\t[]\t{old}\n")
        projection_rows.append(f"{task_id}\ttask {i}\t{projected}\t{old}\t3\t[]\t{old}\n")
    with connection(tasks_dsn) as conn:
        _copy_in(
            conn, "COPY tasks (task_id, title, status, priority, tags, updated_at) FROM STDIN", task_rows
        )
        conn.commit()
    with connection(orch_dsn) as conn:
        with conn.transaction():
            enable_projector_writes(conn)
            _copy_in(
                conn,
                "COPY task_projection (task_id, title, status, last_status_ts, priority, tags_json, last_event_ts) "
                "FROM STDIN",
                projection_rows,
            )
    for dsn, table in ((tasks_dsn, "tasks"), (orch_dsn, "task_projection")):
        with connection(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
    return planted


def read_both_sides(orch_dsn: str, tasks_dsn: str) -> tuple[float, int]:
    """Plain COPY TO of each side, row by row: the floor any comparison has to pay."""
    rows = 0
    t0 = time.perf_counter()
    for dsn, table in ((tasks_dsn, "tasks"), (orch_dsn, "task_projection")):
        with connection(dsn) as conn, conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(table))) as copy:
                for _row in copy:
                    rows += 1
    return time.perf_counter() - t0, rows


# One task's life in events: start, agent activity and a decision, end.
TASK_LIFE = (
    ("task_start", "{}"),
    ("agent.started", '{"agent_type": "coder", "agent_name": "a", "task_description": "t"}'),
    ("decision", '{"rationale": "retry with a larger runner"}'),
    ("agent.completed", '{"agent_type": "coder", "agent_name": "a", "task_description": "t"}'),
    ("task_end", '{"success": true, "duration_ms": 1}'),
)


def insert_task_events(orch_dsn: str, n_events: int, n_tasks: int, events_per_task: int) -> None:
    """``n_events`` task events for existing tasks, ``events_per_task`` per task, into ``events``."""
    life = [TASK_LIFE[0], *TASK_LIFE[1 : 1 + max(0, events_per_task - 2)], TASK_LIFE[-1]][:events_per_task]
    start = datetime.now(UTC) - timedelta(hours=2)
    lines = []
    for i in range(n_events):
        task_id = f"T-{(i // len(life)) % n_tasks:09d}"
        at = (start + timedelta(milliseconds=i)).isoformat()
        event_type, payload = life[i % len(life)]
        lines.append(f"{uuid.uuid4()}\t{event_type}\t{at}\ts-{i // 20}\t{task_id}\t{payload}\n")
    with connection(orch_dsn) as conn:
        # one transaction per 5,000 events, as ingestion commits one file (a few sessions) at a time
        for first in range(0, len(lines), 5_000):
            _copy_in(
                conn,
                "COPY events (event_id, event_type, occurred_at, session_id, task_id, payload) FROM STDIN",
                lines[first : first + 5_000],
            )
            conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE events")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--drift", type=float, default=0.01, help="share of tasks that drift")
    parser.add_argument("--events", type=int, default=500_000, help="task events for the projector figure")
    parser.add_argument(
        "--events-per-task",
        type=int,
        default=5,
        help="2 = start and end only; 5 adds agent activity and a decision",
    )
    parser.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded, temporary)")
    args = parser.parse_args()

    scratch = Scratch.open(args.dsn, "orchestration", "tasks")
    dsns = scratch.dsns
    try:
        for target, dsn in dsns.items():
            with connection(dsn) as conn:
                migrate(conn, target)
        t0 = time.perf_counter()
        planted = build_world(dsns["orchestration"], dsns["tasks"], args.tasks, args.drift)
        build_s = time.perf_counter() - t0

        read_s, rows_read = read_both_sides(dsns["orchestration"], dsns["tasks"])

        audit = AuditContext(actor="benchmark", request_id=str(uuid.uuid4()))
        settings = ReconcileSettings(repair_max_rows=max(10_000, int(args.tasks * args.drift * 1.2)))
        with connection(dsns["orchestration"]) as orch, connection(dsns["tasks"]) as tasks:
            t0 = time.perf_counter()
            report = reconcile(orch, tasks, audit, settings)
            reconcile_s = time.perf_counter() - t0

        insert_task_events(dsns["orchestration"], args.events, args.tasks, args.events_per_task)
        with connection(dsns["orchestration"]) as orch, connection(dsns["tasks"]) as tasks:
            run = project_events(orch, tasks)
        assert run.events_applied == args.events, run.as_dict()

        body = report.as_dict()
        print(
            json.dumps(
                {
                    "benchmark": "reconcile",
                    "tasks": args.tasks,
                    "drift_planted": sum(planted.values()),
                    "drift_found": body["drift_count"],
                    "action": body["action"],
                    "rows_changed": body["rows_changed"],
                    "build_s": round(build_s, 2),
                    "read_both_sides_s": round(read_s, 3),
                    "rows_read": rows_read,
                    "reconcile_s": round(reconcile_s, 3),
                    "compare_s": body["compare_s"],
                    "ratio_reconcile_read": round(reconcile_s / read_s, 2),
                    "projector_events": run.events_applied,
                    "projector_events_per_task": args.events_per_task,
                    "projector_tasks_updated": run.tasks_updated,
                    "projector_s": round(run.duration_s, 2),
                    "projector_events_per_s": round(run.events_per_s),
                    "targets_met": reconcile_s / read_s <= 3
                    and run.events_per_s >= 50_000
                    and body["drift_count"] == sum(planted.values()),
                }
            )
        )
    finally:
        scratch.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
