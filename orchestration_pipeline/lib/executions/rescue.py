"""Claims whose worker died: found past their lease, probed, and resolved as succeeded or failed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from orchestration_pipeline.lib.audit.ledger import record_audit
from orchestration_pipeline.lib.db import end_read, require_schema
from orchestration_pipeline.lib.executions.effects import (
    ActionRun,
    EffectContext,
    EffectRegistry,
    ProbeResult,
    default_effects,
)
from orchestration_pipeline.lib.executions.executor import ENTITY, TasksConnection, error_text, require_idle
from orchestration_pipeline.lib.executions.policies import EXECUTION_TABLES
from orchestration_pipeline.lib.redaction import redacted_copy
from orchestration_pipeline.lib.verdict import Verdict

# --- stale claims -----------------------------------------------------------------------------


@dataclass
class RescueReport:
    """What :func:`rescue_stale_claims` did."""

    examined: int = 0
    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # resolved meanwhile by their own worker

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stale_claims(conn: psycopg.Connection, *, limit: int = 100) -> list[dict[str, Any]]:
    """Pending live claims whose lease has expired, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT execution_id, policy_id, effect, target_ref, payload, action_hash, attempt, claimed_at,
                      lease_expires_at, actor, request_id
               FROM decision_executions
               WHERE state = 'pending' AND lease_expires_at < now()
               ORDER BY lease_expires_at, execution_id LIMIT %s""",
            (limit,),
        ).fetchall()
    end_read(conn)
    return rows


def rescue_stale_claims(
    conn: psycopg.Connection,
    *,
    actor: str,
    request_id: str,
    tasks_connection: TasksConnection | None = None,
    effects: EffectRegistry | None = None,
    limit: int = 100,
    source: str | None = "rescuer",
) -> RescueReport:
    """Resolve stale claims: ``succeeded`` when the effect says it happened, else ``failed`` (retryable)."""
    require_idle(conn, "rescue_stale_claims")
    require_schema(conn, EXECUTION_TABLES, source=source or "rescuer")
    effects = effects or default_effects()
    ctx = EffectContext(orch_conn=conn, tasks_connection=tasks_connection)
    report = RescueReport()
    for claim in stale_claims(conn, limit=limit):
        report.examined += 1
        run = ActionRun(
            claim["execution_id"],
            claim["policy_id"],
            claim["effect"],
            claim["target_ref"],
            claim["payload"],
            claim["action_hash"],
            claim["attempt"],
        )
        # The probe may read the Tasks DB: it runs with no orchestration transaction open.
        try:
            probe = effects.get(run.effect).probe(ctx, run)
        except Exception as exc:
            probe = ProbeResult(None, {"probe_error": error_text(exc)})
        end_read(conn)
        lease_end = claim["lease_expires_at"]
        with conn.transaction():
            if probe.done:
                row = conn.execute(
                    """UPDATE decision_executions SET state = 'succeeded', result = %s, executed_at = now()
                       WHERE execution_id = %s AND state = 'pending' AND lease_expires_at < now()
                       RETURNING execution_id""",
                    (Jsonb(redacted_copy({**probe.detail, "recorded_by": "rescuer"})), run.execution_id),
                ).fetchone()
                operation, after = "complete", {"state": "succeeded", "probe": probe.detail}
                reason = "stale claim: the effect's probe found it done"
            else:
                why = (
                    "the effect reports it did not happen"
                    if probe.done is False
                    else "the effect cannot tell"
                )
                error = (
                    f"lease expired at {lease_end.isoformat()} without a recorded outcome; {why}; retryable"
                )
                row = conn.execute(
                    """UPDATE decision_executions SET state = 'failed', error_text = %s, executed_at = now()
                       WHERE execution_id = %s AND state = 'pending' AND lease_expires_at < now()
                       RETURNING execution_id""",
                    (error, run.execution_id),
                ).fetchone()
                operation, after = "update", {"state": "failed", "error_text": error, "probe": probe.detail}
                reason = "stale claim marked failed and retryable"
            if row is None:
                report.skipped.append(run.execution_id)
                continue
            record_audit(
                conn,
                actor=actor,
                request_id=request_id,
                operation=operation,
                entity_type=ENTITY,
                entity_id=str(run.execution_id),
                before={"state": "pending", "lease_expires_at": lease_end},
                after=after,
                reason=reason,
                source=source,
            )
        (report.succeeded if operation == "complete" else report.failed).append(run.execution_id)
    return report


def stale_claims_verdict(conn: psycopg.Connection) -> Verdict:
    """``no_stale_pending_executions`` (WARN): no live claim is pending past its lease."""
    rows = stale_claims(conn, limit=10)
    count = conn.execute(
        "SELECT count(*) FROM decision_executions WHERE state = 'pending' AND lease_expires_at < now()"
    ).fetchone()[0]
    end_read(conn)
    metadata = {
        "stale": count,
        "execution_ids": [r["execution_id"] for r in rows],
        "oldest_claimed_at": rows[0]["claimed_at"].isoformat() if rows else None,
    }
    if count == 0:
        return Verdict(True, "no pending execution is past its lease", metadata, warn_only=True)
    return Verdict(
        False,
        f"{count} pending execution(s) past their lease (first: {metadata['execution_ids'][:5]}) — "
        "run 'orchestration-pipeline decisions rescue'",
        metadata,
        warn_only=True,
    )
