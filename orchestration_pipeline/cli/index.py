"""``index sync|reconcile|rebuild|status|dead-letters|replay-dead-letters|prune`` and ``search``."""

from __future__ import annotations

import json
import sys

import click

from orchestration_pipeline.cli._common import identity_options, orchestration_dsn, pipeline_settings, who
from orchestration_pipeline.lib.wording import plural


def _runtime():
    from orchestration_pipeline.lib.index.runtime import runtime_from_settings

    return runtime_from_settings(pipeline_settings())


@click.group()
def index() -> None:
    """The vector index of decisions: sync the outbox into it, reconcile it, replay dead letters.

    Postgres holds the decisions; every change writes a search_outbox row in the same
    transaction, and `index sync` carries those rows into the index (qdrant-edge under
    $ORCH_HOME/qdrant, or the Qdrant server at QDRANT_URL).
    """


@index.command("sync")
@click.option(
    "--batch-size",
    default=100,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Outbox rows per claim.",
)
@click.option(
    "--max-batches", type=click.IntRange(min=1), help="Stop after this many claims (default: drain)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def index_sync(batch_size: int, max_batches: int | None, as_json: bool) -> None:
    """Carry pending outbox rows into the index: embed, write, then mark them done.

    Exits 1 when an item failed (it is retried later with backoff, or moved to the dead letters
    once its retries are spent: see `index dead-letters`).
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.index.sync import SyncSettings, sync_outbox

    settings = SyncSettings(batch_size=batch_size, max_batches=max_batches)
    with connection(orchestration_dsn()) as conn, _runtime().open() as (vector_index, embedder):
        report = sync_outbox(
            conn,
            vector_index,
            embedder,
            settings,
            progress=lambda r: click.echo(f"  {r.claimed:,} items ({r.indexed:,} indexed)", err=True),
        )
    body = report.as_dict()
    if as_json:
        click.echo(json.dumps(body))
    else:
        click.echo(
            f"synced {plural(report.claimed, 'outbox row')}: {report.indexed} indexed, {report.deleted} deleted, "
            f"{report.superseded} superseded, {report.stale} stale, {report.retrying} to retry, "
            f"{report.dead_lettered} dead-lettered; freshness p95 {body['freshness_p95_s']} s; "
            f"backlog {body.get('backlog_pending', 0)}"
        )
    if report.retrying or report.dead_lettered:
        sys.exit(1)


@index.command("reconcile")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def index_reconcile(as_json: bool) -> None:
    """Compare the index with the decisions in Postgres and repair the drift.

    Drains the outbox, compares (missing_in_index, stale_version, orphan_in_index), enqueues a
    repair per drifting decision, syncs them, and compares again. Exits 1 if drift remains.
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.index.reconcile import reconcile_index

    with connection(orchestration_dsn()) as conn, _runtime().open() as (vector_index, embedder):
        result = reconcile_index(conn, vector_index, embedder)
    body = result.as_dict()
    if as_json:
        click.echo(json.dumps(body))
    else:
        counts = ", ".join(f"{k} {body[k]}" for k in ("missing_in_index", "stale_version", "orphan_in_index"))
        click.echo(
            f"reconcile run {body['run_id']}: {body['expected']} decisions, {body['indexed']} points; "
            f"drift {body['drift']} ({counts}); {plural(body['repairs_enqueued'], 'repair')} enqueued; "
            f"remaining drift {body['remaining_drift']}"
        )
    if result.remaining_drift:
        sys.exit(1)


@index.command("rebuild")
@click.option("--yes", is_flag=True, help="Confirm: the index is deleted, then rebuilt from Postgres.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def index_rebuild(yes: bool, as_json: bool) -> None:
    """Delete the index and rebuild it from the decisions in Postgres (after changing the embedder).

    The index is derived data: nothing is lost. Searches find fewer results until it completes.
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.index.open import drop_index
    from orchestration_pipeline.lib.index.reconcile import reconcile_index
    from orchestration_pipeline.lib.index.sync import SyncSettings

    if not yes:
        raise click.UsageError("rebuilding deletes the index first: add --yes to confirm")
    runtime = _runtime()
    drop_index(runtime.location)
    # larger claims than a trickle's: writing 500 points per index call measured about 5x the
    # items/s of 100 on a full reindex
    settings = SyncSettings(batch_size=500)
    with connection(orchestration_dsn()) as conn, runtime.open() as (vector_index, embedder):
        result = reconcile_index(conn, vector_index, embedder, settings)
    body = result.as_dict()
    if as_json:
        click.echo(json.dumps(body))
    else:
        click.echo(
            f"rebuilt the index: {body['repairs_enqueued']} decisions re-indexed with {embedder.name}; "
            f"remaining drift {body['remaining_drift']}"
        )
    if result.remaining_drift:
        sys.exit(1)


@index.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def index_status(as_json: bool) -> None:
    """Where the index is, how many points it holds, the outbox backlog and the dead letters."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.index.status import index_status as status_of

    runtime = _runtime()
    with connection(orchestration_dsn()) as conn:
        body = status_of(conn, runtime)
    if as_json:
        click.echo(json.dumps(body, default=str))
        return
    for key, value in body.items():
        click.echo(f"{key}: {value}")


@index.command("dead-letters")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--all", "include_replayed", is_flag=True, help="Include dead letters already replayed.")
def index_dead_letters(as_json: bool, include_replayed: bool) -> None:
    """List dead letters (items whose retries are spent), grouped by error fingerprint."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.index.status import dead_letters

    with connection(orchestration_dsn()) as conn:
        rows = dead_letters(conn, include_replayed=include_replayed)
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, default=str))
        else:
            state = (
                f" [replayed {row['replayed_at']:%Y-%m-%d %H:%M} by {row['replayed_by']}]"
                if row["replayed_at"]
                else ""
            )
            click.echo(
                f"#{row['dead_letter_id']} {row['op']} {row['entity_id']} v{row['version']} "
                f"after {row['attempts']} attempts, fingerprint {row['fingerprint']}{state}\n    {row['error']}"
            )
    if not rows and not as_json:
        click.echo("no dead letters")


@index.command("replay-dead-letters")
@click.option("--reason", required=True, help="Why they can be retried now (recorded in the audit ledger).")
@click.option("--fingerprint", help="Only the dead letters of this error fingerprint.")
@click.option(
    "--id", "ids", multiple=True, type=click.IntRange(min=1), help="Only this dead letter id (repeatable)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@identity_options
def index_replay_dead_letters(
    reason: str,
    fingerprint: str | None,
    ids: tuple[int, ...],
    as_json: bool,
    actor: str | None,
    request_id: str | None,
) -> None:
    """Re-enqueue dead letters with fresh retries, after fixing their cause (audited).

    Each becomes a new outbox row (cause replay) and is marked replayed; the dead letter itself is
    kept. Run `index sync` afterwards (the sensor does it within a minute in Dagster).
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.index.outbox import replay_dead_letters

    actor, request_id = who(actor, request_id)
    with connection(orchestration_dsn()) as conn:
        replayed = replay_dead_letters(
            conn, actor=actor, request_id=request_id, reason=reason, fingerprint=fingerprint,
            dead_letter_ids=list(ids) or None,
        )  # fmt: skip
        conn.commit()
    if as_json:
        click.echo(json.dumps({"replayed": replayed, "actor": actor, "request_id": request_id}))
    else:
        click.echo(
            f"re-enqueued {plural(len(replayed), 'dead letter')} (request {request_id}); run `index sync`"
        )


@index.command("prune")
@click.option(
    "--older-than", default="7d", show_default=True, help="Delete outbox rows done longer ago (e.g. 24h, 7d)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def index_prune(older_than: str, as_json: bool) -> None:
    """Delete done outbox rows past the window (dead letters are never deleted)."""
    from datetime import UTC, datetime

    from orchestration_pipeline.lib.audit.ledger import parse_since
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.index.outbox import prune

    now = datetime.now(UTC)
    window = now - parse_since(older_than, now=now)
    with connection(orchestration_dsn()) as conn:
        deleted = prune(conn, window)
        conn.commit()
    if as_json:
        click.echo(json.dumps({"deleted": deleted, "older_than_s": window.total_seconds()}))
    else:
        click.echo(f"pruned {plural(deleted, 'done outbox row')} older than {older_than}")


@click.command("search")
@click.argument("text")
@click.option("--org", help="Only decisions of this org_id.")
@click.option("--policy", help="Only decisions of this policy_id.")
@click.option("--status", help="Only decisions with this status.")
@click.option("--since", help="Only decisions created since (30m, 24h, 7d, or an ISO date/time).")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 100), help="How many results.")
@click.option("--no-quantization", is_flag=True, help="Search the full vectors only (ignore int8 ones).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def search(
    text: str,
    org: str | None,
    policy: str | None,
    status: str | None,
    since: str | None,
    k: int,
    no_quantization: bool,
    as_json: bool,
) -> None:
    """Search decisions by the meaning of their rationale, with filters.

    Each result: score, decision id, rationale and the index payload (version, org, policy, status).
    """
    from orchestration_pipeline.lib.audit.ledger import parse_since
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.index.search import search_decisions, search_filter

    if not text.strip():
        raise click.BadParameter(
            "the search text is empty: give a few words describing the decision", param_hint="TEXT"
        )
    runtime = _runtime()
    filters = search_filter(org, policy, status, parse_since(since) if since else None)
    quantization = False if no_quantization else runtime.quantization
    with connection(orchestration_dsn()) as conn, runtime.open() as (vector_index, embedder):
        response = search_decisions(
            conn, vector_index, embedder, text, k=k, filters=filters, quantization=quantization
        )
    if as_json:
        click.echo(json.dumps(response.as_dict(), default=str))
        return
    for r in response.results:
        p = r.payload
        click.echo(
            f"{r.score:.3f}  {r.decision_id}  [{p.get('org_id')}/{p.get('policy_id')}/{p.get('status')}]"
            f"{'' if r.current else '  (index holds an older version)'}\n       {r.rationale}"
        )
    if not response.results:
        click.echo("no matching decisions")
    click.echo(
        f"({len(response.results)} results in {response.total_ms:.1f} ms: embedding {response.embed_ms:.1f} ms, "
        f"index {response.index_ms:.1f} ms)",
        err=True,
    )
