"""``quarantine list|replay|discard``: lines ingestion could not accept."""

from __future__ import annotations

import json

import click

from orchestration_pipeline.cli._common import identity_options, orchestration_dsn, who
from orchestration_pipeline.lib.ingestion.failure_types import FAILURE_TYPES
from orchestration_pipeline.lib.wording import plural


@click.group()
def quarantine() -> None:
    """Inspect, replay and discard lines that ingestion could not accept."""


@quarantine.command("list")
@click.option("--failure-type", type=click.Choice(FAILURE_TYPES), help="Only this failure type.")
@click.option(
    "--all", "include_replayed", is_flag=True, help="Include rows already replayed or discarded (marked)."
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def quarantine_list(
    failure_type: str | None, include_replayed: bool, limit: int, offset: int, as_json: bool
) -> None:
    """Show quarantined lines, newest first, with why they were rejected and where they came from.

    When more rows match than are shown, the last line says how to see the next page (--offset).
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.ingestion.quarantine import (
        count_quarantine,
        list_quarantine,
        quarantine_counts,
    )

    with connection(orchestration_dsn()) as conn:
        rows = list_quarantine(
            conn, failure_type=failure_type, include_replayed=include_replayed, limit=limit, offset=offset
        )
        total = count_quarantine(conn, failure_type=failure_type, include_replayed=include_replayed)
        counts = quarantine_counts(conn)
    page = _page_note(len(rows), total, offset)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, default=str))
        if page:  # stdout stays one JSON object per line
            click.echo(page, err=True)
        return
    click.echo("pending by type: " + (", ".join(f"{k}={v}" for k, v in counts.items()) or "none"))
    for r in rows:
        click.echo(
            f"#{r['quarantine_id']} {r['failure_type']} {r['json_pointer'] or '/'} "
            f"{r['source_file']}:{r['source_line']}{_state(r)}\n    {r['detail']}\n    {r['raw_preview']}"
        )
    if page:
        click.echo(page)


def _state(row: dict) -> str:
    """The mark of a row that is no longer pending (shown with --all)."""
    if row["discarded_at"] is not None:
        return (
            f" [discarded {row['discarded_at']:%Y-%m-%d %H:%M:%S%z} by {row['discarded_by']}: "
            f"{row['discard_reason']}]"
        )
    if row["replayed_at"] is not None:
        return f" [replayed {row['replayed_at']:%Y-%m-%d %H:%M:%S%z}: {row['replay_outcome'] or 'resolved'}]"
    return ""


def _page_note(shown: int, total: int, offset: int) -> str | None:
    """'showing 1–50 of 263; --offset 50 for more' when the rows shown are not all that match."""
    if shown == 0:
        return f"no rows at offset {offset}; {plural(total, 'row')} match" if offset and total else None
    if shown == total:
        return None
    note = f"showing {offset + 1}–{offset + shown} of {total}"
    if offset + shown < total:
        note += f"; --offset {offset + shown} for more"
    return note


def _selection_options(verb: str):
    """--id, --failure-type and --file: which pending quarantined lines a command acts on."""

    def decorate(func):
        for option in (
            click.option(
                "--file",
                "source_file",
                help="Only lines from this source file (its path, as listed or from here).",
            ),
            click.option(
                "--failure-type", type=click.Choice(FAILURE_TYPES), help="Only lines of this failure type."
            ),
            click.option(
                "--id",
                "ids",
                multiple=True,
                type=click.IntRange(min=1),
                help=f"{verb} this quarantine id (repeatable).",
            ),
        ):
            func = option(func)
        return func

    return decorate


@quarantine.command("replay")
@_selection_options("Replay")
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
        return
    for ids_left, what in ((result.already_replayed, "replayed"), (result.already_discarded, "discarded")):
        if ids_left:
            click.echo(
                f"already {what}, left alone: "
                + ", ".join(f"#{i}" for i in ids_left)
                + " (see them with 'orchestration-pipeline quarantine list --all')"
            )
    click.echo(
        f"examined {body['examined']}: {body['accepted']} accepted, {plural(body['duplicates'], 'duplicate')}, "
        f"{body['collapsed']} collapsed, {body['still_failing']} still failing"
    )


@quarantine.command("discard")
@_selection_options("Discard")
@click.option(
    "--reason", required=True, help="Why these lines will never be replayed (kept on each row and audited)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@identity_options
def quarantine_discard(
    ids: tuple[int, ...],
    source_file: str | None,
    failure_type: str | None,
    reason: str,
    as_json: bool,
    actor: str | None,
    request_id: str | None,
) -> None:
    """Mark pending quarantined lines as discarded: kept, but no longer pending.

    For lines no fix will turn into events, e.g. a README ingested by mistake:

    \b
      orchestration-pipeline quarantine discard --file $ORCH_HOME/landing/README.md --reason "not events"

    The filters combine; at least one is required. Each discarded line records when, by whom
    (--actor) and why (--reason), and leaves an audit entry (operation delete) naming --actor and
    --request-id. Discarded lines leave 'quarantine list' (see them with --all) and are never
    replayed. Lines already discarded or replayed are left alone, so running it twice is harmless.
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.ingestion.quarantine import discard_quarantine

    if not (ids or source_file or failure_type):
        raise click.UsageError(
            "say which lines to discard: --id, --file or --failure-type "
            "(see them with 'orchestration-pipeline quarantine list')"
        )
    actor, request_id = who(actor, request_id)
    with connection(orchestration_dsn()) as conn:
        result = discard_quarantine(
            conn,
            actor=actor,
            request_id=request_id,
            reason=reason,
            ids=list(ids) or None,
            failure_type=failure_type,
            source_file=source_file,
            source="cli:quarantine discard",
        )
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    left = [
        f"{plural(len(found), 'line')} already {what}"
        for found, what in ((result.already_discarded, "discarded"), (result.already_replayed, "replayed"))
        if found
    ]
    click.echo(
        f"discarded {plural(len(result.discarded_ids), 'quarantined line')} (request {request_id})"
        + (f"; left alone: {', '.join(left)}" if left else "")
    )
