"""Decision policies: which effect each may trigger, on or off, dry run or live; every change audited."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.errors import ExecutionError
from orchestration_pipeline.lib.audit.ledger import audited
from orchestration_pipeline.lib.db import end_read, require_schema
from orchestration_pipeline.lib.executions.effects import (
    EffectRegistry,
    default_effects,
)

EXECUTION_TABLES = ("policies", "decision_executions", "alerts", "audit_ledger")
_POLICY_ID = re.compile(r"[A-Za-z0-9_.:-]+")  # as the policies.policy_id CHECK constraint


@dataclass(frozen=True)
class Policy:
    """A rule's switchboard: which effect it may trigger, whether it is on, and whether it simulates."""

    policy_id: str
    name: str
    effect: str
    enabled: bool = False
    dry_run: bool = True


def _policy_row(row: Mapping[str, Any] | None) -> Policy | None:
    if row is None:
        return None
    return Policy(row["policy_id"], row["name"], row["effect"], row["enabled"], row["dry_run"])


def get_policy(conn: psycopg.Connection, policy_id: str) -> Policy | None:
    """The policy, or None."""
    require_schema(conn, EXECUTION_TABLES, record_decision=False)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT policy_id, name, effect, enabled, dry_run FROM policies WHERE policy_id = %s",
            (policy_id,),
        ).fetchone()
    end_read(conn)
    return _policy_row(row)


def list_policies(conn: psycopg.Connection) -> list[Policy]:
    """All policies, by id."""
    require_schema(conn, EXECUTION_TABLES, record_decision=False)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT policy_id, name, effect, enabled, dry_run FROM policies ORDER BY policy_id"
        ).fetchall()
    end_read(conn)
    return [_policy_row(r) for r in rows]


def upsert_policy(
    conn: psycopg.Connection,
    policy: Policy,
    *,
    actor: str,
    request_id: str,
    reason: str | None = None,
    source: str | None = None,
    effects: EffectRegistry | None = None,
) -> Policy:
    """Create or change a policy, audited in the same transaction; an unchanged policy writes nothing."""
    if not _POLICY_ID.fullmatch(policy.policy_id):
        raise ExecutionError(
            f"policy id {policy.policy_id!r} is not valid — use letters, digits and _ . : - (e.g. tag-flaky)"
        )
    if not policy.name.strip():
        raise ExecutionError(f"policy {policy.policy_id}: the name is blank — give a --name with some text")
    (effects or default_effects()).get(policy.effect)  # an unknown effect is refused here, not at run time
    require_schema(conn, EXECUTION_TABLES, source=source or "policies")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        before = _policy_row(
            cur.execute(
                "SELECT policy_id, name, effect, enabled, dry_run FROM policies WHERE policy_id = %s FOR UPDATE",
                (policy.policy_id,),
            ).fetchone()
        )
        if before == policy:
            return policy
        audited(  # the change and its audit entry in one statement
            conn,
            """INSERT INTO policies (policy_id, name, effect, enabled, dry_run) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (policy_id) DO UPDATE SET name = excluded.name, effect = excluded.effect,
                   enabled = excluded.enabled, dry_run = excluded.dry_run, updated_at = now()""",
            (policy.policy_id, policy.name, policy.effect, policy.enabled, policy.dry_run),
            expect_rows=1,
            actor=actor,
            request_id=request_id,
            operation="create" if before is None else "update",
            entity_type="policy",
            entity_id=policy.policy_id,
            before=asdict(before) if before else None,
            after=asdict(policy),
            reason=reason,
            source=source,
        )
    return policy
