"""``policy set|list`` and ``decisions execute|list|rescue``: decision policies and executions."""

from __future__ import annotations

import json
from datetime import UTC

import click

from orchestration_pipeline.cli._common import database_urls, identity_options, orchestration_dsn, who


def _no_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object, refusing a key given twice (RFC 8785 takes I-JSON: which one would count?)."""
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"key {repeated!r} appears twice in one object — give each key once")
    return body


@click.group()
def policy() -> None:
    """Decision policies: which effect each may trigger, on/off, dry-run/live. Changes are audited."""


@policy.command("set")
@click.argument("policy_id")
@click.option("--name", help="Human-readable name (default: the id, or the current name).")
@click.option("--effect", help="create_task, label or notify (required for a new policy).")
@click.option("--enable/--disable", "enabled", default=None, help="Turn the policy on or off.")
@click.option("--dry-run/--live", "dry_run", default=None, help="Simulate only, or perform effects.")
@click.option("--reason", help="Why, for the audit ledger.")
@identity_options
def policy_set(
    policy_id: str,
    name: str | None,
    effect: str | None,
    enabled: bool | None,
    dry_run: bool | None,
    reason: str | None,
    actor: str | None,
    request_id: str | None,
) -> None:
    """Create a policy or change some of its fields (new policies start disabled and dry-run)."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.executions.policies import Policy, get_policy, upsert_policy

    actor, request_id = who(actor, request_id)
    urls = database_urls()  # resolved once: with the embedded server this may start it
    with connection(urls.orchestration) as conn:
        current = get_policy(conn, policy_id)
        if current is None and not effect:
            raise click.UsageError(f"policy {policy_id} is new: give --effect (create_task, label or notify)")
        base = current or Policy(policy_id, name or policy_id, effect or "")
        wanted = Policy(
            policy_id,
            name or base.name,
            effect or base.effect,
            base.enabled if enabled is None else enabled,
            base.dry_run if dry_run is None else dry_run,
        )
        upsert_policy(
            conn, wanted, actor=actor, request_id=request_id, reason=reason, source="cli:policy set"
        )
    state = ("enabled" if wanted.enabled else "disabled") + (", dry-run" if wanted.dry_run else ", live")
    click.echo(f"policy {policy_id}: {wanted.effect}, {state} (request {request_id})")


@policy.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def policy_list(as_json: bool) -> None:
    """All policies and their switches."""
    from dataclasses import asdict

    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.executions.policies import list_policies

    with connection(orchestration_dsn()) as conn:
        policies = list_policies(conn)
    for p in policies:
        if as_json:
            click.echo(json.dumps(asdict(p)))
        else:
            click.echo(
                f"{p.policy_id}  {p.effect:<12} {'enabled' if p.enabled else 'disabled':<8} "
                f"{'dry-run' if p.dry_run else 'LIVE':<7} {p.name}"
            )


@click.group()
def decisions() -> None:
    """Decision executions: run an action at most once, list attempts, rescue stale claims."""


#: The exit status of ``decisions execute`` when a stale claim holds the action.
STALE_CLAIM_EXIT = 3


def _utc(moment) -> str:
    return moment.astimezone(UTC).isoformat(sep=" ", timespec="seconds")


def _stale_claim_message(outcome) -> str:
    return (
        f"the claim holding this action is stale: execution {outcome.execution_id} (attempt "
        f"{outcome.attempt}) is still pending though its lease expired at {_utc(outcome.lease_expires_at)} "
        "(its worker died or is stuck), so this attempt did nothing — run 'orchestration-pipeline "
        "decisions rescue' to resolve the claim, then execute again"
    )


def _tasks_connection_factory(dsn: str):
    from orchestration_pipeline.lib.db import connection

    return lambda: connection(dsn)


@decisions.command("execute")
@click.argument("policy_id")
@click.option("--target", "target_ref", help="Target reference, e.g. the task id to label.")
@click.option("--payload", default="{}", show_default=True, help="The effect's payload as a JSON object.")
@click.option("--dry-run", is_flag=True, help="Simulate even if the policy is live.")
@click.option("--lease-seconds", default=300, show_default=True, type=click.IntRange(1), help="Claim lease.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@identity_options
def decisions_execute(
    policy_id: str,
    target_ref: str | None,
    payload: str,
    dry_run: bool,
    lease_seconds: int,
    as_json: bool,
    actor: str | None,
    request_id: str | None,
) -> None:
    """Execute the policy's effect once for TARGET and PAYLOAD (a repeat is skipped as a duplicate).

    \b
      orchestration-pipeline decisions execute tag-flaky --target T-42 --payload '{"tag": "flaky"}'

    \b
    Exit status:
      0  succeeded, duplicate, simulated, or in_progress (another worker holds the claim)
      1  failed, or lease_lost; also any error before the effect ran
      2  bad usage (an unknown option, a --payload that is not a JSON object)
      3  stale_claim: a claim holds the action past its lease (its worker died or is stuck), so
         nothing ran; 'orchestration-pipeline decisions rescue' resolves it, then execute again
    """
    from datetime import timedelta

    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.executions.executor import Action, execute_action
    from orchestration_pipeline.lib.executions.policies import get_policy
    from orchestration_pipeline.lib.redaction import redacted_copy

    try:
        body = json.loads(payload, object_pairs_hook=_no_repeated_keys)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    if not isinstance(body, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--payload")
    actor, request_id = who(actor, request_id)
    urls = database_urls()  # resolved once: with the embedded server this may start it
    with connection(urls.orchestration) as conn:
        current = get_policy(conn, policy_id)
        outcome = execute_action(
            conn,
            Action(policy_id, current.effect if current else "", target_ref, body),
            actor=actor,
            request_id=request_id,
            tasks_connection=_tasks_connection_factory(urls.tasks),
            lease=timedelta(seconds=lease_seconds),
            dry_run=dry_run,
            source="cli:decisions execute",
        )
    # Printed output lands in CI and job logs: the result as it is stored, secrets redacted.
    result = redacted_copy(outcome.result) if outcome.result else None
    if as_json:
        click.echo(json.dumps({**outcome.as_dict(), "result": result}, default=str))
    else:
        click.echo(
            f"{outcome.status}: execution {outcome.execution_id} attempt {outcome.attempt} "
            f"hash {outcome.action_hash[:16]}…"
            + (f" result {json.dumps(result, default=str)}" if result else "")
            + (f" error {outcome.error}" if outcome.error else "")
            + (
                f" lease {'expired' if outcome.status == 'stale_claim' else 'until'} {_utc(outcome.lease_expires_at)}"
                if outcome.lease_expires_at
                else ""
            )
        )
    if outcome.status in ("failed", "lease_lost"):
        raise SystemExit(1)
    if outcome.status == "stale_claim":
        click.echo(f"error: {_stale_claim_message(outcome)}", err=True)
        raise SystemExit(STALE_CLAIM_EXIT)


@decisions.command("list")
@click.option("--policy", "policy_id", help="Only this policy.")
@click.option("--state", type=click.Choice(["pending", "succeeded", "failed"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def decisions_list(policy_id: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """Recent execution attempts, newest first."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.executions.history import list_executions

    with connection(orchestration_dsn()) as conn:
        rows = list_executions(conn, policy_id=policy_id, state=state, limit=limit)
    for r in rows:
        if as_json:
            click.echo(json.dumps(r, default=str))
        else:
            mode = "dry-run" if r["dry_run"] else "live"
            click.echo(
                f"#{r['execution_id']} {r['policy_id']} {r['effect']} {r['target_ref'] or '-'} {mode} "
                f"{r['state']} attempt {r['attempt']} skips {r['duplicate_skips']}"
                + (f"\n    error: {r['error_text']}" if r["error_text"] else "")
            )


@decisions.command("rescue")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@identity_options
def decisions_rescue(limit: int, as_json: bool, actor: str | None, request_id: str | None) -> None:
    """Resolve claims pending past their lease: succeeded if the effect happened, else failed (retryable)."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.executions.rescue import rescue_stale_claims

    actor, request_id = who(actor, request_id)
    urls = database_urls()  # resolved once: with the embedded server this may start it
    with connection(urls.orchestration) as conn:
        report = rescue_stale_claims(
            conn,
            actor=actor,
            request_id=request_id,
            tasks_connection=_tasks_connection_factory(urls.tasks),
            limit=limit,
            source="cli:decisions rescue",
        )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(
            f"examined {report.examined}: {len(report.succeeded)} found done, {len(report.failed)} marked failed, "
            f"{len(report.skipped)} resolved meanwhile"
        )
