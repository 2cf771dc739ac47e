"""``demo generate``: realistic event files and Tasks DB rows for trying the pipeline."""

from __future__ import annotations

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


@click.group()
def demo() -> None:
    """Demo data for trying the pipeline."""


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
