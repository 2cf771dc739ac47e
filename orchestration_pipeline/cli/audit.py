"""``audit query|verify|checkpoint``: the append-only audit ledger."""

from __future__ import annotations

import json

import click

from orchestration_pipeline.cli._common import orchestration_dsn
from orchestration_pipeline.lib.audit import OPERATIONS
from orchestration_pipeline.lib.wording import plural


@click.group()
def audit() -> None:
    """Query and verify the append-only, hash-chained audit ledger."""


@audit.command("query")
@click.option(
    "--entity", metavar="TYPE[:ID]", help="e.g. policy:nightly-cleanup, decision_execution:42, quarantine."
)
@click.option("--actor", help="Only entries by this actor (exact).")
@click.option("--operation", type=click.Choice(sorted(OPERATIONS)), help="Only this kind of change.")
@click.option("--request-id", help="Only entries of this request.")
@click.option("--source", help="Only entries from this job or automation source.")
@click.option(
    "--since", help="From this time: 30m, 24h, 7d, 2w, or an ISO date/time (UTC unless an offset is given)."
)
@click.option("--until", help="Before this time (same formats as --since).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (before/after included).")
def audit_query(
    entity: str | None,
    actor: str | None,
    operation: str | None,
    request_id: str | None,
    source: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Answer "who changed what, when, and why" from the ledger, newest first.

    \b
      orchestration-pipeline audit query --entity policy:nightly-cleanup
      orchestration-pipeline audit query --actor cli:alice --since 24h
      orchestration-pipeline audit query --request-id cli-3f2a... --json
    """
    from orchestration_pipeline.lib.audit.ledger import AuditFilter, query_audit
    from orchestration_pipeline.lib.db import connection

    since_at, until_at = _audit_time(since, "--since"), _audit_time(until, "--until")
    if since_at is not None and until_at is not None and until_at <= since_at:
        raise click.BadParameter(
            f"{until!r} is not after --since {since!r} — give an --until later than --since",
            param_hint="--until",
        )
    entity_type, _, entity_id = (entity or "").partition(":")
    flt = AuditFilter(
        entity_type=entity_type or None,
        entity_id=entity_id or None,
        actor=actor,
        operation=operation,
        request_id=request_id,
        source=source,
        since=since_at,
        until=until_at,
        limit=limit,
    )
    with connection(orchestration_dsn()) as conn:
        rows = query_audit(conn, flt)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    if not rows:
        click.echo("no audit entries match")
        return
    for r in rows:
        click.echo(
            f"{r['occurred_at'].isoformat()}  #{r['audit_id']}  {r['operation']:<8} {r['entity_type']}:{r['entity_id']}"
            f"  by {r['actor']}  request {r['request_id']}"
            + (f"  source {r['source']}" if r["source"] else "")
            + (f"\n    reason: {r['reason']}" if r["reason"] else "")
            + (
                f"\n    before: {json.dumps(r['before_data'], default=str)}"
                if r["before_data"] is not None
                else ""
            )
            + (
                f"\n    after:  {json.dumps(r['after_data'], default=str)}"
                if r["after_data"] is not None
                else ""
            )
        )


def _audit_time(text: str | None, option: str):
    """--since/--until as a datetime; None when not given. Empty or out-of-range text is a usage error."""
    from orchestration_pipeline.lib.audit.ledger import parse_since

    if text is None:
        return None
    if not text.strip():
        raise click.BadParameter("is empty — give e.g. 30m, 24h, 7d or 2026-01-31", param_hint=option)
    try:
        return parse_since(text)
    except OverflowError:  # unreadable text is the lib's AuditError, which names the formats
        raise click.BadParameter(
            f"{text!r} is out of range — give a time after 0001-01-01, e.g. 30d or 2020-01-01",
            param_hint=option,
        ) from None


@audit.command("verify")
@click.option(
    "--chain",
    "chain_id",
    help="Verify only this chain (tx/<start µs>/<xid>, or YYYY-MM-DD/NN for entries written before "
    "per-transaction chains); checkpoints are then not checked.",
)
@click.option(
    "--expect-head",
    metavar="[SEQ:]HASH",
    help="A checkpoint kept outside the database (the `anchor` an audit_ledger_integrity "
    "materialization records, or what `audit checkpoint` printed): checkpoint SEQ must still have "
    "HASH (later checkpoints may follow it); with HASH alone, some checkpoint must. A superuser "
    "who recomputed every hash passes everything else.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def audit_verify(chain_id: str | None, expect_head: str | None, as_json: bool) -> None:
    """Recompute every hash chain and checkpoint; exit 1 and name the first broken link if any.

    \b
      orchestration-pipeline audit verify
      orchestration-pipeline audit verify --expect-head 42:3f5c…   # from Dagster or your notes
    """
    from orchestration_pipeline.errors import AuditError
    from orchestration_pipeline.lib.audit.chain import parse_head, verify_chain
    from orchestration_pipeline.lib.db import connection

    head = None
    if expect_head is not None:
        if chain_id is not None:
            raise click.UsageError(
                "--expect-head is checked against the checkpoint chain, which --chain skips — drop one of them"
            )
        try:
            head = parse_head(expect_head)
        except AuditError as exc:
            raise click.BadParameter(str(exc), param_hint="--expect-head") from None
    with connection(orchestration_dsn()) as conn:
        report = verify_chain(conn, chain_id=chain_id, expect_head=head)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    elif report.ok:
        sealed = (
            ""
            if chain_id
            else (
                f", {plural(report.checkpoints, 'checkpoint')}; {plural(report.unsealed_entries, 'newer entry', 'newer entries')} not sealed yet "
                "(orchestration-pipeline audit checkpoint)"
            )
        )
        click.echo(
            f"ok: {plural(report.rows, 'entry', 'entries')} in {plural(report.chains, 'chain')} verified{sealed}"
        )
        if head is not None:
            click.echo(f"expected head {head} is in the checkpoint chain")
        if report.newest_checkpoint:
            click.echo(f"newest checkpoint: {report.newest_checkpoint}")
    if not report.ok:
        first, lost = report.first_broken, report.head_break
        also = f"; {lost.describe()}" if lost is not None and lost is not first else ""
        raise click.ClickException(
            f"{report.broken_chains} broken chain(s); first: {first.describe()}{also} — follow "
            "docs/runbooks/audit.md"
        )


@audit.command("checkpoint")
@click.option(
    "--max-entries",
    default=20_000,
    show_default=True,
    type=click.IntRange(1),
    help="Entries sealed per checkpoint, each in one short transaction.",
)
@click.option(
    "--wait-ms",
    default=2000,
    show_default=True,
    type=click.IntRange(0),
    help="How long to wait for audited transactions still open (then retry twice, then stop).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
def audit_checkpoint(max_entries: int, wait_ms: int, as_json: bool) -> None:
    """Seal every audit entry written since the last checkpoint.

    Until sealed, an entry is protected by the append-only guard and its own hash; once sealed,
    removing it (or its whole transaction) also breaks the checkpoint chain. Every
    audit_ledger_integrity materialization does this too. Writers never wait for it. Exit 1 if an
    audited transaction stayed open too long, or another checkpoint was running (what could be
    sealed was).
    """
    from dataclasses import asdict

    from orchestration_pipeline.lib.audit.chain import checkpoint_ledger
    from orchestration_pipeline.lib.db import connection

    def progress(checkpoints: int, entries: int) -> None:
        if not as_json:
            click.echo(f"checkpoint {checkpoints}: {entries} entries sealed", err=True)

    with connection(orchestration_dsn()) as conn:
        run = checkpoint_ledger(conn, max_entries=max_entries, wait_ms=wait_ms, progress=progress)
    if as_json:
        click.echo(json.dumps(asdict(run)))
    elif run.created:
        click.echo(
            f"sealed {run.entries} entries in {run.created} checkpoint(s); newest checkpoint "
            f"{run.checkpoint_seq}:{run.checkpoint_hash} (keep it outside the database; "
            "audit verify --expect-head checks it)"
        )
    else:
        click.echo(
            ("nothing sealed: audited transactions are still open" if run.busy else "nothing new to seal")
            + (
                f"; newest checkpoint #{run.checkpoint_seq} ({run.checkpoint_seq}:{run.checkpoint_hash})"
                if run.checkpoint_seq
                else ""
            )
        )
    if run.busy:
        raise click.ClickException(
            f"stopped early: {run.busy}; the rest is not sealed yet — run it again later, or raise --wait-ms"
        )
