"""Agent and orchestration activity queries, served from ``events`` by the indexes in 0002.

>>> rows = query_activity(conn, ActivityFilter(agent_type="coder", severity="error", limit=20))
>>> stats = activity_stats(conn, ActivityFilter(project_id="demo"))
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.ingestion.events import EVENT_TYPES, SEVERITIES, STATUSES

MAX_LIMIT = 1000


@dataclass(frozen=True)
class ActivityFilter:
    """Filters for activity queries; every field is optional."""

    project_id: str | None = None
    agent_type: str | None = None
    event_type: str | None = None
    severity: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("event_type", EVENT_TYPES), ("severity", SEVERITIES), ("status", STATUSES)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if self.offset < 0:
            raise ValueError("offset must be >= 0")
        if self.since and self.until and self.since > self.until:
            raise ValueError("since is after until")

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses, params = ["true"], {}
        if self.project_id is not None:
            clauses.append("payload ? 'project_id' AND payload->>'project_id' = %(project_id)s")
            params["project_id"] = self.project_id
        if self.agent_type is not None:
            clauses.append("event_type LIKE 'agent.%%' AND payload->>'agent_type' = %(agent_type)s")
            params["agent_type"] = self.agent_type
        for name in ("event_type", "severity", "status"):
            if getattr(self, name) is not None:
                clauses.append(f"{name} = %({name})s")
                params[name] = getattr(self, name)
        if self.since is not None:
            clauses.append("occurred_at >= %(since)s")
            params["since"] = self.since
        if self.until is not None:
            clauses.append("occurred_at < %(until)s")
            params["until"] = self.until
        return " AND ".join(clauses), params


def query_activity(conn: psycopg.Connection, flt: ActivityFilter) -> list[dict[str, Any]]:
    """Matching events, newest first, paged by ``limit``/``offset``."""
    where, params = flt.where()
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""SELECT event_id, event_type, occurred_at, session_id, task_id, source, stage, severity, status,
                       duration_ms, payload
                FROM events WHERE {where}
                ORDER BY occurred_at DESC, event_id LIMIT %(limit)s OFFSET %(offset)s""",
            {**params, "limit": flt.limit, "offset": flt.offset},
        ).fetchall()
    end_read(conn)
    return rows


def activity_stats(conn: psycopg.Connection, flt: ActivityFilter | None = None) -> dict[str, Any]:
    """Totals, counts by severity, and success rate per agent (completed / (completed + error))."""
    where, params = (flt or ActivityFilter()).where()
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(f"SELECT count(*) AS n FROM events WHERE {where}", params).fetchone()["n"]
        by_severity = {
            r["severity"]: r["n"]
            for r in cur.execute(
                f"SELECT coalesce(severity, 'unset') AS severity, count(*) AS n FROM events WHERE {where} GROUP BY 1",
                params,
            )
        }
        agents = cur.execute(
            f"""SELECT payload->>'agent_type' AS agent_type, payload->>'agent_name' AS agent_name,
                       count(*) FILTER (WHERE event_type = 'agent.completed') AS completed,
                       count(*) FILTER (WHERE event_type = 'agent.error' OR status = 'failed') AS failed,
                       count(*) AS events
                FROM events WHERE {where} AND event_type LIKE 'agent.%%'
                GROUP BY 1, 2 ORDER BY 1, 2""",
            params,
        ).fetchall()
    end_read(conn)
    for a in agents:
        finished = a["completed"] + a["failed"]
        a["success_rate"] = round(a["completed"] / finished, 4) if finished else None
    return {"total": total, "by_severity": by_severity, "agents": agents}
