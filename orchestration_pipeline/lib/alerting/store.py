"""Reading alerts, and acknowledging one (audited).

An alert is ``open`` until someone acknowledges it or its source passes again, ``acknowledged``
once someone said they are on it (who, when and why are kept, and the audit ledger has the entry),
and ``resolved`` once its check, asset or job passes again. Alerts written by the ``notify``
decision effect never resolve: acknowledging is how they close.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.lib.alerting.model import AlertError
from orchestration_pipeline.lib.alerting.streaks import ALERT_TABLES
from orchestration_pipeline.lib.audit.ledger import record_audit, require_identity
from orchestration_pipeline.lib.db import end_read, require_schema

STATUS_SQL = """CASE WHEN a.resolved_at IS NOT NULL THEN 'resolved'
                     WHEN a.acknowledged_at IS NOT NULL THEN 'acknowledged' ELSE 'open' END"""
_COLUMNS = f"""a.alert_id, a.raised_at, {STATUS_SQL} AS status, a.source, a.severity, a.subject, a.message,
               a.details, a.check_key, a.asset_key, a.run_id, a.job_name, a.link_path, a.runbook,
               a.failed_at, a.last_failed_at, a.occurrences, a.resolved_at, a.resolution,
               a.acknowledged_at, a.acknowledged_by, a.ack_reason, a.execution_id"""
_DELIVERY = """(SELECT n.state FROM alert_notices n WHERE n.alert_id = a.alert_id AND n.kind = 'raised') AS delivery"""


def list_alerts(
    conn: psycopg.Connection, *, open_only: bool = False, limit: int = 50
) -> list[dict[str, Any]]:
    """Alerts, newest first: all of them, or only the open ones (neither acknowledged nor resolved)."""
    require_schema(conn, ALERT_TABLES, source="alerting")
    where = "WHERE a.resolved_at IS NULL AND a.acknowledged_at IS NULL" if open_only else ""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_COLUMNS}, {_DELIVERY} FROM alerts a {where} ORDER BY a.raised_at DESC, a.alert_id DESC LIMIT %s",
            (limit,),
        ).fetchall()
    end_read(conn)
    return rows


def get_alert(conn: psycopg.Connection, alert_id: int) -> dict[str, Any]:
    """One alert with its notices and every webhook attempt made for them."""
    require_schema(conn, ALERT_TABLES, source="alerting")
    with conn.cursor(row_factory=dict_row) as cur:
        alert = cur.execute(f"SELECT {_COLUMNS} FROM alerts a WHERE a.alert_id = %s", (alert_id,)).fetchone()
        if alert is None:
            end_read(conn)
            raise AlertError(
                f"no alert {alert_id} — 'orchestration-pipeline alerts list' shows the alert ids"
            )
        alert["notices"] = cur.execute(
            """SELECT notice_id, kind, state, created_at, finished_at FROM alert_notices
               WHERE alert_id = %s ORDER BY notice_id""",
            (alert_id,),
        ).fetchall()
        alert["attempts"] = cur.execute(
            """SELECT t.notice_id, t.attempt, t.attempted_at, t.outcome, t.http_status, t.error, t.duration_ms, t.target
               FROM alert_delivery_attempts t JOIN alert_notices n USING (notice_id)
               WHERE n.alert_id = %s ORDER BY t.attempt_id""",
            (alert_id,),
        ).fetchall()
    end_read(conn)
    return alert


def acknowledge(
    conn: psycopg.Connection,
    alert_id: int,
    *,
    reason: str,
    actor: str,
    request_id: str,
    source: str = "cli:alerts ack",
) -> dict[str, Any]:
    """Record who acknowledged an alert and why, with its audit entry, in one transaction.

    An alert is acknowledged once: a second acknowledgement is refused naming the first, so the
    record of who took it on is never overwritten.
    """
    require_identity(actor, request_id, what="acknowledging an alert", error=AlertError)
    if not reason or not reason.strip():
        raise AlertError('an acknowledgement needs a reason — pass --reason "what you are doing about it"')
    require_schema(conn, ALERT_TABLES, source="alerting")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        before = cur.execute(
            "SELECT alert_id, source, acknowledged_at, acknowledged_by FROM alerts WHERE alert_id = %s FOR UPDATE",
            (alert_id,),
        ).fetchone()
        if before is None:
            raise AlertError(
                f"no alert {alert_id} — 'orchestration-pipeline alerts list' shows the alert ids"
            )
        if before["acknowledged_at"] is not None:
            raise AlertError(
                f"alert {alert_id} was already acknowledged by {before['acknowledged_by'] or '(unknown)'} at "
                f"{before['acknowledged_at'].isoformat(timespec='seconds')} — 'alerts show {alert_id}' has the reason"
            )
        after = cur.execute(
            """UPDATE alerts SET acknowledged_at = now(), acknowledged_by = %s, ack_reason = %s
               WHERE alert_id = %s RETURNING alert_id, acknowledged_at, acknowledged_by, ack_reason""",
            (actor, reason.strip(), alert_id),
        ).fetchone()
        record_audit(
            conn,
            actor=actor,
            request_id=request_id,
            operation="update",
            entity_type="alert",
            entity_id=str(alert_id),
            before={"acknowledged_at": None, "source": before["source"]},
            after={"acknowledged_at": after["acknowledged_at"], "acknowledged_by": actor},
            reason=reason.strip(),
            source=source,
        )
    if not conn.autocommit:
        conn.commit()
    return after
