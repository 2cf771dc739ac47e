"""``db migrate`` and ``db status``: migrations of the orchestration DB and the Tasks DB."""

from __future__ import annotations

import json

import click

from orchestration_pipeline.cli._common import pipeline_settings


@click.group()
def db() -> None:
    """Database migrations of the orchestration DB and the Tasks DB."""


_TARGET_OPTION = click.option(
    "--target",
    type=click.Choice(["orchestration", "tasks", "all"]),
    default="all",
    show_default=True,
    help="Which database's migrations (sql/orchestration or sql/tasks).",
)


def _target_dsns(target: str) -> list[tuple[str, str]]:
    from orchestration_pipeline.lib.embedded import resolve_database_urls

    urls = resolve_database_urls(pipeline_settings(), start=True)
    pairs = [("orchestration", urls.orchestration), ("tasks", urls.tasks)]
    return [p for p in pairs if target in ("all", p[0])]


@db.command("migrate")
@_TARGET_OPTION
def db_migrate(target: str) -> None:
    """Apply pending migrations, each file in its own transaction, under an advisory lock."""
    from orchestration_pipeline.lib.db import connection, migrate

    for name, dsn in _target_dsns(target):
        with connection(dsn) as conn:
            applied = migrate(conn, name)
        click.echo(
            f"{name}: " + (f"applied {', '.join(m.filename for m in applied)}" if applied else "up to date")
        )


@db.command("status")
@_TARGET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--check", is_flag=True, help="Exit 1 when anything is pending or has drifted.")
def db_status(target: str, as_json: bool, check: bool) -> None:
    """List applied and pending migrations, and any applied file whose checksum changed."""
    from orchestration_pipeline.lib.db import connection, migration_status

    report = {}
    all_current = True
    for name, dsn in _target_dsns(target):
        with connection(dsn) as conn:
            status = migration_status(conn, name)
        all_current &= status.current
        report[name] = {
            "applied": [
                {
                    "version": a.version,
                    "name": a.name,
                    "applied_at": a.applied_at.isoformat(),
                    "duration_ms": a.duration_ms,
                }
                for a in status.applied
            ],
            "pending": [m.filename for m in status.pending],
            "checksum_drift": [str(m.path) for m in status.drifted],
            "unknown_applied": [f"{a.version:04d}_{a.name}" for a in status.unknown],
        }
    if as_json:
        click.echo(json.dumps(report))
    else:
        for name, r in report.items():
            click.echo(f"{name}:")
            for a in r["applied"]:
                click.echo(
                    f"  applied  {a['version']:04d}_{a['name']}  {a['applied_at']}  {a['duration_ms']} ms"
                )
            for p in r["pending"]:
                click.echo(f"  pending  {p}")
            for d in r["checksum_drift"]:
                click.echo(f"  DRIFT    {d} changed after it was applied")
            for u in r["unknown_applied"]:
                click.echo(f"  unknown  {u} is applied but has no file")
    if check and not all_current:
        raise click.ClickException("migrations are not current — run 'orchestration-pipeline db migrate'")
