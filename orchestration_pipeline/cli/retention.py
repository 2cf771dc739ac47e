"""``retention run|status`` and ``archive list|show|verify|restore``: thin calls into lib.retention."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from datetime import date

import click

from orchestration_pipeline.cli._common import identity_options, orchestration_dsn, pipeline_settings, who
from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.wording import plural

TABLES = ("events", "metrics")


@contextmanager
def _one_line_errors():
    """The retention library's refusals (a missing archive, a day not due, a busy day) as one line."""
    from orchestration_pipeline.lib.retention.manifests import DayBusy
    from orchestration_pipeline.lib.retention.purge import PurgeRefused
    from orchestration_pipeline.lib.retention.verify import ArchiveProblem

    try:
        yield
    except (ValueError, LookupError, ArchiveProblem, PurgeRefused, DayBusy) as exc:
        raise OrchError(str(exc)) from None


def _policy(archive_uri: str | None):
    from orchestration_pipeline.lib.retention.run import RetentionPolicy

    return RetentionPolicy.from_settings(pipeline_settings(), archive_root=archive_uri)


_ARCHIVE_URI = click.option(
    "--archive-uri",
    help="Where archives are written: a directory or any URI pyarrow accepts (s3://…). "
    "Default: $ORCH_HOME/archive.",
)


@click.group()
def retention() -> None:
    """Archive days past the window to Parquet, verify them, and purge them when enabled.

    A day older than ORCH_RETENTION_ARCHIVE_DAYS (30) is exported to Parquet, read back and
    proven (row count, content hash, file sha256); only then, and only with
    ORCH_RETENTION_PURGE=on, is its partition dropped (audited). See docs/runbooks/retention.md.
    """


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="Write nothing: report what each due day would get.")
@click.option(
    "--day", "days", multiple=True, type=click.DateTime(["%Y-%m-%d"]), help="Only this due day (repeatable)."
)
@click.option(
    "--table", "tables", multiple=True, type=click.Choice(TABLES), help="Only this table (repeatable)."
)
@_ARCHIVE_URI
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@identity_options
def retention_run(
    dry_run: bool,
    days: tuple,
    tables: tuple[str, ...],
    archive_uri: str | None,
    as_json: bool,
    actor: str | None,
    request_id: str | None,
) -> None:
    """Archive, verify and (with ORCH_RETENTION_PURGE=on) purge every due day; print each day.

    Exits 1 when a day failed (its rows stay; see docs/runbooks/retention.md#archive_verified).
    """
    from dataclasses import replace

    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.retention.run import Identity, run_retention

    policy = _policy(archive_uri)
    if tables:
        policy = replace(policy, tables=tables)
    actor, request_id = who(actor, request_id)

    def progress(day) -> None:
        click.echo(f"  {day.table} {day.day}: {day.outcome}", err=True)

    with _one_line_errors(), connection(orchestration_dsn()) as conn:
        report = run_retention(
            conn,
            policy,
            Identity(actor, request_id),
            dry_run=dry_run,
            days=[d.date() for d in days] or None,
            progress=progress,
        )
    body = report.as_dict()
    if as_json:
        click.echo(json.dumps(body, default=str))
    else:
        _print_run(body)
    if report.failed:
        sys.exit(1)


def _print_run(body: dict) -> None:
    mode = "dry run" if body["dry_run"] else ("purge on" if body["purge_enabled"] else "purge off")
    click.echo(f"retention ({mode}): days before {body['due_before']} are due")
    for note in body["notes"]:
        click.echo(f"  note: {note}")
    for day in body["days"]:
        click.echo(f"{day['table']} {day['day']} ({day['partition']}): {day['outcome']}")
        for step in day["steps"]:
            click.echo(f"    {step}")
        if day["error"] and day["outcome"] in ("failed", "busy"):
            click.echo(f"    error: {day['error']}")
    if not body["days"]:
        click.echo("no day is due")
    else:
        click.echo(
            ", ".join(f"{plural(n, 'day')} {outcome}" for outcome, n in sorted(body["outcomes"].items()))
        )


@retention.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def retention_status(as_json: bool) -> None:
    """The windows, each table's layout and daily partitions, and the checks' verdicts."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.retention import checks
    from orchestration_pipeline.lib.retention.catalogue import catalogue
    from orchestration_pipeline.lib.retention.run import today_utc

    policy = _policy(None)
    due = policy.due_before(today_utc())
    with connection(orchestration_dsn()) as conn:
        tables = {}
        for table in TABLES:
            cat = catalogue(conn, table)
            days = sorted(cat.days)
            tables[table] = {
                "layout": cat.layout,
                "daily_partitions": len(days),
                "oldest_day": days[0].isoformat() if days else None,
                "due_days": sum(1 for d in days if d < due),
            }
        conn.rollback()
        verdicts = {
            "archive_verified": checks.archive_verified(conn, due_before=due),
            "retention_policy_active": checks.retention_policy_active(
                conn, due_before=due, purge_enabled=policy.purge
            ),
            "default_partition_empty": checks.default_partition_empty(conn),
        }
    body = {
        "hot_days": policy.hot_days,
        "archive_days": policy.archive_days,
        "purge": policy.purge,
        "archive_root": policy.archive_root,
        "due_before": due.isoformat(),
        "tables": tables,
        "checks": {name: {"passed": v.passed, "description": v.description} for name, v in verdicts.items()},
    }
    if as_json:
        click.echo(json.dumps(body))
        return
    click.echo(
        f"hot {policy.hot_days} days, archive after {policy.archive_days} days (due: before {due}); "
        f"purge {'on' if policy.purge else 'off'}; archives in {policy.archive_root}"
    )
    for table, info in tables.items():
        click.echo(
            f"{table}: {info['layout']}, {plural(info['daily_partitions'], 'daily partition')} "
            f"(oldest {info['oldest_day']}), {info['due_days']} due"
        )
    for name, verdict in body["checks"].items():
        click.echo(f"{name}: {'pass' if verdict['passed'] else 'FAIL'} — {verdict['description']}")


@click.group()
def archive() -> None:
    """The Parquet archives of events and metrics: list them, verify one, restore a day.

    In Python, read_archive(dsn, "events", "2025-01-31") from
    orchestration_pipeline.lib.retention.restore returns a day as a pandas DataFrame.
    """


@archive.command("list")
@click.option("--table", type=click.Choice(TABLES), help="Only this table.")
@click.option(
    "--status",
    type=click.Choice(["exported", "verified", "purged", "failed", "superseded", "restored"]),
    help="Only manifests with this status.",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def archive_list(table: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """The archive manifests, newest day first."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.retention import manifests

    with connection(orchestration_dsn()) as conn:
        found = manifests.listing(conn, table, status, limit)
    for m in found:
        if as_json:
            click.echo(json.dumps(m.as_dict(), default=str))
        else:
            size = f"{m.file_bytes / 1e6:.1f} MB" if m.file_bytes else "-"
            click.echo(
                f"#{m.manifest_id} {m.table_name} {m.day} part {m.part}: {m.status}, {m.row_count} rows, "
                f"{size}, {m.file_uri}" + (f" — {m.error}" if m.error and m.status == "failed" else "")
            )
    if not found and not as_json:
        click.echo("no archives")


@archive.command("show")
@click.argument("manifest_id", type=click.IntRange(min=1))
def archive_show(manifest_id: int) -> None:
    """One manifest, every field (JSON)."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.retention import manifests

    with _one_line_errors(), connection(orchestration_dsn()) as conn:
        click.echo(json.dumps(manifests.get(conn, manifest_id).as_dict(), indent=2, default=str))


@archive.command("verify")
@click.argument("manifest_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def archive_verify(manifest_id: int, as_json: bool) -> None:
    """Read an archive back and prove it against its manifest (exits 1 when it fails).

    A verified archive that no longer proves itself becomes failed: the day is archived again by
    the next `retention run`, and no purge uses it.
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.retention import manifests
    from orchestration_pipeline.lib.retention.verify import verify

    with _one_line_errors(), connection(orchestration_dsn()) as conn:
        found = manifests.get(conn, manifest_id)
        conn.rollback()
        with manifests.day_lock(conn, found.table_name, found.day):
            result = verify(conn, manifest_id)
    if as_json:
        click.echo(json.dumps({"manifest_id": manifest_id, "ok": result.ok, "reason": result.reason}))
    else:
        click.echo(f"manifest {manifest_id}: {result.reason} ({result.seconds:.2f} s)")
    if not result.ok:
        sys.exit(1)


@archive.command("restore")
@click.option("--table", required=True, type=click.Choice(TABLES))
@click.option("--day", required=True, type=click.DateTime(["%Y-%m-%d"]), help="The archived day (UTC).")
@click.option(
    "--into",
    help="Target table. Default: a new table <table>_restored_<YYYYMMDD>. The table's own name restores "
    "into the live table (refused while the day holds rows; audited).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@identity_options
def archive_restore(
    table: str, day, into: str | None, as_json: bool, actor: str | None, request_id: str | None
) -> None:
    """Load an archived day back, after proving every file against its manifest."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.retention.restore import restore_day

    actor, request_id = who(actor, request_id)
    the_day: date = day.date()
    with _one_line_errors(), connection(orchestration_dsn()) as conn:
        restored = restore_day(conn, table, the_day, into=into, actor=actor, request_id=request_id)
    body = {
        "table": restored.table,
        "day": restored.day.isoformat(),
        "into": restored.into,
        "rows": restored.rows,
        "manifests": restored.manifests,
        "live": restored.live,
    }
    if as_json:
        click.echo(json.dumps(body))
    else:
        click.echo(
            f"restored {plural(restored.rows, 'row')} of {table} {the_day} into {restored.into} "
            f"from {plural(len(restored.manifests), 'archive')}"
        )
