"""``ingest``: event files into the orchestration DB, exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import click
import psycopg

from orchestration_pipeline.cli._common import first_line, orchestration_dsn
from orchestration_pipeline.errors import OrchError


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

    Each file commits in one transaction with its ledger entry, so re-running after a crash,
    re-dropping a file, or renaming it never inserts an event twice. Bad lines go to the
    quarantine table. The summary always satisfies
    lines = accepted + quarantined + duplicates + collapsed.
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.ingestion.ingest import Ingestor, describe_progress

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
            "finished before it is recorded, so running the same command again is safe; check the "
            "server and ORCH_DATABASE_URL"
        ) from None
    body = summary.as_dict()
    if as_json:
        click.echo(json.dumps(body))
    else:
        _print_ingest_summary(body)
    if body["unreadable_files"]:
        for item in body["unreadable_files"]:
            click.echo(f"error: not ingested: {item['path']}: {item['error']}", err=True)
        click.echo(
            f"error: {len(body['unreadable_files'])} file(s) could not be read and were not ingested "
            "(nothing of them was stored); fix their permissions and run again",
            err=True,
        )
        raise SystemExit(1)


def _print_ingest_summary(body: dict) -> None:
    click.echo(
        f"{body['files']} files ({body['skipped_files']} already ingested), {body['lines']} lines: "
        f"{body['accepted']} accepted, {body['quarantined']} quarantined, {body['duplicates']} duplicates, "
        f"{body['collapsed']} collapsed; {body['redactions']} secrets redacted"
    )
    if body["quarantine_by_type"]:
        click.echo(
            "quarantined by type: " + ", ".join(f"{k}={v}" for k, v in body["quarantine_by_type"].items())
        )
        click.echo("see them with 'orchestration-pipeline quarantine list'")
