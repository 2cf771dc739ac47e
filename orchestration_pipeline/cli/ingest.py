"""``ingest``: event files into the orchestration DB, exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import click
import psycopg

from orchestration_pipeline.cli._common import first_line, orchestration_dsn, what_to_check
from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.wording import plural


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
@click.option(
    "--batch-rows",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows per COPY batch (bounds memory).",
)
@click.option("--quiet", "-q", is_flag=True, help="No per-file progress on stderr.")
def ingest(paths: tuple[Path, ...], as_json: bool, batch_rows: int, quiet: bool) -> None:
    """Ingest JSON-lines event files (or directories of *.jsonl / *.ndjson) exactly once.

    Directories are searched recursively; the suffix matches in any case (G.JSONL), and hidden
    files and directories (.name, often a producer's in-progress file) and *.tmp are skipped.
    When the directories hold no event file at all, nothing is ingested and the command fails,
    naming the files it skipped and why.

    Each file commits in one transaction with its ledger entry, so re-running after a crash,
    re-dropping a file, or renaming it never inserts an event twice. Bad lines go to the
    quarantine table. The summary always satisfies
    lines = accepted + quarantined + duplicates + collapsed.
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.ingestion.ingest import Ingestor, describe_progress

    _refuse_paths_without_event_files(paths)
    try:
        with connection(orchestration_dsn()) as conn:
            summary = Ingestor(
                conn,
                batch_rows=batch_rows,
                progress=None if quiet else lambda info: click.echo(describe_progress(info), err=True),
            ).ingest_paths(paths)
    except psycopg.OperationalError as exc:
        line = first_line(exc)
        raise OrchError(
            f"database unavailable: {line} — the file being ingested was rolled back and every file "
            "finished before it is recorded, so running the same command again is safe; "
            f"{what_to_check(('ORCH_DATABASE_URL',))}"
        ) from None
    body = summary.as_dict()
    if as_json:
        click.echo(json.dumps(body))
    else:
        _print_ingest_summary(body)
    if body["unreadable_files"]:
        for item in body["unreadable_files"]:
            click.echo(f"error: not ingested: {item['path']}: {item['error']}", err=True)
        unreadable = len(body["unreadable_files"])
        click.echo(
            f"error: could not read {plural(unreadable, 'file')} (nothing was stored from "
            f"{'it' if unreadable == 1 else 'them'}); fix their permissions and run again",
            err=True,
        )
        raise SystemExit(1)


def _refuse_paths_without_event_files(paths: tuple[Path, ...]) -> None:
    """Fail when the paths hold no event file at all; warn about each directory that holds none.

    A file named explicitly is ingested whatever its name, so only directories can come up empty.
    """
    from orchestration_pipeline.lib.ingestion.discovery_hints import NoEventFiles, no_event_files_message
    from orchestration_pipeline.lib.ingestion.files import discover_files

    directories = [p for p in paths if p.is_dir()]
    empty = [d for d in directories if not discover_files([d])]
    if empty and len(empty) == len(paths):
        raise NoEventFiles(no_event_files_message(empty))
    for directory in empty:
        click.echo(f"warning: {no_event_files_message([directory])}", err=True)


def _print_ingest_summary(body: dict) -> None:
    click.echo(
        f"{plural(body['files'], 'file')} ({body['skipped_files']} already ingested), "
        f"{plural(body['lines'], 'line')}: {body['accepted']} accepted, {body['quarantined']} quarantined, "
        f"{plural(body['duplicates'], 'duplicate')}, {body['collapsed']} collapsed; "
        f"{plural(body['redactions'], 'secret')} redacted"
    )
    if body["quarantine_by_type"]:
        click.echo(
            "quarantined by type: " + ", ".join(f"{k}={v}" for k, v in body["quarantine_by_type"].items())
        )
        click.echo("see them with 'orchestration-pipeline quarantine list'")
