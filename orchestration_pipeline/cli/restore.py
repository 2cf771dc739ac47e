"""``backup create|list`` and ``drill``: backups of the orchestration DB, and the drills that prove them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from orchestration_pipeline.cli._common import ErrorReportingGroup, database_urls, pipeline_settings
from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.wording import plural

_DIR_HELP = "Where backups are written and looked up. Default: $ORCH_HOME/backups."
_PG_BIN_HELP = (
    "A directory holding pg_dump and pg_restore of the server's major version. Default: the embedded "
    "server's own, or the ones on PATH for a server URL."
)


def _backup_dir(directory: Path | None) -> Path:
    return directory if directory is not None else pipeline_settings().orch_home / "backups"


def _tool_origin(dsn: str) -> str:
    """The embedded server's binaries for its own socket, else the PATH's."""
    from orchestration_pipeline.lib.restore.tools import tool_origin_for

    return tool_origin_for(dsn, embedded=pipeline_settings().points_at_embedded(dsn))


def _who() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"cli:uid{os.getuid()}"


@click.group(cls=ErrorReportingGroup)
def backup() -> None:
    """Backups of the orchestration DB: pg_dump plus a manifest, shown to restore by `drill`.

    A backup is a custom-format dump and a manifest computed in the dump's own snapshot (migrations,
    row counts, content hashes, the audit checkpoint head, the newest received_at, the file's
    sha256), written beside the dump and into the backups table.
    """


@backup.command("create")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), help=_DIR_HELP)
@click.option("--pg-bin", type=click.Path(file_okay=False, exists=True), help=_PG_BIN_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def backup_create(directory: Path | None, pg_bin: str | None, as_json: bool) -> None:
    """Dump the orchestration DB with its manifest (refused when pg_dump cannot serve the server)."""
    from orchestration_pipeline.lib.restore.backup import create_backup
    from orchestration_pipeline.lib.restore.tools import find_tools

    dsn = database_urls().orchestration
    tools = find_tools(_tool_origin(dsn), pg_bin)
    made = create_backup(dsn, _backup_dir(directory), tools, created_by=_who())
    body = made.summary()
    if as_json:
        click.echo(json.dumps(body, default=str))
        return
    click.echo(
        f"backup {made.backup_id}: {made.dump_path} ({made.size:,} bytes, sha256 {made.sha256[:12]}…), "
        f"{body['rows']:,} rows in {plural(len(made.manifest['row_counts']), 'table')}, schema head "
        f"{body['schema_head']}, audit checkpoint {body['audit_checkpoint_head'] or 'none'}; "
        f"manifest {made.manifest_path}; {body['duration_ms'] / 1000:.1f} s"
    )
    click.echo(
        "not proven yet: run 'orchestration-pipeline drill --from " + made.backup_id + "' to restore it"
    )


@backup.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
def backup_list(limit: int, as_json: bool) -> None:
    """The newest backups, whether their file is there, and their latest drill."""
    from orchestration_pipeline.lib.db import connection, require_schema
    from orchestration_pipeline.lib.restore.backup import BACKUP_TABLES, list_backups

    with connection(database_urls().orchestration) as conn:
        require_schema(conn, BACKUP_TABLES, record_decision=False)
        rows = list_backups(conn, limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    if not rows:
        click.echo("no backups yet: 'orchestration-pipeline backup create' or 'drill'")
        return
    for r in rows:
        drill = (
            f"{r['last_drill']} (RTO {r['last_rto_s']:.1f} s)"
            if r["last_rto_s"]
            else (r["last_drill"] or "never drilled")
        )
        present = "" if r["file_present"] else "  FILE MISSING"
        click.echo(
            f"{r['backup_id']}  {r['taken_at']:%Y-%m-%d %H:%M:%S}Z  {r['dump_bytes']:>14,} bytes  "
            f"head {r['schema_head']}  {drill}{present}"
        )


def _last_line(text: str, as_json: bool) -> None:
    """The summary: the last line of the output (of stderr with --json, where stdout is the JSON)."""
    click.echo(text, err=as_json)


def _print_verdict(result, as_json: bool, scratch_dsn: str | None) -> None:
    """One line per check (PASS, FAIL, or WARN for a failure that does not block), the phases,
    then the summary."""
    body = result.as_dict()
    if as_json:
        click.echo(json.dumps({**body, "scratch_dsn": scratch_dsn}, default=str))
        _last_line(result.summary(), as_json)
        return
    for check in body["checks"]:
        mark = "PASS" if check["passed"] else ("FAIL" if check["blocking"] else "WARN")
        click.echo(f"  {mark}  {check['name']:<20} {check['detail']}")
    if body["phases"]:
        click.echo("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in body["phases"].items()))
    for gone in body["leftovers_removed"]:
        click.echo(
            f"  removed {gone['scratch_db']}, left behind by drill {gone['drill_id']} ({gone['state']})"
        )
    if scratch_dsn:
        click.echo(
            f"  kept the scratch database for forensics: {scratch_dsn} (drop it: drill --discard-kept)"
        )
    _last_line(result.summary(), as_json)


@click.command("drill")
@click.option("--from", "from_backup", metavar="BACKUP", help="A backup id, or a dump file with its manifest beside it. Default: take a fresh backup first.")  # fmt: skip
@click.option("--keep", is_flag=True, help="Keep the scratch database for forensics instead of dropping it.")
@click.option(
    "--discard-kept", is_flag=True, help="Drop the scratch databases earlier drills kept, then exit."
)
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), help=_DIR_HELP)
@click.option("--pg-bin", type=click.Path(file_okay=False, exists=True), help=_PG_BIN_HELP)
@click.option("--jobs", type=click.IntRange(1, 64), help="pg_restore --jobs. Default: the cores, at most 4.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as one JSON object (the summary goes to stderr).")  # fmt: skip
def drill(
    from_backup: str | None, keep: bool, discard_kept: bool, directory: Path | None, pg_bin: str | None,
    jobs: int | None, as_json: bool,
) -> None:  # fmt: skip
    """Restore a backup into a scratch database, verify it against its manifest, report the RTO.

    Exit codes: 0 the drill passed, 1 a verification failed (the checksum, pg_restore, or a check of
    the copy), 2 the drill could not run. The last line says which and why (with --json, the last
    line of stderr: stdout holds the verdict).
    """
    try:
        result, scratch_dsn = _run(from_backup, keep, discard_kept, directory, pg_bin, jobs, as_json)
    except OrchError as exc:
        if as_json:
            click.echo(json.dumps({"pass": False, "state": "error", "error": str(exc)}))
        _last_line(f"drill could not run: {exc}", as_json)
        sys.exit(2)
    if result is None:
        return
    _print_verdict(result, as_json, scratch_dsn)
    sys.exit(result.exit_code)


def _run(from_backup, keep, discard_kept, directory, pg_bin, jobs, as_json):
    """The drill (or the discard of kept databases); returns (result, kept scratch DSN)."""
    from orchestration_pipeline.lib.index.runtime import runtime_from_settings
    from orchestration_pipeline.lib.restore.drill import (
        DrillOptions,
        describe_target,
        run_drill,
    )
    from orchestration_pipeline.lib.restore.drill import (
        discard_kept as discard,
    )

    settings = pipeline_settings()
    urls = database_urls()
    if discard_kept:
        removed = discard(urls.orchestration)
        for gone in removed:
            click.echo(f"dropped {gone['scratch_db']} (drill {gone['drill_id']})")
        click.echo(f"{plural(len(removed), 'scratch database')} dropped")
        return None, None
    opts = DrillOptions(
        source_dsn=urls.orchestration,
        tasks_dsn=urls.tasks,
        backup_dir=_backup_dir(directory),
        tool_origin=_tool_origin(urls.orchestration),
        pg_bin=pg_bin,
        from_backup=from_backup,
        keep=keep,
        jobs=jobs or max(1, min(os.cpu_count() or 1, 4)),
        open_index=runtime_from_settings(settings).open,
        created_by=_who(),
        progress=None if as_json else lambda phase: click.echo(f"drill: {phase}…", err=True),
    )
    result = run_drill(opts)
    return result, describe_target(urls.orchestration, result.scratch_db) if result.kept else None
