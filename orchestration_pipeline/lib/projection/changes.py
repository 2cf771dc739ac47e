"""The change feed of the task projection: what changed, per task and field, when, and why.

Rows come from ``task_changes`` (sql/orchestration/0022_task_changes.sql): the projector records
``event`` changes, a reconciliation ``repair`` or ``rebuild`` changes, each under the id of its run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.lib.db import end_read

MAX_LIMIT = 1_000
CAUSES = ("event", "repair", "rebuild")


def list_changes(
    conn: psycopg.Connection,
    *,
    since: datetime | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    cause: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Changes newest first, filtered, paged; and how many match in all."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset}")
    if cause is not None and cause not in CAUSES:
        raise ValueError(f"cause must be one of {', '.join(CAUSES)}, not {cause!r}")
    clauses, params = ["true"], {}
    for column, value in (("run_id", run_id), ("task_id", task_id), ("cause", cause)):
        if value is not None:
            clauses.append(f"{column} = %({column})s")
            params[column] = value
    if since is not None:
        clauses.append("changed_at >= %(since)s")
        params["since"] = since
    where = " AND ".join(clauses)
    with conn.cursor(row_factory=dict_row) as cur:
        if run_id is not None:
            cur.execute("SELECT %s::uuid", (run_id,))  # a malformed id is an error naming it, not a 500
        rows = cur.execute(
            f"""SELECT change_id, run_id::text AS run_id, cause, task_id, field, before, after, changed_at
                FROM task_changes WHERE {where}
                ORDER BY changed_at DESC, change_id DESC LIMIT %(limit)s OFFSET %(offset)s""",
            {**params, "limit": limit, "offset": offset},
        ).fetchall()
        total = cur.execute(f"SELECT count(*) AS n FROM task_changes WHERE {where}", params).fetchone()["n"]
    end_read(conn)
    return rows, total


def runs_summary(conn: psycopg.Connection, *, since: datetime | None = None) -> list[dict[str, Any]]:
    """Per run: cause, when, how many tasks and field changes."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT run_id::text AS run_id, min(cause) AS cause, min(changed_at) AS first_change,
                      max(changed_at) AS last_change, count(DISTINCT task_id) AS tasks, count(*) AS changes
               FROM task_changes WHERE %(since)s::timestamptz IS NULL OR changed_at >= %(since)s
               GROUP BY run_id ORDER BY max(changed_at) DESC""",
            {"since": since},
        ).fetchall()
    end_read(conn)
    return rows
