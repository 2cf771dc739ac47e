"""Reconciliation of ``task_projection`` against the authoritative Tasks DB, and its repair.

Comparison. Each side is streamed with one ``COPY`` in its own REPEATABLE READ snapshot, sorted
by the bytes of ``task_id`` (the key travels hex-encoded, so escaping cannot disturb the order),
and merged in one pass: memory stays flat at a million tasks. Tasks changed within the grace
window on either side are left out. Drift falls into three classes:

* ``missing_in_projection``: the Tasks DB has the task, the projection does not;
* ``missing_in_tasks``: the projection has a task the Tasks DB does not;
* ``status_mismatch``: the statuses differ after mapping the Tasks DB status through
  ``task_status_map`` (todo → pending, in_progress → running, blocked → blocked,
  done → succeeded, failed → failed, cancelled → cancelled).

Repair (:mod:`~orchestration_pipeline.lib.projection.repair`). At or below ``repair_max_rows``
drifted tasks, only those rows are repaired; above it the
projection is rebuilt into a shadow table from events plus the Tasks DB and swapped in, in one
transaction. Either way the Tasks DB wins: a repaired row takes the mapped authoritative status,
stamped no earlier than the newest status event already applied, so a replayed old event cannot
undo the repair. A rebuild is refused when the Tasks DB looks empty. Every repair and rebuild
writes an audit row in its own transaction.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from orchestration_pipeline.lib.audit.ledger import AUDIT_TABLES
from orchestration_pipeline.lib.db import end_read, require_schema
from orchestration_pipeline.lib.projection.projector import (
    PROJECTION,
    projection_lag,
    require_schemas,
)
from orchestration_pipeline.lib.projection.repair import (
    AuditContext,
    ReconcileRefused,
    rebuild,
    refuse_if_tasks_look_empty,
    repair,
)
from orchestration_pipeline.lib.telemetry import record_decision, record_metric

DRIFT_CLASSES: tuple[str, ...] = ("missing_in_projection", "missing_in_tasks", "status_mismatch")
RECONCILE_TABLES = ("drift_reports", "task_projection_shadow", *AUDIT_TABLES)


@dataclass(frozen=True)
class ReconcileSettings:
    """Knobs of the reconciliation; the defaults suit a nightly run."""

    grace_minutes: int = 15
    repair_max_rows: int = 10_000
    min_tasks_ratio: float = 0.5  # below this share of the projection, the Tasks DB "looks empty"
    sample_size: int = 5

    def __post_init__(self) -> None:
        if self.grace_minutes < 0 or self.repair_max_rows < 0 or self.sample_size < 0:
            raise ValueError("grace_minutes, repair_max_rows and sample_size must be >= 0")
        if not 0 <= self.min_tasks_ratio <= 1:
            raise ValueError("min_tasks_ratio must be between 0 and 1")


@dataclass
class DriftComparison:
    """The outcome of comparing the two sides."""

    tasks_compared: int = 0
    projection_compared: int = 0
    skipped_in_grace: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DRIFT_CLASSES, 0))
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {c: [] for c in DRIFT_CLASSES})
    drifted: list[tuple[str, str]] = field(default_factory=list)  # (task_id, class), up to the cap
    complete: bool = True  # False when more tasks drifted than ``drifted`` holds

    @property
    def drift_count(self) -> int:
        return sum(self.counts.values())


_TASKS_SIDE = """
COPY (
    SELECT encode(convert_to(task_id, 'UTF8'), 'hex'), status, updated_at > {cutoff}
    FROM tasks ORDER BY task_id COLLATE "C"
) TO STDOUT
"""

_PROJECTION_SIDE = """
COPY (
    SELECT encode(convert_to(task_id, 'UTF8'), 'hex'), status,
           coalesce(greatest(last_event_ts, last_status_ts) > {cutoff}, false)
    FROM task_projection ORDER BY task_id COLLATE "C"
) TO STDOUT
"""


def _copy_rows(conn: psycopg.Connection, query: str, cutoff: datetime) -> Iterator[list[bytes]]:
    """Rows of a COPY TO as lists of raw fields, read in one REPEATABLE READ snapshot."""
    end_read(conn)
    if not conn.autocommit:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    literal = psycopg.sql.Literal(cutoff)
    try:
        with conn.cursor() as cur, cur.copy(psycopg.sql.SQL(query).format(cutoff=literal)) as copy:
            for data in copy:
                yield bytes(data)[:-1].split(b"\t")
    finally:
        end_read(conn)


def status_map(conn: psycopg.Connection) -> dict[str, str]:
    """The documented Tasks DB status → projection status mapping (``task_status_map``)."""
    rows = conn.execute("SELECT tasks_status, projection_status FROM task_status_map").fetchall()
    end_read(conn)
    return dict(rows)


def compare(
    orch: psycopg.Connection,
    tasks: psycopg.Connection,
    *,
    grace_minutes: int = 15,
    now: datetime | None = None,
    keep: int = 10_000,
    sample_size: int = 5,
) -> DriftComparison:
    """Merge both sides in task_id order and classify the drift; keeps up to ``keep`` drifted ids."""
    cutoff = (now or datetime.now(UTC)) - timedelta(minutes=grace_minutes)
    mapping = {k.encode(): v.encode() for k, v in status_map(orch).items()}
    result = DriftComparison()
    counts = result.counts
    samples = result.samples
    drifted = result.drifted

    def note(kind: str, key: bytes, detail: dict[str, Any] | None = None) -> None:
        counts[kind] += 1
        task_id = bytes.fromhex(key.decode()).decode()
        if len(samples[kind]) < sample_size:
            samples[kind].append({"task_id": task_id, **(detail or {})})
        if len(drifted) < keep:
            drifted.append((task_id, kind))
        else:
            result.complete = False

    left = _copy_rows(tasks, _TASKS_SIDE, cutoff)
    right = _copy_rows(orch, _PROJECTION_SIDE, cutoff)
    a = next(left, None)
    b = next(right, None)
    n_tasks = n_proj = skipped = 0
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            n_tasks += 1
            if a[2] == b"t":
                skipped += 1
            else:
                note("missing_in_projection", a[0], {"tasks_status": a[1].decode()})
            a = next(left, None)
        elif a is None or b[0] < a[0]:
            n_proj += 1
            if b[2] == b"t":
                skipped += 1
            else:
                note("missing_in_tasks", b[0], {"projection_status": b[1].decode()})
            b = next(right, None)
        else:
            n_tasks += 1
            n_proj += 1
            if a[2] == b"t" or b[2] == b"t":
                skipped += 1
            elif mapping.get(a[1], a[1]) != b[1]:
                detail = {"tasks_status": a[1].decode(), "projection_status": b[1].decode()}
                note("status_mismatch", a[0], detail)
            a = next(left, None)
            b = next(right, None)
    result.tasks_compared, result.projection_compared, result.skipped_in_grace = n_tasks, n_proj, skipped
    return result


# -- repair and rebuild ------------------------------------------------------------------------


# -- the reconciliation ------------------------------------------------------------------------


@dataclass
class DriftReport:
    """One reconciliation: what drifted, what was done about it, and where it is recorded."""

    report_id: int
    started_at: datetime
    finished_at: datetime
    comparison: DriftComparison
    action: str
    action_detail: str
    rows_changed: int
    decision_event_id: str
    grace_minutes: int
    compare_s: float = 0.0
    change_run: str | None = None  # the run id its task_changes rows carry (repair or rebuild)

    @property
    def drift_count(self) -> int:
        return self.comparison.drift_count

    def as_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "report_id": self.report_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_s": round((self.finished_at - self.started_at).total_seconds(), 3),
            "grace_minutes": self.grace_minutes,
            "tasks_compared": c.tasks_compared,
            "projection_compared": c.projection_compared,
            "skipped_in_grace": c.skipped_in_grace,
            **c.counts,
            "drift_count": c.drift_count,
            "samples": c.samples,
            "action": self.action,
            "action_detail": self.action_detail,
            "rows_changed": self.rows_changed,
            "decision_event_id": self.decision_event_id,
            "compare_s": round(self.compare_s, 3),
            "change_run": self.change_run,
        }


def _choose_action(comparison: DriftComparison, settings: ReconcileSettings, force_rebuild: bool) -> str:
    if force_rebuild:
        return "rebuild"
    if comparison.drift_count == 0:
        return "none"
    if comparison.complete and comparison.drift_count <= settings.repair_max_rows:
        return "repair"
    return "rebuild"


def reconcile(
    orch: psycopg.Connection,
    tasks: psycopg.Connection,
    audit: AuditContext,
    settings: ReconcileSettings | None = None,
    *,
    force_rebuild: bool = False,
    now: datetime | None = None,
) -> DriftReport:
    """Compare, repair or rebuild, then record the report, a decision event and the metrics.

    Raises :class:`ReconcileRefused` (after recording the refusal) when a rebuild would wipe the
    projection because the Tasks DB looks empty.
    """
    settings = settings or ReconcileSettings()
    require_schemas(orch, tasks, source=audit.source, extra=RECONCILE_TABLES)
    # One reconciliation at a time, compare to record: a second one started meanwhile waits, then
    # compares what the first left (it used to repair the same drift again and report it twice).
    orch.execute("SELECT pg_advisory_lock(%s)", (_RECONCILE_LOCK,))  # session-level: outlives the read
    end_read(orch)
    try:
        return _reconcile_locked(orch, tasks, audit, settings, force_rebuild=force_rebuild, now=now)
    finally:
        try:
            end_read(orch)
            orch.execute("SELECT pg_advisory_unlock(%s)", (_RECONCILE_LOCK,))
            end_read(orch)
        except psycopg.Error:
            pass  # the connection is gone, and the lock went with its session


_RECONCILE_LOCK = 0x6F72_6368_7265_636E  # "orchrecn": the session lock held by a reconciliation


def _reconcile_locked(
    orch: psycopg.Connection,
    tasks: psycopg.Connection,
    audit: AuditContext,
    settings: ReconcileSettings,
    *,
    force_rebuild: bool,
    now: datetime | None,
) -> DriftReport:
    started_at = now or datetime.now(UTC)
    clock = time.perf_counter()
    comparison = compare(
        orch,
        tasks,
        grace_minutes=settings.grace_minutes,
        now=started_at,
        keep=settings.repair_max_rows,
        sample_size=settings.sample_size,
    )
    compared_s = time.perf_counter() - clock
    action = _choose_action(comparison, settings, force_rebuild)
    reason = f"{comparison.drift_count} drifted tasks (repair limit {settings.repair_max_rows})"
    refusal: ReconcileRefused | None = None
    rows_changed = 0
    detail = "no drift"
    change_run = uuid.uuid4()
    try:
        if action != "none":
            refuse_if_tasks_look_empty(
                comparison.tasks_compared, comparison.projection_compared, settings.min_tasks_ratio
            )
        with orch.transaction():
            if action == "repair":
                rows_changed = repair(
                    orch, tasks, comparison.drifted, audit, reason=reason, change_run=change_run
                )
                detail = f"repaired {rows_changed} rows"
            elif action == "rebuild":
                rows_changed = rebuild(
                    orch, tasks, audit, reason=reason, min_tasks_ratio=settings.min_tasks_ratio,
                    change_run=change_run,
                )  # fmt: skip
                detail = f"rebuilt from events plus the Tasks DB: {rows_changed} rows"
            report = _record(orch, comparison, settings, started_at, action, detail, rows_changed, audit)
    except ReconcileRefused as exc:
        refusal = exc
    if refusal is not None:
        with orch.transaction():
            _record(orch, comparison, settings, started_at, "refused", str(refusal), 0, audit)
        raise refusal
    report.compare_s = compared_s
    report.change_run = str(change_run) if action in ("repair", "rebuild") else None
    return report


def _record(
    orch: psycopg.Connection,
    comparison: DriftComparison,
    settings: ReconcileSettings,
    started_at: datetime,
    action: str,
    detail: str,
    rows_changed: int,
    audit: AuditContext,
) -> DriftReport:
    """Store the drift_reports row, its decision event and the metrics (caller's transaction)."""
    c = comparison
    report_id, finished_at = orch.execute(
        """
        INSERT INTO drift_reports (started_at, grace_minutes, tasks_compared, projection_compared,
            skipped_in_grace, missing_in_projection, missing_in_tasks, status_mismatch, samples,
            action, action_detail, rows_changed, request_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        RETURNING report_id, finished_at
        """,
        (
            started_at,
            settings.grace_minutes,
            c.tasks_compared,
            c.projection_compared,
            c.skipped_in_grace,
            c.counts["missing_in_projection"],
            c.counts["missing_in_tasks"],
            c.counts["status_mismatch"],
            Jsonb(c.samples),
            action,
            detail,
            rows_changed,
            audit.request_id,
        ),
    ).fetchone()
    decision_id = record_decision(
        orch,
        source=audit.source,
        stage="reconciliation",
        severity="info" if c.drift_count == 0 else "warning",
        rationale=f"task_projection drift {c.drift_count}: {action} ({detail})",
        details={"report_id": report_id, "drift_count": c.drift_count, **c.counts, "samples": c.samples,
                 "action": action},
    )  # fmt: skip
    tags = {"report_id": report_id}
    record_metric(orch, "projection_drift_count", c.drift_count, "tasks", tags)
    record_metric(orch, "last_reconcile_ts", finished_at.timestamp(), "s", tags)
    return DriftReport(
        report_id=report_id,
        started_at=started_at,
        finished_at=finished_at,
        comparison=c,
        action=action,
        action_detail=detail,
        rows_changed=rows_changed,
        decision_event_id=decision_id,
        grace_minutes=settings.grace_minutes,
    )


def recent_reports(conn: psycopg.Connection, limit: int = 2) -> list[dict[str, Any]]:
    """The newest drift reports, newest first."""
    require_schema(conn, ("drift_reports",), record_decision=False)
    rows = conn.execute(
        """
        SELECT report_id, finished_at, drift_count, missing_in_projection, missing_in_tasks,
               status_mismatch, action, action_detail, samples
        FROM drift_reports ORDER BY report_id DESC LIMIT %s
        """,
        (limit,),
    ).fetchall()
    end_read(conn)
    keys = ("report_id", "finished_at", "drift_count", *DRIFT_CLASSES, "action", "action_detail", "samples")
    return [dict(zip(keys, row, strict=True)) for row in rows]


@dataclass(frozen=True)
class ReconcileTrigger:
    """Why a reconciliation should run now, and a key that is stable until it has run."""

    reason: str
    run_key: str


def reconciliation_due(conn: psycopg.Connection, *, lag_threshold: int) -> ReconcileTrigger | None:
    """Due when the last report showed (new) drift, or when events were ingested since the last
    reconcile and the projection is more than ``lag_threshold`` task events behind."""
    reports = recent_reports(conn, limit=2)
    if reports and reports[0]["drift_count"] > 0 and (len(reports) == 1 or reports[1]["drift_count"] == 0):
        # once per drifted report: persistent drift is drift_not_persistent's to flag, not a loop
        newest = reports[0]
        return ReconcileTrigger(f"last report {newest['report_id']} showed drift {newest['drift_count']}",
                                f"drift-{newest['report_id']}")  # fmt: skip
    since = reports[0]["finished_at"] if reports else None
    ingested = conn.execute(
        "SELECT max(finished_at) FROM ingest_runs WHERE %(since)s::timestamptz IS NULL OR finished_at > %(since)s",
        {"since": since},
    ).fetchone()[0]
    end_read(conn)
    if ingested is None:
        return None
    lag = projection_lag(conn, cap=lag_threshold + 1)
    if lag <= lag_threshold:
        return None
    position = conn.execute(
        "SELECT position_xid, position_event_id FROM projection_checkpoints WHERE projection = %s",
        (PROJECTION,),
    ).fetchone()
    end_read(conn)
    return ReconcileTrigger(
        f"projection behind by more than {lag_threshold} task events, with ingestion since the last reconcile",
        f"lag-{position[0]}-{position[1]}",
    )
