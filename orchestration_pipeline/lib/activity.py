"""Agent and orchestration activity queries, served from ``events`` by the indexes in 0002.

>>> rows = query_activity(conn, ActivityFilter(agent_type="coder", severity="error", limit=20))
>>> stats = activity_stats(conn, ActivityFilter(project_id="demo"))

``severity`` and ``status`` filter by the word as stored; ``severity_meaning`` and
``status_meaning`` by what the word means (every synonym: ``status_meaning="failed"`` finds
``FAILURE``, ``error`` and ``failed``), through the synonym map of
:mod:`~orchestration_pipeline.lib.ingestion.status_words`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.ingestion.envelope import EVENT_TYPES
from orchestration_pipeline.lib.ingestion.status_words import (
    SEVERITY_MEANINGS,
    STATUS_MEANINGS,
    StatusWords,
    WordError,
    check_word,
    configured_status_words,
    meaning_sql,
)

MAX_LIMIT = 1000

_STATUS_MEANING = meaning_sql("status", "status_words")
_SEVERITY_MEANING = meaning_sql("severity", "severity_words")


@dataclass(frozen=True)
class ActivityFilter:
    """Filters for activity queries; every field is optional."""

    project_id: str | None = None
    agent_type: str | None = None
    event_type: str | None = None
    severity: str | None = None  # the word as stored
    status: str | None = None  # the word as stored
    severity_meaning: str | None = None  # one of SEVERITY_MEANINGS
    status_meaning: str | None = None  # one of STATUS_MEANINGS
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (
            ("event_type", EVENT_TYPES),
            ("severity_meaning", SEVERITY_MEANINGS),
            ("status_meaning", STATUS_MEANINGS),
        ):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
        for name in ("severity", "status"):
            if getattr(self, name) is not None:
                try:
                    check_word(getattr(self, name), name)
                except WordError as exc:
                    raise ValueError(f"{exc} (words are matched as stored)") from None
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if self.offset < 0:
            raise ValueError("offset must be >= 0")
        if self.since and self.until and self.since > self.until:
            raise ValueError("since is after until")

    def where(self, words: StatusWords | None = None) -> tuple[str, dict[str, Any]]:
        """The SQL condition and its parameters (the synonym maps among them, for meanings)."""
        clauses, params = ["true"], _word_params(words)
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
        for name, meaning in (("severity_meaning", _SEVERITY_MEANING), ("status_meaning", _STATUS_MEANING)):
            if getattr(self, name) is not None:
                clauses.append(f"{meaning} = %({name})s")
                params[name] = getattr(self, name)
        if self.since is not None:
            clauses.append("occurred_at >= %(since)s")
            params["since"] = self.since
        if self.until is not None:
            clauses.append("occurred_at < %(until)s")
            params["until"] = self.until
        return " AND ".join(clauses), params


def _word_params(words: StatusWords | None) -> dict[str, Any]:
    words = words or configured_status_words()
    return {"status_words": Jsonb(words.status.as_json()), "severity_words": Jsonb(words.severity.as_json())}


def query_activity(
    conn: psycopg.Connection, flt: ActivityFilter, status_words: StatusWords | None = None
) -> list[dict[str, Any]]:
    """Matching events, newest first, paged by ``limit``/``offset``."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(*activity_query(flt, status_words)).fetchall()
    end_read(conn)
    return rows


def activity_query(flt: ActivityFilter, status_words: StatusWords | None = None) -> tuple[str, dict[str, Any]]:
    """The SQL of :func:`query_activity` and its parameters (``EXPLAIN`` it to see the index it uses)."""
    where, params = flt.where(status_words)
    return (
        f"""SELECT event_id, event_type, occurred_at, session_id, task_id, source, stage, severity, status,
                   duration_ms, payload
            FROM events WHERE {where}
            ORDER BY occurred_at DESC, event_id LIMIT %(limit)s OFFSET %(offset)s""",
        {**params, "limit": flt.limit, "offset": flt.offset},
    )


# A task_end's outcome: what its status word means ('unknown' for a word the map lacks), or
# payload.success when it has no word (as the task projection reads it).
_TASK_OUTCOME = f"""CASE WHEN status IS NULL
                         THEN CASE WHEN payload->>'success' = 'true' THEN 'succeeded' ELSE 'failed' END
                         ELSE coalesce({_STATUS_MEANING}, 'unknown') END"""


def activity_stats(
    conn: psycopg.Connection, flt: ActivityFilter | None = None, status_words: StatusWords | None = None
) -> dict[str, Any]:
    """Totals; counts by severity and by status (by meaning; a word without one as written);
    success rate per agent (completed / (completed + failed)); and per producer (``source``) the
    outcomes of its ``task_end`` events and their success rate (succeeded / (succeeded + failed))."""
    where, params = (flt or ActivityFilter()).where(status_words)
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(f"SELECT count(*) AS n FROM events WHERE {where}", params).fetchone()["n"]
        by_severity = {
            r["k"]: r["n"]
            for r in cur.execute(
                f"SELECT coalesce({_SEVERITY_MEANING}, severity, 'unset') AS k, count(*) AS n "
                f"FROM events WHERE {where} GROUP BY 1 ORDER BY 1",
                params,
            )
        }
        by_status = {
            r["k"]: r["n"]
            for r in cur.execute(
                f"SELECT coalesce({_STATUS_MEANING}, status, 'unset') AS k, count(*) AS n "
                f"FROM events WHERE {where} GROUP BY 1 ORDER BY 1",
                params,
            )
        }
        agents = cur.execute(
            f"""SELECT payload->>'agent_type' AS agent_type, payload->>'agent_name' AS agent_name,
                       count(*) FILTER (WHERE event_type = 'agent.completed') AS completed,
                       count(*) FILTER (WHERE event_type = 'agent.error' OR {_STATUS_MEANING} = 'failed') AS failed,
                       count(*) AS events
                FROM events WHERE {where} AND event_type LIKE 'agent.%%'
                GROUP BY 1, 2 ORDER BY 1, 2""",
            params,
        ).fetchall()
        sources = cur.execute(
            f"""SELECT source, count(*) AS task_ends,
                       count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
                       count(*) FILTER (WHERE outcome = 'failed') AS failed,
                       count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled,
                       count(*) FILTER (WHERE outcome = 'skipped') AS skipped,
                       count(*) FILTER (WHERE outcome = 'unknown') AS unknown
                FROM (SELECT source, {_TASK_OUTCOME} AS outcome
                      FROM events WHERE {where} AND event_type = 'task_end') AS ends
                GROUP BY 1 ORDER BY 1 NULLS LAST""",
            params,
        ).fetchall()
    end_read(conn)
    for a in agents:
        finished = a["completed"] + a["failed"]
        a["success_rate"] = round(a["completed"] / finished, 4) if finished else None
    for s in sources:
        finished = s["succeeded"] + s["failed"]
        s["success_rate"] = round(s["succeeded"] / finished, 4) if finished else None
    return {
        "total": total,
        "by_severity": by_severity,
        "by_status": by_status,
        "agents": agents,
        "sources": sources,
    }
