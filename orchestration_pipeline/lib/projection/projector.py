"""The task projection: a CQRS read model of tasks, kept in step with ``events``.

The projector consumes task events since its checkpoint and folds them into ``task_projection``:
``task_start`` sets ``running``, ``task_end`` sets ``succeeded`` or ``failed`` (from
``payload.success``), and ``decision`` and agent events bump ``last_event_ts``. A task event with
a ``status`` word sets what the synonym map says that word means instead
(:data:`~orchestration_pipeline.lib.ingestion.status_words.PROJECTION_STATUS`); one whose word the
map does not know (or means ``skipped``) changes no status. Title, priority and tags are hydrated
from the Tasks DB.

Ordering. A status observation carries its event's ``occurred_at``; a later one wins, and equal
timestamps are broken by a fixed rank (``task_projection_newer`` in SQL). The result is therefore
the same whatever order events were ingested in.

Checkpoint. Events are positioned by ``(ingest_xid, event_id)``: the id of the transaction that
inserted them. The projector only consumes events whose transaction id is below the xmin of its
snapshot; every such transaction has finished, so no event can later commit behind the
checkpoint. (A ``bigserial`` or ``received_at`` cursor would skip a row whose insert was still
uncommitted when the cursor moved past it.) A long-running transaction anywhere on the server
holds the horizon back: the projection lags, it never skips. The checkpoint commits in the same
transaction as the projection rows it covers.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from orchestration_pipeline.lib.db import TASKS_TABLES, end_read, require_schema
from orchestration_pipeline.lib.ingestion.envelope import AGENT_TYPES
from orchestration_pipeline.lib.ingestion.status_words import (
    StatusWords,
    configured_status_words,
    meaning_sql,
)
from orchestration_pipeline.lib.project_files import runtime_sql
from orchestration_pipeline.lib.telemetry import percentile, record_metric

PROJECTION = "task_projection"
#: Tables the projector needs in the orchestration DB, and in the Tasks DB.
PROJECTION_TABLES = ("events", "metrics", "task_projection", "task_status_map", "projection_checkpoints")

#: Event types that touch a task's projection row.
TASK_EVENT_TYPES: tuple[str, ...] = ("task_start", "task_end", "decision", *AGENT_TYPES)

_LATENCY_RESERVOIR = 100_000


def stage_sql() -> str:
    """DDL of the session temp tables the projector and the reconciliation stage rows in."""
    return runtime_sql("projection_stage.sql")


def enable_projector_writes(conn: psycopg.Connection) -> None:
    """Let this transaction write ``task_projection`` (its guard trigger refuses everyone else)."""
    conn.execute("SET LOCAL orchestration.projector = on")


def label_changes(conn: psycopg.Connection, run_id: uuid.UUID, cause: str) -> None:
    """Name the run and cause the ``task_changes`` rows of this transaction are recorded under
    (sql/orchestration/0022_task_changes.sql: event, repair or rebuild)."""
    conn.execute("SELECT set_config('orchestration.change_run', %s, true)", (str(run_id),))
    conn.execute("SELECT set_config('orchestration.change_cause', %s, true)", (cause,))


def lock_checkpoint(conn: psycopg.Connection) -> tuple[Any, Any]:
    """Lock the projector's checkpoint row for this transaction; returns its position."""
    row = conn.execute(
        "SELECT position_xid, position_event_id FROM projection_checkpoints WHERE projection = %s FOR UPDATE",
        (PROJECTION,),
    ).fetchone()
    if row is None:  # the migration seeds it; a deleted row is recreated at the start
        conn.execute("INSERT INTO projection_checkpoints (projection) VALUES (%s)", (PROJECTION,))
        return lock_checkpoint(conn)
    return row[0], row[1]


def commit_horizon(conn: psycopg.Connection) -> Any:
    """The xmin of a fresh snapshot: every transaction with a smaller id has finished."""
    return conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())").fetchone()[0]


_TASK_COLUMNS = "task_id, title, status, priority, tags, updated_at"


def _tasks_copy_out(task_ids: Sequence[str] | str | None) -> tuple[str, tuple]:
    """The COPY TO statement (and its parameters) reading Tasks DB rows: all, or ``task_ids``.

    ``task_ids`` may already be a text[] literal. COPY binds parameters client-side, so the ids
    travel as one array literal rather than one constant per id, which is slow to parse.
    """
    select = f"SELECT {_TASK_COLUMNS} FROM tasks"
    if task_ids is None:
        return f"COPY ({select}) TO STDOUT", ()
    literal = task_ids if isinstance(task_ids, str) else _text_array(task_ids)
    return f"COPY ({select} WHERE task_id = ANY(%s::text[])) TO STDOUT", (literal,)


def _write_tasks_stage(orch: psycopg.Connection, blocks: Iterable[bytes | memoryview]) -> int:
    """COPY Tasks DB rows, as COPY TO blocks, into a fresh ``projection_tasks_stage``."""
    orch.execute(stage_sql())
    orch.execute("TRUNCATE projection_tasks_stage")
    staged = 0
    with orch.cursor() as cur, cur.copy(f"COPY projection_tasks_stage ({_TASK_COLUMNS}) FROM STDIN") as dst:
        for block in blocks:  # rows pass straight through, never as Python objects
            dst.write(block)
            staged += 1
    orch.execute("ANALYZE projection_tasks_stage")  # fresh statistics for the joins that follow
    return staged


def stage_tasks(orch: psycopg.Connection, tasks: psycopg.Connection, task_ids: Sequence[str] | None) -> int:
    """Stream Tasks DB rows (all, or ``task_ids``) into ``projection_tasks_stage``; returns the count.

    The caller owns the orchestration transaction (the stage is emptied at its commit); the Tasks
    DB read is its own snapshot.
    """
    statement, params = _tasks_copy_out(task_ids)
    try:
        with tasks.cursor() as cur, cur.copy(statement, params) as src:
            return _write_tasks_stage(orch, src)
    finally:
        end_read(tasks)


def _read_tasks(tasks: psycopg.Connection, ids_literal: str) -> list[bytes]:
    """Tasks DB rows for one projector batch, as COPY blocks held in memory (bounded by the batch)."""
    statement, params = _tasks_copy_out(ids_literal)
    try:
        with tasks.cursor() as cur, cur.copy(statement, params) as src:
            return [bytes(block) for block in src]
    finally:
        end_read(tasks)


def _text_array(values: Sequence[str]) -> str:
    """A PostgreSQL text[] literal of ``values`` (each element quoted and escaped)."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


@dataclass
class LatencyStats:
    """Sync latency (event ``received_at`` → projection update) over a bounded random sample."""

    count: int = 0
    total_ms: float = 0.0
    sample: list[float] = field(default_factory=list)
    _rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)

    def add(self, values: Sequence[float]) -> None:
        for value in values:
            self.count += 1
            self.total_ms += value
            if len(self.sample) < _LATENCY_RESERVOIR:
                self.sample.append(value)
            else:  # reservoir sampling keeps memory bounded on long catch-ups
                slot = self._rng.randrange(self.count)
                if slot < _LATENCY_RESERVOIR:
                    self.sample[slot] = value

    @property
    def avg_ms(self) -> float | None:
        return self.total_ms / self.count if self.count else None

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.sample, 95) if self.sample else None


@dataclass
class ProjectorRun:
    """What one catch-up of the projector did."""

    run_id: uuid.UUID = field(default_factory=uuid.uuid4)  # its changes in task_changes carry it
    events_applied: int = 0
    tasks_updated: int = 0
    batches: int = 0
    duration_s: float = 0.0
    position: tuple[str, str] | None = None
    latency: LatencyStats = field(default_factory=LatencyStats)

    @property
    def events_per_s(self) -> float:
        return self.events_applied / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events_applied": self.events_applied,
            "tasks_updated": self.tasks_updated,
            "batches": self.batches,
            "duration_s": round(self.duration_s, 3),
            "events_per_s": round(self.events_per_s),
            "position": list(self.position) if self.position else None,
            "sync_latency_avg_ms": _round(self.latency.avg_ms),
            "sync_latency_p95_ms": _round(self.latency.p95_ms),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


_BATCH_END_SQL = """
SELECT ingest_xid, event_id FROM (
    SELECT ingest_xid, event_id FROM events
    WHERE task_id IS NOT NULL AND (ingest_xid, event_id) > (%(from_xid)s, %(from_id)s) AND ingest_xid < %(horizon)s
    ORDER BY ingest_xid, event_id
    LIMIT %(limit)s
) AS batch
ORDER BY ingest_xid DESC, event_id DESC
LIMIT 1
"""

_BATCH_FILTER = """
    task_id IS NOT NULL
    AND (ingest_xid, event_id) > (%(from_xid)s, %(from_id)s)
    AND (ingest_xid, event_id) <= (%(to_xid)s, %(to_id)s)
    AND event_type = ANY(%(types)s)
"""

# The batch's task ids as one text[] literal, handed to the Tasks DB as it is.
_BATCH_TASK_IDS_SQL = (
    f"SELECT coalesce(array_agg(DISTINCT task_id)::text, '{{}}') FROM events WHERE {_BATCH_FILTER}"
)

# Fold a batch of events per task into the batch stage: the latest status observation (ties
# broken by rank) and the latest event time. Returns the task count and each event's sync latency.
# A task event's status word, when it has one, says the status (the jsonb maps start_words and
# end_words, see StatusWords.projection_params); an unknown word observes none.
_FOLD_SQL = f"""
WITH batch AS (
    SELECT task_id, occurred_at, received_at,
           CASE event_type
               WHEN 'task_start' THEN
                   CASE WHEN status IS NULL THEN 'running' ELSE {meaning_sql("status", "start_words")} END
               WHEN 'task_end' THEN
                   CASE WHEN status IS NOT NULL THEN {meaning_sql("status", "end_words")}
                        WHEN payload->>'success' = 'true' THEN 'succeeded' ELSE 'failed' END
           END AS status
    FROM events
    WHERE {_BATCH_FILTER}
), folded AS (
    INSERT INTO projection_batch_stage (task_id, status, status_ts, last_event_ts)
    SELECT task_id,
           (array_agg(status ORDER BY occurred_at DESC, task_projection_status_rank(status) DESC)
                FILTER (WHERE status IS NOT NULL))[1],
           max(occurred_at) FILTER (WHERE status IS NOT NULL),
           max(occurred_at)
    FROM batch GROUP BY task_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM folded),
       (SELECT coalesce(array_agg(
            (extract(epoch FROM statement_timestamp() - received_at) * 1000)::real), '{{}}') FROM batch)
"""

# Apply the folded batch, hydrated from the staged Tasks DB rows. Key lookups only, so a
# misestimated batch size cannot turn it quadratic.
_APPLY_SQL = """
INSERT INTO task_projection AS p (task_id, title, status, last_status_ts, priority, tags_json, last_event_ts)
SELECT b.task_id, h.title,
       -- a new row with no status event of its own takes the Tasks DB's status (as a rebuild
       -- would), not 'pending', which reconciliation would then always report as drift
       coalesce(b.status, CASE WHEN known.task_id IS NULL THEN m.projection_status END, 'pending'),
       CASE WHEN b.status IS NULL AND known.task_id IS NULL AND m.projection_status IS NOT NULL
            THEN h.updated_at ELSE b.status_ts END,
       h.priority, coalesce(h.tags, '[]'::jsonb), b.last_event_ts
FROM projection_batch_stage b
LEFT JOIN projection_tasks_stage h USING (task_id)
LEFT JOIN task_status_map m ON m.tasks_status = h.status
LEFT JOIN task_projection known USING (task_id)
ON CONFLICT (task_id) DO UPDATE SET
    status = CASE WHEN task_projection_newer(EXCLUDED.last_status_ts, EXCLUDED.status, p.last_status_ts, p.status)
                  THEN EXCLUDED.status ELSE p.status END,
    last_status_ts = CASE WHEN task_projection_newer(EXCLUDED.last_status_ts, EXCLUDED.status,
                                                     p.last_status_ts, p.status)
                          THEN EXCLUDED.last_status_ts ELSE p.last_status_ts END,
    -- a task the Tasks DB does not know (yet) keeps what the projection had
    title = coalesce(EXCLUDED.title, p.title),
    priority = coalesce(EXCLUDED.priority, p.priority),
    tags_json = CASE WHEN EXCLUDED.title IS NULL THEN p.tags_json ELSE EXCLUDED.tags_json END,
    last_event_ts = greatest(p.last_event_ts, EXCLUDED.last_event_ts),
    updated_utc = statement_timestamp(),
    version = p.version + 1
"""

_ADVANCE_SQL = """
UPDATE projection_checkpoints
SET position_xid = %(to_xid)s, position_event_id = %(to_id)s,
    events_applied = events_applied + %(applied)s, updated_at = now()
WHERE projection = %(projection)s
"""


def require_schemas(
    orch: psycopg.Connection, tasks: psycopg.Connection, *, source: str, extra: Sequence[str] = ()
) -> None:
    """Raise :class:`SchemaNotReady` unless both databases are migrated (one catalogue query each)."""
    require_schema(orch, (*PROJECTION_TABLES, *extra), source=source)
    require_schema(tasks, TASKS_TABLES, record_decision=False)


def project_events(
    conn: psycopg.Connection,
    tasks: psycopg.Connection,
    *,
    batch_events: int = 50_000,
    max_batches: int | None = None,
    progress: Callable[[ProjectorRun], None] | None = None,
    status_words: StatusWords | None = None,
) -> ProjectorRun:
    """Fold every task event committed since the checkpoint into ``task_projection``.

    Each batch (rows, hydration and checkpoint) is one transaction on ``conn``; ``tasks`` is the
    Tasks DB, read only. Two projectors never interleave: each batch locks the checkpoint row.
    ``status_words``: the synonym map of status words (default: the configured one).
    """
    if batch_events < 1:
        raise ValueError("batch_events must be at least 1")
    words = status_words or configured_status_words()
    word_params = {name: Jsonb(value) for name, value in words.projection_params().items()}
    end_read(conn)
    require_schemas(conn, tasks, source="projector")
    run = ProjectorRun()
    started = time.perf_counter()
    while max_batches is None or run.batches < max_batches:
        with conn.transaction():
            enable_projector_writes(conn)
            label_changes(conn, run.run_id, "event")
            conn.execute("SET LOCAL work_mem = '64MB'")  # batch sorts stay in memory
            from_xid, from_id = lock_checkpoint(conn)
            horizon = commit_horizon(conn)
            end = conn.execute(
                _BATCH_END_SQL,
                {"from_xid": from_xid, "from_id": from_id, "horizon": horizon, "limit": batch_events},
            ).fetchone()
            if end is None:
                break
            params = {
                "from_xid": from_xid,
                "from_id": from_id,
                "to_xid": end[0],
                "to_id": end[1],
                "types": list(TASK_EVENT_TYPES),
                **word_params,
            }
            conn.execute(stage_sql())
            ids_literal = conn.execute(_BATCH_TASK_IDS_SQL, params).fetchone()[0]
            # The Tasks DB lookup runs on its own server process while this one folds the batch.
            with ThreadPoolExecutor(max_workers=1) as pool:
                hydration = pool.submit(_read_tasks, tasks, ids_literal)
                _tasks, latencies = conn.execute(_FOLD_SQL, params).fetchone()
                _write_tasks_stage(conn, hydration.result())
            updated = conn.execute(_APPLY_SQL).rowcount
            conn.execute(_ADVANCE_SQL, {**params, "applied": len(latencies), "projection": PROJECTION})
        run.batches += 1
        run.events_applied += len(latencies)
        run.tasks_updated += updated
        run.latency.add(latencies)
        run.position = (str(end[0]), str(end[1]))
        run.duration_s = time.perf_counter() - started
        if progress is not None:
            progress(run)
    run.duration_s = time.perf_counter() - started
    if run.latency.count:
        with conn.transaction():
            tags = {"events": run.latency.count}
            record_metric(
                conn, "projection_sync_latency_ms", run.latency.avg_ms, "ms", {**tags, "stat": "avg"}
            )
            record_metric(
                conn, "projection_sync_latency_ms", run.latency.p95_ms, "ms", {**tags, "stat": "p95"}
            )
    return run


def projection_lag(conn: psycopg.Connection, *, cap: int = 1_000_000) -> int:
    """Task events committed past the checkpoint (counted up to ``cap``)."""
    row = conn.execute(
        """
        SELECT count(*) FROM (
            SELECT 1 FROM events e, projection_checkpoints c
            WHERE c.projection = %s AND e.task_id IS NOT NULL
              AND (e.ingest_xid, e.event_id) > (c.position_xid, c.position_event_id)
            LIMIT %s
        ) AS pending
        """,
        (PROJECTION, cap),
    ).fetchone()
    end_read(conn)
    return int(row[0])
