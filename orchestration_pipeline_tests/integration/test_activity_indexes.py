"""Every activity query the README shows reads an index on a partitioned events table (EXPLAIN)."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from orchestration_pipeline.lib.activity import ActivityFilter, activity_query
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db

README_QUERIES = {
    "agent and severity": ActivityFilter(agent_type="coder", severity="error", limit=20),
    "project (a room)": ActivityFilter(project_id="demo"),
    # a meaning is an expression over the producer's word: read newest first, within a time window
    "status meaning, last hour": ActivityFilter(
        status_meaning="failed", since=datetime.now(UTC) - timedelta(hours=1)
    ),
    "event type": ActivityFilter(event_type="policy_violation"),
}


def _events(n: int) -> list[dict]:
    statuses = ("completed", "in_progress", "SUCCESS", "FAILURE", "passed")
    out = []
    for i in range(n):
        agent = {"agent_type": ("coder", "reviewer", "planner")[i % 3], "agent_name": f"a{i % 11}",
                 "task_description": "t", "project_id": ("demo", "web", "infra", "ml")[i % 4]}  # fmt: skip
        out.append(
            make_event(
                "agent.progress" if i % 5 else "agent.completed",
                minutes_ago=(i % 600) / 2,
                session_id=f"s-{i % 97}",
                severity=("info", "warning", "error")[i % 3],
                status=statuses[i % len(statuses)],
                payload=agent,
            )
        )
    return out


def test_readme_activity_queries_use_an_index_on_the_partition_holding_the_rows(orch_dsn, tmp_path):
    with connection(orch_dsn) as conn:
        Ingestor(conn, parse_workers=0).ingest_paths([write_jsonl(tmp_path / "a.jsonl", _events(20_000))])
        conn.execute("ANALYZE events")
        busy = {
            r[0]
            for r in conn.execute(
                "SELECT tableoid::regclass::text, count(*) FROM events GROUP BY 1 HAVING count(*) > 1000"
            )
        }
        plans = {}
        for name, flt in README_QUERIES.items():
            sql, params = activity_query(flt)
            plans[name] = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))
    assert busy, "the events should fill at least one daily partition"
    for name, plan in plans.items():
        for partition in busy:
            scans = re.findall(rf"(\w[\w ]*Scan)(?: Backward)? (?:using \S+ )?on {partition}\b", plan)
            # a bitmap heap scan reads the rows a bitmap index scan found
            assert scans and all("Index" in s or s == "Bitmap Heap Scan" for s in scans), (
                f"{name}: {partition} is read by {scans}\n{plan}"
            )
