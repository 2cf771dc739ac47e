"""Verifications of the task projection and its reconciliation, as Verdicts (no Dagster)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.projection.drift import DRIFT_CLASSES, compare, recent_reports
from orchestration_pipeline.lib.projection.projector import PROJECTION, projection_lag
from orchestration_pipeline.lib.verdict import Verdict
from orchestration_pipeline.lib.wording import plural

#: The projection's columns and their types, as the migration creates them.
EXPECTED_COLUMNS: dict[str, str] = {
    "task_id": "text",
    "title": "text",
    "status": "text",
    "last_status_ts": "timestamp with time zone",
    "priority": "smallint",
    "tags_json": "jsonb",
    "last_event_ts": "timestamp with time zone",
    "updated_utc": "timestamp with time zone",
    "version": "bigint",
}


def zero_drift_after_reconcile(
    orch: psycopg.Connection, tasks: psycopg.Connection, *, grace_minutes: int, now: datetime | None = None
) -> Verdict:
    """A fresh comparison, after the reconciliation's repair, finds no drift at all."""
    result = compare(orch, tasks, grace_minutes=grace_minutes, now=now, keep=0)
    meta = {
        "drift_count": result.drift_count,
        **result.counts,
        "tasks_compared": result.tasks_compared,
        "skipped_in_grace": result.skipped_in_grace,
        "samples": result.samples,
    }
    if result.drift_count:
        worst = ", ".join(f"{k} {v}" for k, v in result.counts.items() if v)
        return Verdict(
            False,
            f"{plural(result.drift_count, 'task')} still drift after the reconciliation ({worst})",
            meta,
        )
    return Verdict(True, f"no drift across {plural(result.tasks_compared, 'task')}", meta)


def drift_not_persistent(orch: psycopg.Connection) -> Verdict:
    """Drift is tolerated once (it gets repaired); drift in two consecutive reports is an error."""
    reports = recent_reports(orch, limit=2)
    meta = {"reports": [{"report_id": r["report_id"], "drift_count": r["drift_count"]} for r in reports]}
    if len(reports) == 2 and all(r["drift_count"] > 0 for r in reports):
        newest, previous = reports
        kinds = {k: newest[k] for k in DRIFT_CLASSES if newest[k]}
        return Verdict(
            False,
            f"drift in 2 consecutive reports ({previous['drift_count']}, then {newest['drift_count']}: {kinds}) "
            "— the repair is not holding; see the samples and docs/runbooks/reconciliation.md",
            {**meta, "samples": newest["samples"]},
        )
    if not reports:
        return Verdict(True, "no drift report yet", meta)
    return Verdict(True, f"latest drift {reports[0]['drift_count']}; not persistent", meta)


def projection_columns_present(orch: psycopg.Connection) -> Verdict:
    """task_projection has every expected column, with its type, and its read-only guard."""
    rows = orch.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'task_projection'"
    ).fetchall()
    guarded = orch.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('task_projection') "
        "AND tgname IN ('task_projection_read_only', 'task_projection_no_truncate') "
        "AND tgenabled IN ('O', 'A')"  # fires in ordinary sessions: not 'D' (disabled) or 'R' (replica only)
    ).fetchone()[0]
    end_read(orch)
    found = dict(rows)
    missing = [c for c in EXPECTED_COLUMNS if c not in found]
    wrong = {c: found[c] for c, t in EXPECTED_COLUMNS.items() if c in found and found[c] != t}
    meta = {"missing": missing, "wrong_type": wrong, "guard_triggers": guarded}
    problems = []
    if missing:
        problems.append(f"missing columns {', '.join(missing)}")
    if wrong:
        problems.append("wrong types " + ", ".join(f"{c} is {t}" for c, t in wrong.items()))
    if guarded < 2:
        problems.append("the read-only guard triggers are missing or disabled")
    if problems:
        return Verdict(
            False,
            "task_projection: " + "; ".join(problems) + " — run 'orchestration-pipeline db migrate'",
            meta,
        )
    return Verdict(True, f"all {len(EXPECTED_COLUMNS)} columns present, guard enabled", meta)


def projection_sync_latency(orch: psycopg.Connection, *, p95_warn_ms: float) -> Verdict:
    """The latest measured p95 sync latency (received_at → projection update) is within the limit."""
    row = orch.execute(
        "SELECT value, recorded_at FROM metrics WHERE name = 'projection_sync_latency_ms' "
        "AND tags->>'stat' = 'p95' ORDER BY recorded_at DESC, metric_id DESC LIMIT 1"
    ).fetchone()
    end_read(orch)
    if row is None:
        return Verdict(True, "no events projected yet: nothing to measure", {"p95_limit_ms": p95_warn_ms})
    p95, recorded_at = row
    meta = {"p95_ms": round(p95, 1), "p95_limit_ms": p95_warn_ms, "measured_at": recorded_at.isoformat()}
    if p95 > p95_warn_ms:
        return Verdict(
            False,
            f"projection sync p95 {p95 / 1000:.1f}s exceeds {p95_warn_ms / 1000:.1f}s — events wait too long "
            "for the projector (is projection_lag_sensor running?)",
            meta,
            warn_only=True,
        )
    return Verdict(True, f"projection sync p95 {p95 / 1000:.1f}s", meta)


#: How old the newest drift report may be: a nightly reconciliation, plus two hours of slack.
DRIFT_REPORT_MAX_AGE_HOURS = 26
#: How long a task event may wait, after its ingestion, for the projector.
UNPROJECTED_MAX_AGE_MINUTES = 10


def _require_limit(value: float, setting: str) -> None:
    if value < 0:
        raise ValueError(f"{setting} must be 0 or more, not {value} — fix the projection_settings resource")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _horizon_holder(orch: psycopg.Connection, before: datetime) -> dict[str, Any] | None:
    """The oldest transaction on the server that holds a transaction id and began ``before``: the
    projector does not pass an event inserted after such a transaction took its id."""
    row = orch.execute(
        """SELECT pid, datname, state, extract(epoch FROM now() - xact_start)::bigint, left(query, 120)
           FROM pg_stat_activity
           WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND xact_start <= %s
           ORDER BY age(backend_xid) DESC LIMIT 1""",
        (before,),
    ).fetchone()
    if row is None:
        return None
    return dict(zip(("pid", "database", "state", "open_s", "query"), row, strict=True))


def projection_caught_up(
    orch: psycopg.Connection, *, max_age_minutes: float, now: datetime | None = None, cap: int = 1_000_000
) -> Verdict:
    """No task event ingested more than ``max_age_minutes`` ago still waits past the projector's
    checkpoint (its position ``(ingest_xid, event_id)``, see ``lib/projection/projector.py``).

    ``now`` defaults to the database's clock; the count stops at ``cap``.
    """
    _require_limit(max_age_minutes, "unprojected_max_age_minutes")
    params = {"now": now, "secs": max_age_minutes * 60, "projection": PROJECTION, "cap": cap}
    waiting, oldest, at = orch.execute(
        """
        SELECT count(*), min(received_at), coalesce(%(now)s::timestamptz, now()) FROM (
            SELECT e.received_at FROM events e, projection_checkpoints c
            WHERE c.projection = %(projection)s AND e.task_id IS NOT NULL
              AND (e.ingest_xid, e.event_id) > (c.position_xid, c.position_event_id)
              AND e.received_at < coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(secs)s)
            LIMIT %(cap)s
        ) AS waiting
        """,
        params,
    ).fetchone()
    holder = _horizon_holder(orch, oldest) if waiting else None
    end_read(orch)
    lag = projection_lag(orch)
    meta: dict[str, Any] = {"waiting_events": waiting, "lag_events": lag, "limit_minutes": max_age_minutes}
    if not waiting:
        newer = (
            f"{plural(lag, 'newer task event')} not projected yet" if lag else "every task event projected"
        )
        return Verdict(
            True, f"no task event waits over {max_age_minutes:g} min for the projector ({newer})", meta
        )
    age = (at - oldest).total_seconds()
    meta["oldest_waiting_s"] = round(age)
    cause = "materialize task_projection ('orchestration-pipeline projection update')"
    if holder is not None:
        meta["oldest_open_transaction"] = holder
        cause = (
            f"an open transaction older than them (pid {holder['pid']} on {holder['database']}, "
            f"{holder['state']}, open {_hours(holder['open_s'] or 0)}) may hold the projector back; "
            "end it if it is stuck, then " + cause
        )
    counted = plural(waiting, "task event") if waiting < cap else f"over {cap:,} task events"
    return Verdict(
        False,
        f"{counted} ingested over {max_age_minutes:g} min ago {'is' if waiting == 1 else 'are'} not projected "
        f"yet, the oldest waiting {_hours(age)} — {cause}",
        meta,
    )


def drift_report_fresh(
    orch: psycopg.Connection, *, max_age_hours: float, now: datetime | None = None
) -> Verdict:
    """The newest drift report is at most ``max_age_hours`` old (by the database's clock unless ``now``).

    With no report at all, that is a failure only once ingestion began longer ago than that.
    """
    _require_limit(max_age_hours, "drift_report_max_age_hours")
    newest = orch.execute(
        """SELECT report_id, finished_at, action, coalesce(%(now)s::timestamptz, now())
           FROM drift_reports ORDER BY finished_at DESC, report_id DESC LIMIT 1""",
        {"now": now},
    ).fetchone()
    first_ingest, at = orch.execute(
        "SELECT min(started_at), coalesce(%(now)s::timestamptz, now()) FROM ingest_runs", {"now": now}
    ).fetchone()
    end_read(orch)
    limit_s = max_age_hours * 3600
    meta: dict[str, Any] = {"limit_hours": max_age_hours}
    fix = (
        "is the nightly_reconciliation schedule running (Dagster UI, Automation)? "
        "'orchestration-pipeline projection reconcile' makes one now"
    )
    if newest is None:
        if first_ingest is None or (at - first_ingest).total_seconds() <= limit_s:
            return Verdict(True, "no drift report yet, and ingestion began less than the limit ago", meta)
        meta["first_ingest_at"] = first_ingest.isoformat()
        return Verdict(
            False,
            f"no drift report at all, though ingestion began {_hours((at - first_ingest).total_seconds())} "
            f"ago (limit {max_age_hours:g} h) — {fix}",
            meta,
        )
    report_id, finished_at, action, at = newest
    age = (at - finished_at).total_seconds()
    meta.update(report_id=report_id, finished_at=finished_at.isoformat(), age_hours=round(age / 3600, 2))
    if age > limit_s:
        return Verdict(
            False,
            f"the newest drift report ({report_id}, {action}) is {_hours(age)} old, over the "
            f"{max_age_hours:g} h limit — {fix}",
            meta,
        )
    return Verdict(True, f"newest drift report ({report_id}, {action}) is {_hours(age)} old", meta)
