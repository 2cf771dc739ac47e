"""Observations folded into streaks: one alert per source per failure streak, and its notices.

A source is failing or passing. The first failure of a streak at or above the minimum severity
raises one alert (a failure below it is remembered, and raises the alert if a later failure of the
same streak reaches the threshold); a failure more severe than the alert escalates it once; further
failures only count (``occurrences``); the next pass resolves it. Each raise, escalation and
resolution writes one row of ``alert_notices`` in the same transaction, for the sinks of
:mod:`orchestration_pipeline.lib.alerting.delivery` to deliver after commit.

Applying an observation is idempotent: each source remembers the last observation applied (its time
and Dagster event), and one that is not newer changes nothing. A sensor tick that is retried after
writing (the process died before Dagster stored its cursor) therefore raises nothing twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from orchestration_pipeline.lib.alerting.model import Observation, meets, parse_threshold, rank
from orchestration_pipeline.lib.db import require_schema
from orchestration_pipeline.lib.redaction import redact_text, redacted_copy

ALERT_TABLES = ("alerts", "alert_streaks", "alert_notices", "alert_delivery_attempts")
#: What applying one observation did.
OUTCOMES = ("raised", "escalated", "repeated", "resolved", "below_threshold", "passing", "replayed")


@dataclass
class ApplyReport:
    """What a batch of observations did: a count per outcome, and the alerts each notice is about."""

    outcomes: Counter = field(default_factory=Counter)
    notices: list[tuple[str, int]] = field(default_factory=list)  # (kind, alert_id)

    def summary(self) -> str:
        counted = ", ".join(f"{self.outcomes[o]} {o}" for o in OUTCOMES if self.outcomes[o])
        return counted or "nothing new"


def apply_observations(
    conn: psycopg.Connection, observations: list[Observation], *, min_severity: str
) -> ApplyReport:
    """Fold ``observations`` (in the order given: oldest first) into their streaks, in one
    transaction; raise, escalate and resolve alerts and write their notices. Commits."""
    threshold = parse_threshold(min_severity)
    # no decision event per refusal: a sensor calls this every 30 s, its failed tick says it already
    require_schema(conn, ALERT_TABLES, source="alerting", record_decision=False)
    report = ApplyReport()
    with conn.transaction():
        for observation in observations:
            outcome, notice = _apply(conn, observation, threshold)
            report.outcomes[outcome] += 1
            if notice is not None:
                report.notices.append(notice)
    if not conn.autocommit:
        conn.commit()
    return report


def _streak(conn: psycopg.Connection, source: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT s.*, a.severity AS alert_severity
               FROM alert_streaks s LEFT JOIN alerts a ON a.alert_id = s.alert_id
               WHERE s.source = %s FOR UPDATE OF s""",
            (source,),
        ).fetchone()


def _already_applied(streak: dict[str, Any] | None, obs: Observation) -> bool:
    if streak is None:
        return False
    last = streak["last_observed_at"]
    return obs.observed_at < last or (obs.observed_at == last and obs.event_ref == streak["last_event_ref"])


def _apply(conn: psycopg.Connection, obs: Observation, threshold: str) -> tuple[str, tuple[str, int] | None]:
    """Apply one observation; returns its outcome and the notice it wrote, if any."""
    streak = _streak(conn, obs.source)
    if _already_applied(streak, obs):
        return "replayed", None
    if not obs.failing:
        return _passed(conn, obs, streak)
    if streak is None or streak["state"] == "passing":
        streak = {"state": "failing", "started_at": obs.observed_at, "failures": 0, "alert_id": None,
                  "severity": obs.severity, "alert_severity": None}  # fmt: skip
    streak["failures"] += 1
    if rank(obs.severity) > rank(streak["severity"]):
        streak["severity"] = obs.severity
    outcome, notice = "below_threshold", None
    if streak["alert_id"] is None:
        if meets(streak["severity"], threshold):
            streak["alert_id"] = _raise(conn, obs, streak)
            outcome, notice = "raised", ("raised", streak["alert_id"])
    else:
        escalated = rank(obs.severity) > rank(streak["alert_severity"])
        _repeat(conn, streak["alert_id"], obs, escalated)
        outcome = "escalated" if escalated else "repeated"
        notice = ("escalated", streak["alert_id"]) if escalated else None
    if notice is not None and not _notice(conn, *notice):
        notice = None  # this alert was escalated before: once is enough
    _save(conn, obs, streak)
    return outcome, notice


def _passed(
    conn: psycopg.Connection, obs: Observation, streak: dict[str, Any] | None
) -> tuple[str, tuple[str, int] | None]:
    """A pass ends a failing streak; the streak's alert, if it raised one, is resolved."""
    notice = None
    if streak is not None and streak["state"] == "failing" and streak["alert_id"] is not None:
        conn.execute(
            "UPDATE alerts SET resolved_at = %s, resolution = %s WHERE alert_id = %s AND resolved_at IS NULL",
            (obs.observed_at, redact_text(obs.message)[0], streak["alert_id"]),
        )
        if _notice(conn, "resolved", streak["alert_id"]):
            notice = ("resolved", streak["alert_id"])
    was_failing = streak is not None and streak["state"] == "failing"
    started = obs.observed_at if was_failing or streak is None else streak["started_at"]
    _save(
        conn,
        obs,
        {"state": "passing", "started_at": started, "failures": 0, "alert_id": None, "severity": None},
    )
    return ("resolved" if notice else "passing"), notice


def _raise(conn: psycopg.Connection, obs: Observation, streak: dict[str, Any]) -> int:
    """Insert the streak's alert; secrets in its message and details are redacted first."""
    details = redacted_copy({**obs.details, "event_ref": obs.event_ref})
    row = conn.execute(
        """INSERT INTO alerts (source, severity, subject, message, details, check_key, asset_key, run_id,
                               job_name, link_path, runbook, failed_at, last_failed_at, occurrences)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING alert_id""",
        (
            obs.source,
            streak["severity"],
            obs.check_key or obs.asset_key or obs.job_name or obs.source,
            redact_text(obs.message)[0],
            Jsonb(details),
            obs.check_key,
            obs.asset_key,
            obs.run_id,
            obs.job_name,
            obs.link_path,
            obs.runbook,
            streak["started_at"],
            obs.observed_at,
            streak["failures"],
        ),
    ).fetchone()
    return int(row[0])


def _repeat(conn: psycopg.Connection, alert_id: int, obs: Observation, escalated: bool) -> None:
    """Count one more failure of an open streak; an escalation raises the alert's severity and
    keeps the failure that escalated it beside the first one."""
    latest = redacted_copy({"message": obs.message, "run_id": obs.run_id, "event_ref": obs.event_ref})
    conn.execute(
        """UPDATE alerts SET occurrences = occurrences + 1, last_failed_at = %s,
                  severity = CASE WHEN %s THEN %s ELSE severity END,
                  details = details || jsonb_build_object('latest', %s::jsonb)
           WHERE alert_id = %s""",
        (obs.observed_at, escalated, obs.severity, Jsonb(latest), alert_id),
    )


def _notice(conn: psycopg.Connection, kind: str, alert_id: int) -> bool:
    """Write the notice for the sinks; False when this alert already has one of this kind."""
    row = conn.execute(
        """INSERT INTO alert_notices (alert_id, kind) VALUES (%s, %s)
           ON CONFLICT ON CONSTRAINT alert_notices_one_per_kind DO NOTHING RETURNING notice_id""",
        (alert_id, kind),
    ).fetchone()
    return row is not None


def _save(conn: psycopg.Connection, obs: Observation, streak: dict[str, Any]) -> None:
    conn.execute(
        """INSERT INTO alert_streaks (source, state, severity, started_at, failures, alert_id, last_observed_at,
                                      last_event_ref, updated_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
           ON CONFLICT (source) DO UPDATE SET
               state = EXCLUDED.state, severity = EXCLUDED.severity, started_at = EXCLUDED.started_at,
               failures = EXCLUDED.failures, alert_id = EXCLUDED.alert_id,
               last_observed_at = EXCLUDED.last_observed_at, last_event_ref = EXCLUDED.last_event_ref,
               updated_at = now()""",
        (obs.source, streak["state"], streak["severity"], streak["started_at"], streak["failures"],
         streak["alert_id"], obs.observed_at, obs.event_ref),
    )  # fmt: skip


def open_sources(conn: psycopg.Connection, kind: str) -> list[dict[str, Any]]:
    """The failing streaks of one kind of source (``run`` ...), with the time of their last failure:
    what a sensor asks Dagster about to find the pass that ends them."""
    require_schema(conn, ALERT_TABLES, source="alerting", record_decision=False)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT source, last_observed_at, alert_id FROM alert_streaks
               WHERE state = 'failing' AND split_part(source, ':', 1) = %s ORDER BY source""",
            (kind,),
        ).fetchall()
    if not conn.autocommit:
        conn.rollback()
    return rows
