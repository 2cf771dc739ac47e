"""What executions did: the summary cards and the newest attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.lib.db import end_read, require_schema
from orchestration_pipeline.lib.executions.policies import EXECUTION_TABLES


def execution_summary(conn: psycopg.Connection) -> dict[str, Any]:
    """Policy switches and execution outcomes, for the decision_execution_summary asset."""
    policies = conn.execute(
        """SELECT count(*), count(*) FILTER (WHERE enabled), count(*) FILTER (WHERE enabled AND dry_run),
                  count(*) FILTER (WHERE enabled AND NOT dry_run)
           FROM policies"""
    ).fetchone()
    executions = conn.execute(
        """SELECT max(executed_at),
                  count(*) FILTER (WHERE state = 'succeeded' AND NOT dry_run),
                  count(*) FILTER (WHERE state = 'failed' AND NOT dry_run),
                  coalesce(sum(duplicate_skips), 0),
                  count(*) FILTER (WHERE dry_run),
                  count(*) FILTER (WHERE state = 'pending'),
                  count(*) FILTER (WHERE state = 'pending' AND lease_expires_at < now())
           FROM decision_executions"""
    ).fetchone()
    end_read(conn)
    last: datetime | None = executions[0]
    return {
        "total": policies[0],
        "enabled": policies[1],
        "dry_run_on": policies[2],
        "live_on": policies[3],
        "last_execution_at": last.isoformat() if last else None,
        "succeeded": executions[1],
        "failed": executions[2],
        "duplicate_skipped": int(executions[3]),
        "simulated": executions[4],
        "pending": executions[5],
        "stale_pending": executions[6],
    }


def list_executions(
    conn: psycopg.Connection, *, policy_id: str | None = None, state: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Recent executions, newest first."""
    require_schema(conn, EXECUTION_TABLES, record_decision=False)
    clauses, params = [], []
    if policy_id:
        clauses.append("policy_id = %s")
        params.append(policy_id)
    if state:
        clauses.append("state = %s")
        params.append(state)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""SELECT execution_id, policy_id, effect, target_ref, dry_run, state, attempt, error_text, action_hash,
                       claimed_at, executed_at, duplicate_skips, result
                FROM decision_executions {where} ORDER BY execution_id DESC LIMIT %s""",
            [*params, limit],
        ).fetchall()
    end_read(conn)
    return rows
