"""Repairing ``task_projection`` from the Tasks DB: the drifted rows in place, or a rebuild.

At or below ``repair_max_rows`` drifted tasks, only those rows are repaired; above it the
projection is rebuilt into a shadow table from events plus the Tasks DB and swapped in, in one
transaction. Either way the Tasks DB wins: a repaired row takes the mapped authoritative status,
stamped no earlier than the newest status event already applied, so a replayed old event cannot
undo the repair. :mod:`~orchestration_pipeline.lib.projection.drift` decides which, and records it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.audit.ledger import record_audit
from orchestration_pipeline.lib.projection.projector import (
    PROJECTION,
    TASK_EVENT_TYPES,
    commit_horizon,
    enable_projector_writes,
    label_changes,
    lock_checkpoint,
    stage_tasks,
)

_EVENT_STATE = """
SELECT task_id,
       max(occurred_at) AS last_event_ts,
       max(occurred_at) FILTER (WHERE event_type IN ('task_start', 'task_end')) AS last_status_event_ts
FROM events
WHERE task_id IS NOT NULL AND event_type = ANY(%(types)s) {only}
GROUP BY task_id
"""

# Rows derived from the staged Tasks DB rows plus the events: the Tasks DB wins the status.
_DERIVED_ROWS = f"""
SELECT h.task_id, h.title, coalesce(m.projection_status, h.status) AS status,
       greatest(h.updated_at, e.last_status_event_ts, p.last_status_ts) AS last_status_ts,
       h.priority, coalesce(h.tags, '[]'::jsonb) AS tags_json,
       greatest(e.last_event_ts, p.last_event_ts) AS last_event_ts
FROM projection_tasks_stage h
LEFT JOIN task_status_map m ON m.tasks_status = h.status
LEFT JOIN ({_EVENT_STATE.format(only="AND task_id IN (SELECT task_id FROM projection_tasks_stage)")}) e
       USING (task_id)
LEFT JOIN task_projection p USING (task_id)
"""

_LAST_UUID = "ffffffff-ffff-ffff-ffff-ffffffffffff"

_SNAPSHOT_COLUMNS = "task_id, title, status, last_status_ts, priority, tags_json, last_event_ts, version"


class ReconcileRefused(OrchError):
    """The reconciliation would do harm (for example wipe the projection), so it stopped."""


@dataclass(frozen=True)
class AuditContext:
    """Who is reconciling, for the audit ledger."""

    actor: str
    request_id: str
    source: str = "orchestration-pipeline.reconciliation"

    def record(
        self, orch: psycopg.Connection, operation: str, *, before: dict, after: dict, reason: str
    ) -> int:
        """One audit entry for a mutation of the projection, in the caller's transaction."""
        return record_audit(
            orch,
            actor=self.actor,
            request_id=self.request_id,
            operation=operation,
            entity_type="task_projection",
            entity_id="task_projection",
            before=before,
            after=after,
            reason=reason,
            source=self.source,
        )


def refuse_if_tasks_look_empty(tasks_count: int, projection_count: int, min_tasks_ratio: float) -> None:
    """Raise :class:`ReconcileRefused` when the Tasks DB holds (almost) nothing the projection has.

    An empty or truncated authority, or a URL pointing at the wrong database, would otherwise make
    every projected task "missing_in_tasks" and a repair or rebuild would wipe the projection.
    """
    if projection_count and (tasks_count == 0 or tasks_count < min_tasks_ratio * projection_count):
        raise ReconcileRefused(
            f"refusing to change task_projection: the Tasks DB returned {tasks_count} tasks but the projection "
            f"holds {projection_count} — check TASKS_DATABASE_URL points at the authoritative Tasks DB and that "
            "it is complete; the projection was left as it was"
        )


def _rows_json(conn: psycopg.Connection, where: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY task_id), '[]') FROM "
        f"(SELECT {_SNAPSHOT_COLUMNS} FROM task_projection WHERE {where}) p",
        params,
    ).fetchone()[0]
    return rows


def repair(
    orch: psycopg.Connection,
    tasks: psycopg.Connection,
    drifted: list[tuple[str, str]],
    audit: AuditContext,
    *,
    reason: str,
    change_run: uuid.UUID | None = None,
) -> int:
    """Repair only the drifted rows from the Tasks DB (one transaction, audited); returns rows changed.

    The caller owns the transaction on ``orch``; the rows are re-read from the Tasks DB here, so a
    task that appeared or vanished since the comparison is handled by what is true now.
    """
    ids = sorted({task_id for task_id, _ in drifted})
    enable_projector_writes(orch)
    label_changes(orch, change_run or uuid.uuid4(), "repair")
    lock_checkpoint(orch)  # no projector batch interleaves with the repair
    stage_tasks(orch, tasks, ids)
    params = {"ids": ids, "types": list(TASK_EVENT_TYPES)}
    before = _rows_json(orch, "task_id = ANY(%(ids)s)", params)
    removed = orch.execute(
        "DELETE FROM task_projection p WHERE p.task_id = ANY(%(ids)s) "
        "AND NOT EXISTS (SELECT 1 FROM projection_tasks_stage h WHERE h.task_id = p.task_id)",
        params,
    ).rowcount
    upserted = orch.execute(
        f"""
        INSERT INTO task_projection AS p
            (task_id, title, status, last_status_ts, priority, tags_json, last_event_ts)
        {_DERIVED_ROWS}
        ON CONFLICT (task_id) DO UPDATE SET
            title = EXCLUDED.title, status = EXCLUDED.status, last_status_ts = EXCLUDED.last_status_ts,
            priority = EXCLUDED.priority, tags_json = EXCLUDED.tags_json,
            last_event_ts = EXCLUDED.last_event_ts, updated_utc = statement_timestamp(),
            version = p.version + 1
        """,
        params,
    ).rowcount
    after = _rows_json(orch, "task_id = ANY(%(ids)s)", params)
    audit.record(orch, "repair", before={"rows": before}, after={"rows": after}, reason=reason)
    return removed + upserted


def rebuild(
    orch: psycopg.Connection,
    tasks: psycopg.Connection,
    audit: AuditContext,
    *,
    reason: str,
    min_tasks_ratio: float = 0.5,
    change_run: uuid.UUID | None = None,
) -> int:
    """Rebuild the whole projection in the shadow table and swap it in; returns the new row count.

    The caller owns the transaction on ``orch``. Readers see the old projection until it commits.
    Refuses (raising :class:`ReconcileRefused`, changing nothing) when the Tasks DB looks empty.
    """
    enable_projector_writes(orch)
    label_changes(orch, change_run or uuid.uuid4(), "rebuild")
    position = lock_checkpoint(orch)  # the projector waits; the rebuild moves its checkpoint
    horizon = commit_horizon(orch)
    live = orch.execute("SELECT count(*) FROM task_projection").fetchone()[0]
    staged = stage_tasks(orch, tasks, None)
    refuse_if_tasks_look_empty(staged, live, min_tasks_ratio)
    orch.execute("TRUNCATE task_projection_shadow")
    orch.execute(
        f"""
        INSERT INTO task_projection_shadow
            (task_id, title, status, last_status_ts, priority, tags_json, last_event_ts)
        SELECT h.task_id, h.title, coalesce(m.projection_status, h.status),
               greatest(h.updated_at, e.last_status_event_ts), h.priority, coalesce(h.tags, '[]'::jsonb),
               e.last_event_ts
        FROM projection_tasks_stage h
        LEFT JOIN task_status_map m ON m.tasks_status = h.status
        LEFT JOIN ({_EVENT_STATE.format(only="AND ingest_xid < %(horizon)s")}) e USING (task_id)
        """,
        {"types": list(TASK_EVENT_TYPES), "horizon": horizon},
    )
    before = {"rows": live, "checkpoint": [str(position[0]), str(position[1])]}
    orch.execute("SELECT task_changes_record_rebuild()")  # the whole diff, before the swap
    orch.execute("SELECT task_projection_swap_shadow()")
    # Every event below the horizon is in the rebuilt rows; the projector resumes after them.
    orch.execute(
        "UPDATE projection_checkpoints SET position_xid = %s::xid8, position_event_id = %s, updated_at = now() "
        "WHERE projection = %s",
        (str(int(str(horizon)) - 1), _LAST_UUID, PROJECTION),
    )
    audit.record(
        orch, "rebuild", before=before, after={"rows": staged, "horizon_xid": str(horizon)}, reason=reason
    )
    return staged
