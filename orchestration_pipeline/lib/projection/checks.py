"""Verifications of the task projection and its reconciliation, as Verdicts (no Dagster)."""

from __future__ import annotations

from datetime import datetime

import psycopg

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.projection.drift import DRIFT_CLASSES, compare, recent_reports
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
