"""The verdicts of the restore asset checks, read from ``restore_drills`` and ``backups`` (no Dagster)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.verdict import Verdict

#: An RTO above this fails ``rto_within_target`` (the target of the durability requirements).
RTO_TARGET_MINUTES = 60.0
#: A last good backup older than this warns in ``backup_fresh``: the weekly drill, plus a day.
BACKUP_MAX_AGE_HOURS = 8 * 24.0
_DRILL = "'orchestration-pipeline drill' (or materialize restore_drill)"


def _latest_drill(conn: psycopg.Connection, where: str = "true") -> dict[str, Any] | None:
    """The newest finished drill (matching the fixed SQL condition ``where``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"""SELECT drill_id, state, backup_id, started_at, finished_at, rto_s, rpo_s, error, verdict
                FROM restore_drills WHERE state <> 'running' AND {where}
                ORDER BY started_at DESC LIMIT 1"""
        ).fetchone()
    end_read(conn)
    return row


def _failed_checks(verdict: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The blocking checks a recorded verdict failed, with their details."""
    checks = (verdict or {}).get("checks") or []
    return [
        {"name": c["name"], "detail": c["detail"]}
        for c in checks
        if not c["passed"] and c.get("blocking", True)
    ]


def restore_drill_passed(conn: psycopg.Connection) -> Verdict:
    """The latest finished drill restored its backup and passed every blocking check."""
    drill = _latest_drill(conn)
    if drill is None:
        return Verdict(False, f"no restore drill has finished yet — run {_DRILL}", {"drills": 0})
    failed = _failed_checks(drill["verdict"])
    meta = {
        "drill_id": str(drill["drill_id"]),
        "state": drill["state"],
        "backup_id": drill["backup_id"],
        "finished_at": drill["finished_at"].isoformat(),
        "rto_s": drill["rto_s"],
        "rpo_s": drill["rpo_s"],
        "failed_checks": failed[:10],
    }
    if drill["state"] == "passed":
        return Verdict(
            True, f"drill {drill['drill_id']} restored backup {drill['backup_id']} and verified it", meta
        )
    if drill["state"] == "failed":
        reasons = "; ".join(f"{c['name']}: {c['detail']}" for c in failed[:3])
        return Verdict(
            False,
            f"backup {drill['backup_id']} failed its drill ({reasons}) — see docs/runbooks/restore.md",
            meta,
        )
    why = drill["error"] or "no reason recorded"
    return Verdict(False, f"the latest drill did not finish ({drill['state']}): {why}", meta)


def rto_within_target(conn: psycopg.Connection, *, target_minutes: float = RTO_TARGET_MINUTES) -> Verdict:
    """The latest drill that measured an RTO restored and verified within the target."""
    if target_minutes <= 0:
        raise ValueError("target_minutes must be positive")
    drill = _latest_drill(conn, "rto_s IS NOT NULL")
    target_s = target_minutes * 60
    if drill is None:
        return Verdict(False, f"no drill has measured an RTO yet — run {_DRILL}", {"target_s": target_s})
    ratio = drill["rto_s"] / target_s
    meta = {
        "drill_id": str(drill["drill_id"]),
        "backup_id": drill["backup_id"],
        "rto_s": round(drill["rto_s"], 3),
        "target_s": target_s,
        "ratio_to_target": round(ratio, 4),
        "phases": (drill["verdict"] or {}).get("phases", {}),
    }
    text = f"RTO {drill['rto_s']:.1f} s is {ratio:.1%} of the {target_minutes:g}-minute target"
    if ratio <= 1:
        return Verdict(True, text, meta)
    return Verdict(False, f"{text} — see the phases and docs/runbooks/restore.md#rto_within_target", meta)


def backup_fresh(
    conn: psycopg.Connection, *, max_age_hours: float = BACKUP_MAX_AGE_HOURS, now: datetime | None = None
) -> Verdict:
    """The newest backup shown to restore (by a passed drill) is younger than ``max_age_hours``. WARN."""
    with conn.cursor(row_factory=dict_row) as cur:
        proven = cur.execute(
            """SELECT b.backup_id, b.taken_at FROM backups b
               WHERE EXISTS (SELECT 1 FROM restore_drills r WHERE r.backup_id = b.backup_id AND r.state = 'passed')
               ORDER BY b.taken_at DESC LIMIT 1"""
        ).fetchone()
        newest = cur.execute(
            "SELECT backup_id, taken_at FROM backups ORDER BY taken_at DESC LIMIT 1"
        ).fetchone()
    end_read(conn)
    meta: dict[str, Any] = {
        "max_age_hours": max_age_hours,
        "newest_backup": newest["backup_id"] if newest else None,
    }
    if proven is None:
        return Verdict(False, f"no backup has been shown to restore yet — run {_DRILL}", meta, warn_only=True)
    age_h = ((now or datetime.now(UTC)) - proven["taken_at"]).total_seconds() / 3600
    meta.update(
        last_good_backup=proven["backup_id"],
        taken_at=proven["taken_at"].isoformat(),
        age_hours=round(age_h, 2),
    )
    text = f"the last good backup, {proven['backup_id']}, is {age_h:.1f} h old (limit {max_age_hours:g} h)"
    if age_h <= max_age_hours:
        return Verdict(True, text, meta, warn_only=True)
    return Verdict(False, f"{text} — run {_DRILL}", meta, warn_only=True)
