"""SIGKILL the task projector mid-run, then rerun: every event is applied exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.projection.projector import project_events, projection_lag
from orchestration_pipeline_tests.conftest import REPO_ROOT, clean_env

pytestmark = [pytest.mark.db, pytest.mark.slow]

CHILD = r"""
import sys, time
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.projection.projector import project_events

def progress(run):
    print("BATCH", run.events_applied, flush=True)
    time.sleep(0.2)  # the kill lands between, or inside, batches

with connection(sys.argv[1]) as orch, connection(sys.argv[2]) as tasks:
    project_events(orch, tasks, batch_events=500, progress=progress)
print("DONE", flush=True)
"""


def test_killed_projector_reruns_without_skipping_or_doubling(orch_dsn, tasks_dsn):
    tasks = 3000
    start = datetime.now(UTC) - timedelta(hours=1)
    with connection(orch_dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY events (event_id, event_type, occurred_at, task_id, payload) FROM STDIN") as copy:
            for i in range(tasks):
                at = start + timedelta(milliseconds=i)
                copy.write_row((uuid.uuid4(), "task_start", at, f"t{i}", "{}"))
                copy.write_row(
                    (uuid.uuid4(), "task_end", at + timedelta(seconds=1), f"t{i}", '{"success": true}')
                )
        conn.commit()

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, orch_dsn, tasks_dsn],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=clean_env(),
    )
    try:
        seen = [child.stdout.readline() for _ in range(3)]
        assert all(line.startswith("BATCH") for line in seen), seen
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()

    with connection(orch_dsn) as orch, connection(tasks_dsn) as conn:
        partial = orch.execute("SELECT events_applied FROM projection_checkpoints").fetchone()[0]
        orch.rollback()
        assert 0 < partial < 2 * tasks  # the kill left work to do
        rerun = project_events(orch, conn)
        applied, statuses = orch.execute(
            "SELECT (SELECT events_applied FROM projection_checkpoints), "
            "(SELECT array_agg(DISTINCT status) FROM task_projection)"
        ).fetchone()
        rows = orch.execute("SELECT count(*) FROM task_projection").fetchone()[0]
        orch.rollback()
        assert rerun.events_applied == 2 * tasks - partial
        assert applied == 2 * tasks and rows == tasks and statuses == ["succeeded"]
        assert projection_lag(orch) == 0
