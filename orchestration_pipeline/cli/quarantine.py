"""``quarantine list|replay``: lines ingestion could not accept."""

from __future__ import annotations

import json

import click

from orchestration_pipeline.cli._common import identity_options, orchestration_dsn, who
from orchestration_pipeline.lib.ingestion.failure_types import FAILURE_TYPES


@click.group()
def quarantine() -> None:
    """Inspect and replay lines that ingestion could not accept."""


@quarantine.command("list")
@click.option("--failure-type", type=click.Choice(FAILURE_TYPES), help="Only this failure type.")
@click.option("--all", "include_replayed", is_flag=True, help="Include rows that were already replayed.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def quarantine_list(
    failure_type: str | None, include_replayed: bool, limit: int, offset: int, as_json: bool
) -> None:
    """Show quarantined lines, newest first, with why they were rejected and where they came from."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.ingestion.quarantine import list_quarantine, quarantine_counts

    with connection(orchestration_dsn()) as conn:
        rows = list_quarantine(
            conn, failure_type=failure_type, include_replayed=include_replayed, limit=limit, offset=offset
        )
        counts = quarantine_counts(conn)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, default=str))
        return
    click.echo("pending by type: " + (", ".join(f"{k}={v}" for k, v in counts.items()) or "none"))
    for r in rows:
        click.echo(
            f"#{r['quarantine_id']} {r['failure_type']} {r['json_pointer'] or '/'} "
            f"{r['source_file']}:{r['source_line']}\n    {r['detail']}\n    {r['raw_preview']}"
        )


@quarantine.command("replay")
@click.option("--id", "ids", multiple=True, type=int, help="Replay these quarantine ids (repeatable).")
@click.option("--failure-type", type=click.Choice(FAILURE_TYPES), help="Only rows of this failure type.")
@click.option("--file", "source_file", help="Only rows from this source file.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows (default: all pending).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@identity_options
def quarantine_replay(
    ids: tuple[int, ...],
    failure_type: str | None,
    source_file: str | None,
    limit: int | None,
    as_json: bool,
    actor: str | None,
    request_id: str | None,
) -> None:
    """Re-ingest pending quarantined lines with the current validator (after a fix).

    Accepted lines become events; lines that still fail stay quarantined with an attempt count.
    Every examined line leaves an audit entry (operation replay) naming --actor and --request-id.
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.ingestion.quarantine import replay_quarantine

    actor, request_id = who(actor, request_id)
    with connection(orchestration_dsn()) as conn:
        result = replay_quarantine(
            conn,
            actor=actor,
            request_id=request_id,
            ids=list(ids) or None,
            failure_type=failure_type,
            source_file=source_file,
            limit=limit,
            source="cli:quarantine replay",
        )
    body = result.as_dict()
    if as_json:
        click.echo(json.dumps(body))
    else:
        if result.already_replayed:
            click.echo(
                "already replayed, left alone: "
                + ", ".join(f"#{i}" for i in result.already_replayed)
                + " (see them with 'orchestration-pipeline quarantine list --all')"
            )
        click.echo(
            f"examined {body['examined']}: {body['accepted']} accepted, {body['duplicates']} duplicates, "
            f"{body['collapsed']} collapsed, {body['still_failing']} still failing"
        )
