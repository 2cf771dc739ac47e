"""``up``, ``down`` and ``dev``: the embedded services and the Dagster UI."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import click

from orchestration_pipeline.cli._common import pipeline_settings


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of aligned text.")
@click.option("--env", "as_env", is_flag=True, help="Print `export NAME=value` lines for a shell to eval.")
def up(as_json: bool, as_env: bool) -> None:
    """Start the embedded services if needed, apply migrations, and print DSNs and paths.

    Safe to run repeatedly and concurrently: a running server is reused.
    """
    from orchestration_pipeline.lib.services import bring_up, describe, pipeline_environment

    services = bring_up(pipeline_settings())
    if as_env:
        for name, value in pipeline_environment(services).items():
            click.echo(f"export {name}={_shell_quote(value)}")
        return
    info = describe(services)
    info_applied = {t: names for t, names in services.applied.items() if names}
    if as_json:
        click.echo(json.dumps({**info, "applied": info_applied}))
        return
    width = max(len(k) for k in info)
    for key, value in info.items():
        click.echo(f"{key.ljust(width)}  {value}")
    for target, names in info_applied.items():
        click.echo(f"applied {target}: {', '.join(names)}")


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


@click.command()
def down() -> None:
    """Stop the embedded PostgreSQL server and the index's shard host under $ORCH_HOME (no-op for
    configured servers)."""
    from orchestration_pipeline.lib.embedded import stop_postgres
    from orchestration_pipeline.lib.index.host import host_running
    from orchestration_pipeline.lib.index.host_client import stop_host

    settings = pipeline_settings()
    if host_running(settings.qdrant_path) and stop_host(settings.qdrant_path):
        click.echo(f"stopped the index shard host of {settings.qdrant_path}")
    # Checked whatever ORCH_DATABASE_URL says: `eval "$(orchestration-pipeline up --env)"` sets it
    # to the embedded server's own socket. With nothing running, nothing is created.
    if stop_postgres(settings.orch_home):
        click.echo(f"stopped embedded PostgreSQL in {settings.pg_dir}")
    elif settings.embedded_postgres:
        click.echo("embedded PostgreSQL was not running")
    else:
        click.echo(f"no embedded PostgreSQL under {settings.pg_dir}; configured servers are left alone")


def dagster_executable() -> str:
    candidate = Path(sys.executable).parent / "dagster"
    found = str(candidate) if candidate.exists() else shutil.which("dagster")
    if not found:
        raise click.ClickException(
            "the `dagster` command is not installed — run 'pip install -e .' in this environment"
        )
    return found


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface for the Dagster webserver.")
@click.option(
    "--port", "-p", default=3000, show_default=True, type=int, help="Port for the Dagster webserver."
)
def dev(host: str, port: int) -> None:
    """`up`, then `dagster dev` with DAGSTER_HOME under $ORCH_HOME and storage in Postgres.

    Refuses at once when a Dagster started by `dev` for this ORCH_HOME is still running, or when
    the port is taken. Stop it with Ctrl-C (or SIGTERM to its process group). The embedded
    database keeps running for the next start; `orchestration-pipeline down` stops it.
    """
    from orchestration_pipeline.lib.project_files import project_root
    from orchestration_pipeline.lib.services import (
        bring_up,
        pipeline_environment,
        prepare_dagster_home,
        record_dagster_dev,
    )

    settings = pipeline_settings()
    url = f"http://{host}:{port}"
    _refuse_a_second_dev(settings, host, port)
    services = bring_up(settings)
    prepare_dagster_home(settings)
    env = {**os.environ, **pipeline_environment(services)}
    workspace = project_root() / "workspace.yaml"
    argv = [dagster_executable(), "dev", "-w", str(workspace), "-h", host, "-p", str(port)]
    record_dagster_dev(settings, url)  # this pid: `dagster dev` replaces this process below
    click.echo(f"starting Dagster on {url} (DAGSTER_HOME={settings.dagster_home})", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process so signals sent to it (or its group) reach `dagster dev` directly.
    os.execve(argv[0], argv, env)


def _refuse_a_second_dev(settings, host: str, port: int) -> None:
    """A second `dagster dev` on the same ORCH_HOME would run a second daemon (every schedule and
    sensor twice), and one on a taken port fails only after starting everything: refuse both."""
    from orchestration_pipeline.lib.services import port_problem, running_dagster

    running = running_dagster(settings)
    if running is not None:
        raise click.ClickException(
            f"Dagster is already running for this ORCH_HOME on {running.url} (pid {running.pid}) — "
            f"open it, or stop it first (Ctrl-C in its terminal, or kill {running.pid})"
        )
    problem = port_problem(host, port)
    if problem is None:
        return
    if problem.in_use:
        fix = f"if it is Dagster, open http://{host}:{port}; otherwise stop what uses it, or choose another --port"
    else:
        fix = "choose another --host or --port"
    raise click.ClickException(f"{problem.message} — {fix}")
