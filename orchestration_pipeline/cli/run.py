"""``run``: materialize the assets once, end to end, and report their checks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import click

from orchestration_pipeline.cli._common import pipeline_settings
from orchestration_pipeline.cli.demo import generate_demo_files, seed_demo_tasks
from orchestration_pipeline.cli.services import dagster_executable


@click.command()
@click.option("--select", default="*", show_default=True, help="Dagster asset selection to materialize.")
@click.option(
    "--demo",
    "demo_sessions",
    default=0,
    show_default=True,
    type=click.IntRange(0, 10_000),
    help="First write this many demo sessions into the landing directory.",
)
def run(select: str, demo_sessions: int) -> None:
    """`up`, then materialize the selected assets (and run their checks) once, end to end.

    Prints one line per failed asset check; exits 1 when any ERROR-severity check failed
    (WARN failures are printed but leave the exit status 0).
    """
    from datetime import UTC, datetime

    from orchestration_pipeline.lib.project_files import project_root
    from orchestration_pipeline.lib.services import bring_up, pipeline_environment, prepare_dagster_home

    _validate_selection(select)
    settings = pipeline_settings()
    services = bring_up(settings)
    prepare_dagster_home(settings)
    if demo_sessions:
        written = generate_demo_files(settings.landing_dir, sessions=demo_sessions)
        click.echo(f"wrote {len(written)} demo files to {settings.landing_dir}", err=True)
        seed_demo_tasks(services.urls.tasks, written)
    pipeline_env = pipeline_environment(services)
    env = {**os.environ, **pipeline_env}
    started = datetime.now(UTC)
    argv = [
        dagster_executable(),
        "asset",
        "materialize",
        "--select",
        select,
        "-m",
        "orchestration_pipeline.definitions",
    ]
    result = subprocess.run(argv, env=env, cwd=project_root())
    failed = _failed_checks(settings.dagster_home, pipeline_env, started)
    for asset, check, severity, description in failed:
        click.echo(f"check failed: {asset} {check} [{severity}] {description}")
    if result.returncode != 0:
        raise click.ClickException(
            f"materialization failed (exit {result.returncode}) — see the log above, or run "
            "'orchestration-pipeline dev' and open the run in the UI"
        )
    errors = [f for f in failed if f[2] == "ERROR"]
    if errors:
        raise click.ClickException(
            f"materialized {select!r}, but {len(errors)} ERROR-severity check(s) failed — see the lines "
            "above, or run 'orchestration-pipeline dev' and open the run in the UI"
        )
    click.echo(
        f"materialized {select!r}; runs are stored in the dagster database (see them with 'orchestration-pipeline dev')"
    )


def _validate_selection(select: str) -> None:
    """A usage error naming the valid assets when ``select`` matches no asset of the Definitions."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import dagster as dg

        from orchestration_pipeline.definitions import defs

        definitions = defs() if callable(defs) else defs
        graph = definitions.resolve_asset_graph()
        try:
            keys = dg.AssetSelection.from_coercible(select.split(",")).resolve(graph)
        except Exception:  # DagsterInvalidSubsetError, or a selection that does not parse
            keys = set()
    if not keys:
        names = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
        raise click.BadParameter(
            f"{select!r} selects no asset; valid assets: {', '.join(names)} (or '*' for all)",
            param_hint="--select",
        )


def _failed_checks(
    dagster_home: Path, pipeline_env: dict[str, str], started
) -> list[tuple[str, str, str, str]]:
    """(asset, check, severity, description) of each failed check of the run started after ``started``.

    `dagster asset materialize` runs in a subprocess: its check evaluations are read back from
    the run storage of the DagsterInstance under ``dagster_home``.
    """
    import warnings

    os.environ.update(pipeline_env)  # dagster.yaml reads the storage URL from the environment
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import dagster as dg

        try:
            with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
                run_id = _cli_run_id(
                    instance.get_runs(filters=dg.RunsFilter(created_after=started), limit=50)
                )
                if run_id is None:
                    return []
                records = instance.get_records_for_run(
                    run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=10_000
                ).records
        except Exception as exc:  # reporting must not hide the run's own outcome
            click.echo(f"warning: could not read the check results: {type(exc).__name__}: {exc}", err=True)
            return []
    failed = []
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        failed.append(
            (
                evaluation.asset_key.to_user_string(),
                evaluation.check_name,
                evaluation.severity.value,
                evaluation.description or "(no description)",
            )
        )
    return failed


# Tags of runs that a sensor, a schedule or a backfill launched (a `dev` running on the same home).
_LAUNCHED_TAGS = ("dagster/sensor_name", "dagster/schedule_name", "dagster/backfill")


def _cli_run_id(runs: list) -> str | None:
    """The run `dagster asset materialize` started: of the runs created since (newest first), the
    oldest that no sensor, schedule or backfill launched."""
    ours = [r for r in runs if not any(tag in r.tags for tag in _LAUNCHED_TAGS)]
    return ours[-1].run_id if ours else None
