"""``run``: materialize the assets once, end to end, and report their checks.

The terminal gets a short table of the checks (asset, severity, result), one line per failed
check naming the runbook section that explains it (the ``runbook`` metadata of its check spec),
and one line saying what to do next. Dagster's own log (the ``dagster asset materialize``
subprocess) goes to a file under ``$ORCH_HOME/logs`` unless ``--verbose``; when the
materialization fails, its error lines are shown and the file is named.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from orchestration_pipeline.cli._common import first_line, pipeline_settings
from orchestration_pipeline.cli.demo import generate_demo_files, seed_demo_tasks
from orchestration_pipeline.cli.services import dagster_executable

#: How many ``run-*.log`` files ``$ORCH_HOME/logs`` keeps.
KEEP_LOGS = 20
#: How many of Dagster's error lines a failed materialization shows.
EXCERPT_LINES = 10


@dataclass(frozen=True)
class CheckRow:
    """One asset check of the selection: what its spec declares, and what this run found."""

    asset: str
    check: str
    severity: str  # declared in the spec's metadata; a failure's own severity replaces it
    runbook: str | None
    result: str = "not run"  # passed | failed | not run
    description: str = ""


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
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Show Dagster's own log here instead of writing it to $ORCH_HOME/logs.",
)
def run(select: str, demo_sessions: int, verbose: bool) -> None:
    """`up`, then materialize the selected assets and run their checks once, end to end.

    Ends with a table of the checks and what to do next; each failed check names the runbook
    section that explains it. Exits 1 when an ERROR-severity check failed or the materialization
    failed (WARN failures are shown but leave the exit status 0).
    """
    outcome = materialize_once(select, verbose, demo_sessions=demo_sessions)
    _finish(outcome.rows, outcome.returncode, outcome.log_path)


@dataclass
class Materialized:
    """What one ``materialize_once`` did: the checks' results and where Dagster's log went."""

    rows: list[CheckRow]
    returncode: int
    log_path: Path | None
    settings: Any
    services: Any


def materialize_once(
    select: str,
    verbose: bool,
    *,
    demo_sessions: int = 0,
    demo_faults: bool = False,
    demo_seed: int | None = None,
) -> Materialized:
    """`up`, optionally demo data, then ``dagster asset materialize`` of ``select``; prints the table
    of checks and, on a failed materialization, the excerpt of Dagster's log."""
    from datetime import UTC, datetime

    from orchestration_pipeline.lib.project_files import project_root
    from orchestration_pipeline.lib.services import bring_up, pipeline_environment, prepare_dagster_home

    left_out: list[str] = []
    checks, select = _selected_checks(select, verbose, left_out)
    settings = pipeline_settings()
    services = bring_up(settings)
    for named in left_out:
        click.echo(
            f"leaving out the daily-partitioned {named}: 'orchestration-pipeline retention run' archives "
            "the due days (the nightly_retention schedule does it in Dagster)",
            err=True,
        )
    prepare_dagster_home(settings)
    if demo_sessions:
        written = generate_demo_files(
            settings.landing_dir, sessions=demo_sessions, faults=demo_faults, seed=demo_seed
        )
        click.echo(f"wrote {len(written)} demo files to {settings.landing_dir}", err=True)
        seed_demo_tasks(services.urls.tasks, written)
    pipeline_env = pipeline_environment(services)
    started = datetime.now(UTC)
    log_path = None if verbose else _new_log_path(settings)
    where = "below" if log_path is None else f"to {log_path} (--verbose shows it here)"
    click.echo(f"materializing {select!r}; Dagster's log goes {where}", err=True)
    argv = [dagster_executable(), "asset", "materialize", "--select", select]
    argv += ["-m", "orchestration_pipeline.definitions"]
    returncode = _materialize(argv, {**os.environ, **pipeline_env}, project_root(), log_path)
    rows = _with_results(checks, _evaluations(settings.dagster_home, pipeline_env, started))
    _print_report(rows)
    if returncode != 0 and log_path is not None:
        _print_excerpt(log_path)
    return Materialized(rows, returncode, log_path, settings, services)


def _materialize(argv: list[str], env: dict[str, str], cwd: Path, log_path: Path | None) -> int:
    """Run ``dagster asset materialize``: its output into ``log_path``, or here when None."""
    if log_path is None:
        return subprocess.run(argv, env=env, cwd=cwd).returncode
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.run(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode


def _new_log_path(settings) -> Path:
    """A fresh ``$ORCH_HOME/logs/run-<UTC time>-<pid>.log``; only the newest KEEP_LOGS are kept."""
    from datetime import UTC, datetime

    from orchestration_pipeline.lib.embedded import unwritable_home

    logs = settings.orch_home / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        for old in sorted(logs.glob("run-*.log"))[: -(KEEP_LOGS - 1)]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        raise unwritable_home(settings.orch_home, exc) from None
    return logs / f"run-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}.log"


def _finish(rows: list[CheckRow], returncode: int, log_path: Path | None) -> None:
    """The last line: what to do next. Raises (exit 1) on an ERROR failure or a failed materialization."""
    failed = [r for r in rows if r.result == "failed"]
    errors = [r for r in failed if r.severity == "ERROR"]
    ui = "'orchestration-pipeline dev' opens the run in the UI"
    log = "" if log_path is None else f" (Dagster's log: {log_path})"
    if errors:
        raise click.ClickException(
            f"{len(errors)} ERROR-severity check(s) failed — read the runbook sections named above; {ui}{log}"
        )
    if returncode != 0:
        shown = "see Dagster's log above" if log_path is None else f"the full log is {log_path}"
        raise click.ClickException(f"materialization failed (exit {returncode}) — {shown}; {ui}")
    if failed:
        click.echo(
            f"{len(failed)} WARN check(s) failed; the exit status stays 0 — read the runbook sections "
            f"named above; {ui}"
        )
        return
    passed = sum(r.result == "passed" for r in rows)
    not_run = len(rows) - passed
    if not_run:
        click.echo(f"{passed} checks passed, {not_run} did not run — {ui}")
        return
    click.echo(f"all {passed} checks passed — open the UI with 'orchestration-pipeline dev'")


def _print_report(rows: list[CheckRow]) -> None:
    """The table of checks, then one line per failed check naming its runbook section."""
    if not rows:
        click.echo("the selected assets have no checks")
        return
    table = [("check", "asset", "severity", "result")]
    table += [(r.check, r.asset, r.severity, r.result) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    click.echo("")
    for line in table:
        click.echo(
            "  ".join([*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[3]])
        )
    failures = [r for r in rows if r.result == "failed"]
    if failures:
        click.echo("")
    for r in failures:
        where = f" — read {_runbook_ref(r.runbook)}" if r.runbook else ""
        click.echo(f"check failed: {r.asset} {r.check} [{r.severity}] {r.description}{where}")


def _runbook_ref(runbook: str) -> str:
    """``runbook`` as declared (relative to the checkout), or absolute when run from elsewhere."""
    from orchestration_pipeline.lib.project_files import project_root

    path, _, anchor = runbook.partition("#")
    if Path(path).exists():
        return runbook
    full = project_root() / path
    return f"{full}#{anchor}" if full.exists() else runbook


# `2026-01-31 12:00:00 +0000 - dagster - ERROR - __ASSET_JOB - <run id> - <step> - message`
_ERROR_LINE = re.compile(
    r" - dagster - ERROR - (?:\S+ - )?(?:[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12} - )?"
)
_CHILD_PREFIX = re.compile(r"^In process \d+: ")
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b(?::|$)|^In process \d+: "
)


def log_excerpt(text: str, limit: int = EXCERPT_LINES) -> list[str]:
    """The useful part of Dagster's log: its ERROR lines (without the timestamp and run id) and the
    exception lines, the last ``limit`` of them; the last lines of the log when there are none."""
    picked: list[str] = []
    for line in text.splitlines():
        found = _ERROR_LINE.search(line)
        if found:
            line = line[found.end() :]
            if "were not executed" in line:  # follows from an error already shown
                continue
        elif not _EXCEPTION_LINE.search(line):
            continue
        line = _CHILD_PREFIX.sub("", line.strip())  # the same error from each child process: once
        if line and line not in picked:
            picked.append(line)
    if not picked:
        picked = [line for line in text.splitlines() if line.strip()]
    return picked[-limit:]


def _print_excerpt(log_path: Path) -> None:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    click.echo(f"\nfrom Dagster's log ({log_path}):", err=True)
    for line in log_excerpt(text):
        click.echo(f"  {line}", err=True)


def _asset_graph(verbose: bool):
    """The Definitions' asset graph; one line naming the error when the code location does not load."""
    try:
        from orchestration_pipeline.definitions import defs

        definitions = defs() if callable(defs) else defs
        return definitions.resolve_asset_graph()
    except Exception as exc:
        if verbose:
            raise
        raise click.ClickException(
            f"the pipeline's Dagster definitions do not load: {type(exc).__name__}: {first_line(exc)} "
            "— fix the code, or rerun with --verbose for the traceback"
        ) from None


def _selected_checks(
    select: str, verbose: bool = False, left_out: list[str] | None = None
) -> tuple[list[CheckRow], str]:
    """The checks of the assets ``select`` matches, with their declared severity and runbook, in
    the order the assets materialize, and the selection to hand to Dagster. A usage error naming
    the valid assets when it matches none.

    Daily-partitioned assets (the retention archives and purge) materialize one day at a time: ``*``
    leaves them out (naming them), and a selection of nothing but them is refused, naming
    ``retention run``."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import dagster as dg

        graph = _asset_graph(verbose)
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
    left_out = [] if left_out is None else left_out
    partitioned = sorted(k for k in keys if graph.get(k).partitions_def is not None)
    if partitioned:
        named = ", ".join(k.to_user_string() for k in partitioned)
        keys = keys - set(partitioned)
        if not keys:
            raise click.BadParameter(
                f"{select!r} selects only daily-partitioned assets ({named}): run "
                "'orchestration-pipeline retention run' to archive the due days",
                param_hint="--select",
            )
        select = ",".join(sorted(k.to_user_string() for k in keys))
        left_out.append(named)
    order = {key: i for i, key in enumerate(graph.toposorted_asset_keys)}
    check_keys = sorted(
        (k for k in graph.asset_check_keys if k.asset_key in keys),
        key=lambda k: (order.get(k.asset_key, len(order)), k.name),
    )
    return [_declared(graph.get_check_spec(k)) for k in check_keys], select


def _declared(spec) -> CheckRow:
    meta = {key: getattr(value, "value", value) for key, value in (spec.metadata or {}).items()}
    return CheckRow(
        asset=spec.asset_key.to_user_string(),
        check=spec.name,
        severity=str(meta.get("severity", "ERROR")),
        runbook=meta.get("runbook"),
    )


def _with_results(
    checks: list[CheckRow], evaluations: dict[tuple[str, str], tuple[bool, str, str]]
) -> list[CheckRow]:
    """``checks`` with this run's outcome; a check that was not evaluated stays ``not run``."""
    rows = []
    for row in checks:
        found = evaluations.get((row.asset, row.check))
        if found is None:
            rows.append(row)
            continue
        passed, severity, description = found
        if passed:
            rows.append(replace(row, result="passed", description=description))
        else:
            rows.append(replace(row, result="failed", severity=severity, description=description))
    return rows


def _evaluations(
    dagster_home: Path, pipeline_env: dict[str, str], started
) -> dict[tuple[str, str], tuple[bool, str, str]]:
    """(asset, check) → (passed, severity, description) of each check the run started after
    ``started`` evaluated.

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
                    return {}
                records = instance.get_records_for_run(
                    run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=10_000
                ).records
        except Exception as exc:  # reporting must not hide the run's own outcome
            click.echo(f"warning: could not read the check results: {type(exc).__name__}: {exc}", err=True)
            return {}
    found = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        found[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = (
            evaluation.passed,
            evaluation.severity.value,
            evaluation.description or "(no description)",
        )
    return found


# Tags of runs that a sensor, a schedule or a backfill launched (a `dev` running on the same home).
_LAUNCHED_TAGS = ("dagster/sensor_name", "dagster/schedule_name", "dagster/backfill")


def _cli_run_id(runs: list) -> str | None:
    """The run `dagster asset materialize` started: of the runs created since (newest first), the
    oldest that no sensor, schedule or backfill launched."""
    ours = [r for r in runs if not any(tag in r.tags for tag in _LAUNCHED_TAGS)]
    return ours[-1].run_id if ours else None
