"""``demo``: the first run on demo data, in one command; ``demo generate``: the data alone."""

from __future__ import annotations

import os
from pathlib import Path

import click

from orchestration_pipeline.cli._common import database_urls, pipeline_settings
from orchestration_pipeline.lib.wording import plural


def generate_demo_files(target: Path, **options) -> list[Path]:
    """generate_demo, with an unwritable or full landing directory as one line."""
    from orchestration_pipeline.lib.demo import generate_demo

    try:
        return generate_demo(target, **options)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write to {target}: {exc.strerror or exc} — check the landing directory"
        ) from None


@click.group(invoke_without_command=True)
@click.option(
    "--sessions", default=5, show_default=True, type=click.IntRange(1, 1_000), help="Demo sessions to write."
)
@click.option("--seed", default=7, show_default=True, type=int, help="Random seed of the demo data.")
@click.option(
    "--ui/--no-ui", default=True, show_default=True, help="End by serving the Dagster UI (Ctrl-C stops it)."
)
@click.option("--port", default=3000, show_default=True, type=int, help="Port of the Dagster UI.")
@click.option("--verbose", "-v", is_flag=True, help="Show Dagster's own log here.")
@click.pass_context
def demo(ctx: click.Context, sessions: int, seed: int, ui: bool, port: int, verbose: bool) -> None:
    """The first run, in one command: the whole pipeline on demo data with a few deliberate faults.

    Brings up the embedded services, writes a realistic landing set and Tasks DB (with a session
    that never ends its task and a policy violation without its rule), materializes every asset
    once and runs every check, raises an alert per failed check, prints which checks passed and
    which failed and why (with their runbook sections) and where the alerts went, then serves the
    Dagster UI. `demo generate` writes only the data.
    """
    if ctx.invoked_subcommand is not None:
        return
    from orchestration_pipeline.cli.run import materialize_once

    outcome = materialize_once("*", verbose, demo_sessions=sessions, demo_faults=True, demo_seed=seed)
    raised = _scan_alerts(outcome)
    failed = [r for r in outcome.rows if r.result == "failed"]
    passed = sum(r.result == "passed" for r in outcome.rows)
    click.echo(
        f"\n{passed} checks passed, {len(failed)} failed (the demo's deliberate faults); "
        f"{plural(len(raised), 'alert')} raised, one per failed check:"
    )
    for alert in raised:
        click.echo(f"  #{alert['alert_id']} [{alert['severity']}] {alert['subject']}: {alert['message']}")
    hook = outcome.settings.alert_webhook_url
    click.echo(
        "alerts went to the alerts table ('orchestration-pipeline alerts list'), stderr"
        + (" and ORCH_ALERT_WEBHOOK_URL" if hook else " (set ORCH_ALERT_WEBHOOK_URL for a webhook too)")
    )
    if outcome.returncode != 0:
        raise click.ClickException(f"materialization failed (exit {outcome.returncode}) — see the log above")
    if ui:
        click.echo(f"opening the Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops it)")
        from orchestration_pipeline.cli.services import dev

        ctx.invoke(dev, host="127.0.0.1", port=port)
    else:
        click.echo("'orchestration-pipeline dev' opens the Dagster UI")


def _scan_alerts(outcome) -> list[dict]:
    """Run the alerting sensors once over what the run just recorded; the alerts it raised."""
    import dagster as dg

    from orchestration_pipeline.definitions import defs
    from orchestration_pipeline.defs.alerting.resources import AlertSettings
    from orchestration_pipeline.defs.alerting.sensors import scan_once
    from orchestration_pipeline.defs.resources import OrchestrationDatabase
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.services import pipeline_environment

    os.environ.update(pipeline_environment(outcome.services))  # dagster.yaml reads its storage URL
    database = OrchestrationDatabase(dsn=outcome.services.urls.orchestration)
    with dg.DagsterInstance.from_config(str(outcome.settings.dagster_home)) as instance:
        scan_once(instance, defs(), database, AlertSettings())
    with connection(outcome.services.urls.orchestration) as conn:
        rows = conn.execute(
            "SELECT alert_id, severity, subject, message FROM alerts WHERE resolved_at IS NULL ORDER BY alert_id"
        ).fetchall()
    return [dict(zip(("alert_id", "severity", "subject", "message"), row, strict=True)) for row in rows]


@demo.command("generate")
@click.option("--sessions", default=5, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--faults", is_flag=True, help="Add malformed lines, an error flood, a missing task_end and a null rule."
)
@click.option("--seed", type=int, help="Random seed, for repeatable output.")
@click.option("--landing-dir", type=click.Path(path_type=Path), help="Default: $ORCH_HOME/landing.")
@click.option(
    "--tasks/--no-tasks",
    "with_tasks",
    default=True,
    show_default=True,
    help="Also fill the Tasks DB with the demo tasks (and a little deliberate drift).",
)
def demo_generate(
    sessions: int, faults: bool, seed: int | None, landing_dir: Path | None, with_tasks: bool
) -> None:
    """Write realistic JSON-lines event files into the landing directory."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.demo import require_tasks_schema

    target = landing_dir or pipeline_settings().landing_dir
    tasks_dsn = database_urls().tasks if with_tasks else None
    if tasks_dsn is not None:  # before any file is written: a failed seed would leave them behind
        with connection(tasks_dsn) as conn:
            require_tasks_schema(conn)
    written = generate_demo_files(target, sessions=sessions, faults=faults, seed=seed)
    click.echo(f"wrote {plural(len(written), 'file')} to {target}")
    if tasks_dsn is not None:
        seed_demo_tasks(tasks_dsn, written)


def seed_demo_tasks(tasks_dsn: str, written: list[Path]) -> None:
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.demo import BACKLOG_TASK_ID, demo_tasks, seed_tasks

    tasks = demo_tasks(written)
    with connection(tasks_dsn) as conn:
        count = seed_tasks(conn, tasks)
    drift = any(t.task_id == BACKLOG_TASK_ID for t in tasks)
    click.echo(
        f"wrote {plural(count, 'demo task')} to the Tasks DB"
        + (" (with deliberate drift for the first reconciliation)" if drift else ""),
        err=True,
    )
