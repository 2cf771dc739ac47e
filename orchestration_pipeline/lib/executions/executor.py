"""Policies and idempotent decision executions.

An action is (policy, effect, target, payload); its ``action_hash`` is the sha256 of the RFC 8785
canonical JSON of those four (``lib/canonical_json.py``). :func:`execute_action` runs an action
at most once, in this order:

1. **Claim**: insert a ``pending`` row with ``INSERT … ON CONFLICT DO NOTHING`` on the partial
   unique index over live rows (``pending`` or ``succeeded``, not dry runs). A conflicting
   ``succeeded`` row makes the attempt a *duplicate*; a conflicting ``pending`` row means another
   worker is on it (*in_progress*), or, past its lease, that its worker died (*stale_claim*, until
   the rescuer resolves it). A concurrent claimer waits for the first claim's commit and
   then sees it, so the effect never runs twice. The same hash with different parameters raises
   :class:`ActionHashConflict`.
2. **Commit** the claim (with its audit entry).
3. **Perform** the effect with no orchestration transaction open, except for *local* effects,
   which write only the orchestration DB and are performed inside step 4's transaction.
4. **Record** ``succeeded`` with the effect's result and an audit entry. On failure, ``failed``
   and ``error_text`` are recorded in a transaction of their own, so they survive the effect's
   rollback; a failed row leaves the live index, so the action can be retried (``attempt`` + 1).

A claim whose worker died stays ``pending``; after its lease it is *stale*, and
:func:`rescue_stale_claims` asks the effect whether it happened (``probe``) and records
``succeeded`` if so, else ``failed`` (retryable). A dry run validates exactly like a live run,
records a simulated row (``dry_run = true``, outside the live index) and performs nothing.

Secrets are redacted before anything is stored (``lib/redaction.py``): a row holds the target,
payload, result and ``error_text`` redacted, while the hash covers the original action and the
effect is handed the original; the claim's same-parameters check compares redacted forms, and the
rescuer's probe sees the stored, redacted ones (where a value it would look for was redacted, it
cannot tell, and the retry with the original action settles it).

Every state change writes its audit entry in the same transaction (``lib/audit.py``), as do
policy changes. When the canonical form ever changes, ``canonicalizer_version`` tells old hashes
from new ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from orchestration_pipeline.errors import ActionHashConflict, ExecutionError
from orchestration_pipeline.lib.audit.ledger import record_audit, require_identity
from orchestration_pipeline.lib.canonical_json import (
    CANONICALIZER_VERSION,
    canonical_json,
    canonical_sha256,
    json_has_nul,
)
from orchestration_pipeline.lib.db import end_read, require_schema
from orchestration_pipeline.lib.executions.effects import (
    ActionRun,
    Effect,
    EffectContext,
    EffectFailed,
    EffectRegistry,
    default_effects,
)
from orchestration_pipeline.lib.executions.policies import EXECUTION_TABLES, Policy, get_policy
from orchestration_pipeline.lib.redaction import redact_text, redacted_copy

DEFAULT_LEASE = timedelta(minutes=5)
ENTITY = "decision_execution"
_ERROR_TEXT_MAX = 4000
TasksConnection = Callable[[], AbstractContextManager[psycopg.Connection]]


@dataclass(frozen=True)
class Action:
    """What a policy wants done: an effect on a target with a payload."""

    policy_id: str
    effect: str
    target_ref: str | None
    payload: Mapping[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The four fields the action hash covers."""
        return {
            "policy_id": self.policy_id,
            "effect": self.effect,
            "target_ref": self.target_ref,
            "payload": dict(self.payload),
        }

    @property
    def action_hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`document`."""
        return canonical_sha256(self.document())


@dataclass(frozen=True)
class ExecutionOutcome:
    """What happened to one attempt.

    ``status``: succeeded, failed, duplicate (already succeeded; skipped), in_progress (another
    worker holds the claim; skipped), stale_claim (a claim holds the action past its lease: its
    worker died or is stuck, and nothing runs until :func:`rescue_stale_claims` resolves it;
    skipped), simulated (dry run) or lease_lost (the rescuer resolved the claim before this worker
    could record its outcome).

    ``lease_expires_at`` is the holding claim's lease, for in_progress and stale_claim.
    """

    status: str
    action_hash: str
    execution_id: int | None = None
    attempt: int | None = None
    dry_run: bool = False
    result: dict[str, Any] | None = None
    error: str | None = None
    lease_expires_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- executing --------------------------------------------------------------------------------


def error_text(exc: BaseException) -> str:
    """The error as stored and audited: secrets redacted (an effect's error may quote a DSN)."""
    text = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, ExecutionError | psycopg.Error | EffectFailed):
        text = f"{type(exc).__name__}: {text}"
    return redact_text(text)[0][:_ERROR_TEXT_MAX]


def _redacted_json(payload_json: str) -> str:
    """The canonical JSON of a payload as stored: secrets redacted (``payload_json`` when it has none)."""
    payload = json.loads(payload_json)
    redacted = redacted_copy(payload)
    return payload_json if redacted is payload else canonical_json(redacted)


def _redacted_target(target_ref: str | None) -> str | None:
    """The target as stored: secrets redacted (notify's target is its alert's free-text subject)."""
    return None if target_ref is None else redact_text(target_ref)[0]


def _same_target(live: str | None, original: str | None) -> bool:
    """Whether a live row's target is ``original``: stored redacted, as it was before targets were
    redacted, or under narrower redaction rules."""
    return live == original or _redacted_target(live) == _redacted_target(original)


def _redacts_to(stored: Any, stored_json: str) -> bool:
    """Whether a stored payload, redacted now, is ``stored_json``: true for a row written before
    payloads were redacted (it holds the original) or under narrower redaction rules."""
    try:
        return _redacted_json(canonical_json(stored)) == stored_json
    except ExecutionError:  # no canonical form: the row was altered
        return False


def require_idle(conn: psycopg.Connection, what: str) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ExecutionError(
            f"{what} commits between its steps, so it needs a connection with no open transaction — "
            "commit or roll back first"
        )


def _validated(
    conn: psycopg.Connection, action: Action, effects: EffectRegistry
) -> tuple[Policy, Effect, str]:
    """The shared validation path of live and dry runs: policy, effect, payload, canonical form."""
    policy = get_policy(conn, action.policy_id)
    if policy is None:
        raise ExecutionError(
            f"unknown policy {action.policy_id!r} — create it with 'orchestration-pipeline policy set'"
        )
    if not policy.enabled:
        raise ExecutionError(
            f"policy {policy.policy_id} is disabled — enable it with "
            f"'orchestration-pipeline policy set {policy.policy_id} --enable'"
        )
    if action.effect != policy.effect:
        raise ExecutionError(
            f"policy {policy.policy_id} may only trigger {policy.effect!r}, not {action.effect!r} — fix the action"
        )
    effect = effects.get(action.effect)
    if not isinstance(action.payload, Mapping):
        raise ExecutionError("the action payload must be a JSON object")
    effect.validate(action.target_ref, action.payload)
    # Raises on values without a canonical form (NaN, huge integers, lone surrogates).
    canonical = canonical_json(action.document())
    if json_has_nul(canonical):
        raise ExecutionError(
            "the action's target or payload holds a NUL character (\\u0000), which PostgreSQL "
            "cannot store — remove it"
        )
    return policy, effect, hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _claim(
    conn: psycopg.Connection,
    action: Action,
    action_hash: str,
    stored_json: str,
    *,
    actor: str,
    request_id: str,
    lease: timedelta,
    source: str | None,
) -> tuple[str, dict[str, Any]]:
    """Steps 1–2: claim the hash and commit. Returns ('claimed' | 'succeeded' | 'pending', row).

    ``stored_json`` is the payload's canonical JSON with its secrets redacted, as the row holds it;
    a live row holding another payload under the same hash is a conflict.
    """
    for _ in range(5):  # a competing claim may fail between our two statements; then claim again
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            row = _insert_claim(cur, action, action_hash, stored_json, lease, actor, request_id)
            if row is not None:
                record_audit(
                    conn,
                    actor=actor,
                    request_id=request_id,
                    operation="create",
                    entity_type=ENTITY,
                    entity_id=str(row["execution_id"]),
                    after={
                        **action.document(),
                        "state": "pending",
                        "attempt": row["attempt"],
                        "action_hash": action_hash,
                    },
                    reason="claim",
                    source=source,
                )
                return "claimed", row
            live = _live_claim(cur, action, action_hash, stored_json)
            if live is not None:
                return live["state"], live
    raise ExecutionError(
        f"could not claim action {action_hash}: its claims keep changing — retry later"
    )  # pragma: no cover - needs five lost races in a row


def _insert_claim(
    cur: psycopg.Cursor,
    action: Action,
    action_hash: str,
    stored_json: str,
    lease: timedelta,
    actor: str,
    request_id: str,
) -> dict[str, Any] | None:
    """The new pending row, or None when a live row (pending or succeeded) already holds the hash."""
    return cur.execute(
        """INSERT INTO decision_executions (policy_id, effect, target_ref, payload, dry_run, state, attempt,
               action_hash, canonicalizer_version, lease_expires_at, actor, request_id)
           SELECT %(policy_id)s, %(effect)s, %(target_ref)s, %(payload)s::jsonb, false, 'pending',
                  coalesce((SELECT max(attempt) FROM decision_executions
                            WHERE action_hash = %(hash)s AND NOT dry_run), 0) + 1,
                  %(hash)s, %(version)s, now() + %(lease)s, %(actor)s, %(request_id)s
           ON CONFLICT (action_hash) WHERE state IN ('pending', 'succeeded') AND NOT dry_run DO NOTHING
           RETURNING execution_id, attempt, state""",
        {
            "policy_id": action.policy_id,
            "effect": action.effect,
            "target_ref": _redacted_target(action.target_ref),
            "payload": stored_json,
            "hash": action_hash,
            "version": CANONICALIZER_VERSION,
            "lease": lease,
            "actor": actor,
            "request_id": request_id,
        },
    ).fetchone()


def _live_claim(
    cur: psycopg.Cursor, action: Action, action_hash: str, stored_json: str
) -> dict[str, Any] | None:
    """The live row holding the hash (with ``lease_expires_at`` and ``lease_expired``), its
    duplicate skip counted; None if it went away meanwhile.

    Raises :class:`ActionHashConflict` when that row holds other parameters under the same hash.
    """
    live = cur.execute(
        """SELECT execution_id, attempt, state, result, policy_id, effect, target_ref, payload,
                  lease_expires_at, state = 'pending' AND lease_expires_at < now() AS lease_expired,
                  payload = %s::jsonb AS same_payload
           FROM decision_executions
           WHERE action_hash = %s AND state IN ('pending', 'succeeded') AND NOT dry_run FOR UPDATE""",
        (stored_json, action_hash),
    ).fetchone()
    if live is None:
        return None
    same_payload = live.pop("same_payload")
    stored_payload = live.pop("payload")
    if not (
        (same_payload or _redacts_to(stored_payload, stored_json))
        and live["policy_id"] == action.policy_id
        and live["effect"] == action.effect
        and _same_target(live["target_ref"], action.target_ref)
    ):
        raise ActionHashConflict(
            f"action_hash {action_hash} already belongs to execution {live['execution_id']} with different "
            "parameters — the stored row was altered or the canonical form changed; investigate it with "
            f"'orchestration-pipeline audit query --entity {ENTITY}:{live['execution_id']}'"
        )
    # Counted, not audited: a skipped attempt changes nothing in the world.
    cur.execute(
        """UPDATE decision_executions SET duplicate_skips = duplicate_skips + 1, last_duplicate_at = now()
           WHERE execution_id = %s""",
        (live["execution_id"],),
    )
    return live


def _record_success(
    conn: psycopg.Connection,
    run: ActionRun,
    result: dict[str, Any],
    *,
    actor: str,
    request_id: str,
    source: str | None,
) -> str | None:
    """Step 4 inside the caller's transaction. Returns the state the claim had, or None when lost.

    A claim the rescuer already failed is corrected to ``succeeded`` when no newer attempt holds
    the action, so the record stays truthful about an effect that did happen.
    """
    row = conn.execute(
        """UPDATE decision_executions d
              SET state = 'succeeded', result = %s, error_text = NULL, executed_at = now()
             FROM (SELECT execution_id, state AS old_state FROM decision_executions
                   WHERE execution_id = %s FOR UPDATE) o
            WHERE d.execution_id = o.execution_id
              AND (o.old_state = 'pending'
                   OR (o.old_state = 'failed' AND NOT EXISTS (
                         SELECT 1 FROM decision_executions l
                         WHERE l.action_hash = d.action_hash AND l.state IN ('pending', 'succeeded')
                           AND NOT l.dry_run)))
        RETURNING o.old_state""",
        (Jsonb(redacted_copy(result)), run.execution_id),
    ).fetchone()
    if row is None:
        return None
    record_audit(
        conn,
        actor=actor,
        request_id=request_id,
        operation="complete",
        entity_type=ENTITY,
        entity_id=str(run.execution_id),
        before={"state": row[0]},
        after={"state": "succeeded", "result": result},
        reason="effect succeeded"
        + ("" if row[0] == "pending" else " after the rescuer had failed the claim"),
        source=source,
    )
    return row[0]


def _record_failure(
    conn: psycopg.Connection, run: ActionRun, error: str, *, actor: str, request_id: str, source: str | None
) -> None:
    """Record ``failed`` in a transaction of its own (nothing when the claim is no longer pending)."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        conn.rollback()
    with conn.transaction():
        row = conn.execute(
            """UPDATE decision_executions SET state = 'failed', error_text = %s, executed_at = now()
               WHERE execution_id = %s AND state = 'pending' RETURNING execution_id""",
            (error, run.execution_id),
        ).fetchone()
        if row is None:
            return
        record_audit(
            conn,
            actor=actor,
            request_id=request_id,
            operation="update",
            entity_type=ENTITY,
            entity_id=str(run.execution_id),
            before={"state": "pending"},
            after={"state": "failed", "error_text": error},
            reason="effect failed; retryable",
            source=source,
        )


def _dry_run(
    conn: psycopg.Connection,
    action: Action,
    effect: Effect,
    ctx: EffectContext,
    action_hash: str,
    stored_json: str,
    *,
    actor: str,
    request_id: str,
    source: str | None,
) -> ExecutionOutcome:
    run = ActionRun(None, action.policy_id, action.effect, action.target_ref, action.payload, action_hash, 1)
    error, simulation = (
        None,
        {"simulated": False, "reason": "effect is not dry-run safe; payload validated only"},
    )
    if effect.dry_run_safe:
        try:
            simulation = {"simulated": True, **effect.simulate(ctx, run)}
        except Exception as exc:  # a simulation that cannot run is a failed dry run, recorded
            error = error_text(exc)
        end_read(conn)
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO decision_executions (policy_id, effect, target_ref, payload, dry_run, state, error_text,
                   attempt, action_hash, canonicalizer_version, lease_expires_at, executed_at, result, actor, request_id)
               VALUES (%s, %s, %s, %s::jsonb, true, %s, %s, 1, %s, %s, now(), now(), %s, %s, %s)
               RETURNING execution_id""",
            (
                action.policy_id,
                action.effect,
                _redacted_target(action.target_ref),
                stored_json,
                "failed" if error else "succeeded",
                error,
                action_hash,
                CANONICALIZER_VERSION,
                Jsonb(redacted_copy(simulation)),
                actor,
                request_id,
            ),
        ).fetchone()
        record_audit(
            conn,
            actor=actor,
            request_id=request_id,
            operation="create",
            entity_type=ENTITY,
            entity_id=str(row[0]),
            after={**action.document(), "dry_run": True, "result": simulation, "error_text": error},
            reason="dry run: simulated, no effect performed",
            source=source,
        )
    return ExecutionOutcome(
        "failed" if error else "simulated", action_hash, row[0], 1, True, simulation, error
    )


def execute_action(
    conn: psycopg.Connection,
    action: Action,
    *,
    actor: str,
    request_id: str,
    tasks_connection: TasksConnection | None = None,
    effects: EffectRegistry | None = None,
    lease: timedelta = DEFAULT_LEASE,
    dry_run: bool = False,
    source: str | None = None,
) -> ExecutionOutcome:
    """Run ``action`` at most once: claim, commit, perform, record (see the module docstring).

    ``dry_run=True`` simulates even under a live policy; a dry-run policy always simulates.
    Failures of the effect are recorded and returned, not raised; a refused action raises
    :class:`ExecutionError` before anything is written.
    """
    require_idle(conn, "execute_action")
    require_identity(actor, request_id, what="execution", error=ExecutionError)
    require_schema(conn, EXECUTION_TABLES, source=source or "decision executions")
    effects = effects or default_effects()
    policy, effect, action_hash = _validated(conn, action, effects)
    payload_json = canonical_json(dict(action.payload))
    stored_json = _redacted_json(payload_json)  # the effect below still gets action.payload itself
    ctx = EffectContext(orch_conn=conn, tasks_connection=tasks_connection)
    who = {"actor": actor, "request_id": request_id, "source": source}
    if dry_run or policy.dry_run:
        return _dry_run(conn, action, effect, ctx, action_hash, stored_json, **who)

    state, claim = _claim(conn, action, action_hash, stored_json, lease=lease, **who)
    if state != "claimed":
        return _skipped(action_hash, claim)
    run = ActionRun(
        claim["execution_id"],
        action.policy_id,
        action.effect,
        action.target_ref,
        action.payload,
        action_hash,
        claim["attempt"],
    )
    return _perform_and_record(conn, effect, ctx, run, **who)


def _skipped(action_hash: str, live: dict[str, Any]) -> ExecutionOutcome:
    """An attempt a live row holds: duplicate (succeeded), in_progress, or stale_claim (pending
    past its lease, by the database's clock)."""
    if live["state"] == "succeeded":
        return ExecutionOutcome(
            "duplicate", action_hash, live["execution_id"], live["attempt"], result=live.get("result")
        )
    return ExecutionOutcome(
        "stale_claim" if live["lease_expired"] else "in_progress",
        action_hash,
        live["execution_id"],
        live["attempt"],
        lease_expires_at=live["lease_expires_at"],
    )


def _perform_and_record(
    conn: psycopg.Connection, effect: Effect, ctx: EffectContext, run: ActionRun, **who: Any
) -> ExecutionOutcome:
    """Steps 3–4 for a claimed action: perform the effect, then record its success or failure."""
    action_hash = run.action_hash
    try:
        if effect.local:
            with conn.transaction():
                result = effect.perform(ctx, run)
                previous = _record_success(conn, run, result, **who)
                if previous is None:
                    raise _ClaimLost()
        else:
            result = effect.perform(ctx, run)
    except _ClaimLost:
        return ExecutionOutcome(
            "lease_lost",
            action_hash,
            run.execution_id,
            run.attempt,
            error="the claim's lease expired and it was resolved by the rescuer; the effect was rolled back",
        )
    except Exception as exc:
        error = error_text(exc)
        _record_failure(conn, run, error, **who)
        return ExecutionOutcome("failed", action_hash, run.execution_id, run.attempt, error=error)

    if not effect.local:
        # The effect is done; if recording fails now (database gone), the claim stays pending and
        # the rescuer's probe finds the effect and records the success.
        with conn.transaction():
            previous = _record_success(conn, run, result, **who)
            state = None
            if previous is None:
                state = conn.execute(
                    "SELECT state FROM decision_executions WHERE execution_id = %s", (run.execution_id,)
                ).fetchone()[0]
        if previous is None and state == "succeeded":
            # the effect outlived its lease and the rescuer's probe found it done: recorded already
            return ExecutionOutcome("succeeded", action_hash, run.execution_id, run.attempt, result=result)
        if previous is None:
            return ExecutionOutcome(
                "lease_lost",
                action_hash,
                run.execution_id,
                run.attempt,
                result=result,
                error="the effect ran, but a newer attempt already holds the action; the rescuer had failed this claim",
            )
    return ExecutionOutcome("succeeded", action_hash, run.execution_id, run.attempt, result=result)


class _ClaimLost(Exception):
    """Raised inside a local effect's transaction to roll the effect back."""
