"""The ``orchestration-pipeline`` console script. Thin: parsing and printing; the work is in lib/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import psycopg

from orchestration_pipeline.errors import OrchError, SchemaNotReady
from orchestration_pipeline.lib.audit import OPERATIONS
from orchestration_pipeline.lib.failure_types import FAILURE_TYPES


def _missing_table(exc: psycopg.errors.UndefinedTable) -> str:
    """The table an UndefinedTable error names (``relation "x" does not exist``)."""
    found = re.search(r'relation "([^"]+)" does not exist', exc.diag.message_primary or str(exc))
    return found[1] if found else "(unknown)"


def _first_line(exc: Exception) -> str:
    """The first line of an error's message (a driver's error can run to several), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Group(click.Group):
    """Turns known errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except OrchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except psycopg.errors.UndefinedTable as exc:
            # A safety net: commands check the schema up front (require_schema); a table a
            # command reaches without that check still ends in the same one-line message.
            click.echo(f"error: {SchemaNotReady([_missing_table(exc)])}", err=True)
            ctx.exit(1)
        except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction) as exc:
            # tables there, a later migration's column or function not: code newer than the schema
            detail = (exc.diag.message_primary or str(exc)).strip()
            click.echo(
                f"error: the database schema is older than this version ({detail}) — run "
                "'orchestration-pipeline db migrate'",
                err=True,
            )
            ctx.exit(1)
        except psycopg.OperationalError as exc:
            line = _first_line(exc)
            click.echo(
                f"error: database unavailable: {line} — check the server and the *_DATABASE_URL settings",
                err=True,
            )
            ctx.exit(1)


def _settings():
    from orchestration_pipeline.settings import load_settings

    return load_settings()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="orchestration-pipeline")
def main() -> None:
    """Turn orchestration and agent event logs into durable, verified state.

    With no database settings, everything runs on an embedded PostgreSQL under
    $ORCH_HOME (default ./.orch). Set ORCH_DATABASE_URL and TASKS_DATABASE_URL to use servers.
    """


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of aligned text.")
@click.option("--env", "as_env", is_flag=True, help="Print `export NAME=value` lines for a shell to eval.")
def up(as_json: bool, as_env: bool) -> None:
    """Start the embedded services if needed, apply migrations, and print DSNs and paths.

    Safe to run repeatedly and concurrently: a running server is reused.
    """
    from orchestration_pipeline.lib.services import bring_up, describe, pipeline_environment

    services = bring_up(_settings())
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


@main.command()
def down() -> None:
    """Stop the embedded PostgreSQL server under $ORCH_HOME (no-op for configured servers)."""
    from orchestration_pipeline.lib.embedded import stop_postgres

    settings = _settings()
    # Checked whatever ORCH_DATABASE_URL says: `eval "$(orchestration-pipeline up --env)"` sets it
    # to the embedded server's own socket. With nothing running, nothing is created.
    if stop_postgres(settings.orch_home):
        click.echo(f"stopped embedded PostgreSQL in {settings.pg_dir}")
    elif settings.embedded_postgres:
        click.echo("embedded PostgreSQL was not running")
    else:
        click.echo(f"no embedded PostgreSQL under {settings.pg_dir}; configured servers are left alone")


def _dagster_executable() -> str:
    candidate = Path(sys.executable).parent / "dagster"
    found = str(candidate) if candidate.exists() else shutil.which("dagster")
    if not found:
        raise click.ClickException(
            "the `dagster` command is not installed — run 'pip install -e .' in this environment"
        )
    return found


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface for the Dagster webserver.")
@click.option(
    "--port", "-p", default=3000, show_default=True, type=int, help="Port for the Dagster webserver."
)
def dev(host: str, port: int) -> None:
    """`up`, then `dagster dev` with DAGSTER_HOME under $ORCH_HOME and storage in Postgres.

    Stop it with Ctrl-C (or SIGTERM to its process group). The embedded database keeps
    running for the next start; `orchestration-pipeline down` stops it.
    """
    from orchestration_pipeline.lib.project_files import project_root
    from orchestration_pipeline.lib.services import bring_up, pipeline_environment, prepare_dagster_home

    settings = _settings()
    services = bring_up(settings)
    prepare_dagster_home(settings)
    env = {**os.environ, **pipeline_environment(services)}
    workspace = project_root() / "workspace.yaml"
    argv = [_dagster_executable(), "dev", "-w", str(workspace), "-h", host, "-p", str(port)]
    click.echo(f"starting Dagster on http://{host}:{port} (DAGSTER_HOME={settings.dagster_home})", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process so signals sent to it (or its group) reach `dagster dev` directly.
    os.execve(argv[0], argv, env)


@main.command()
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
    settings = _settings()
    services = bring_up(settings)
    prepare_dagster_home(settings)
    if demo_sessions:
        written = _generate_demo(settings.landing_dir, sessions=demo_sessions)
        click.echo(f"wrote {len(written)} demo files to {settings.landing_dir}", err=True)
        _seed_demo_tasks(services.urls.tasks, written)
    pipeline_env = pipeline_environment(services)
    env = {**os.environ, **pipeline_env}
    started = datetime.now(UTC)
    argv = [
        _dagster_executable(),
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


def _generate_demo(target: Path, **options) -> list[Path]:
    """generate_demo, with an unwritable or full landing directory as one line."""
    from orchestration_pipeline.lib.demo import generate_demo

    try:
        return generate_demo(target, **options)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write to {target}: {exc.strerror or exc} — check the landing directory"
        ) from None


@main.group()
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

    urls = resolve_database_urls(_settings(), start=True)
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


def _orchestration_dsn() -> str:
    return _database_urls().orchestration


@main.command()
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
    from orchestration_pipeline.lib.ingest import Ingestor, describe_progress

    try:
        with connection(_orchestration_dsn()) as conn:
            summary = Ingestor(
                conn,
                batch_rows=batch_rows,
                progress=None if quiet else lambda info: click.echo(describe_progress(info), err=True),
            ).ingest_paths(paths)
    except psycopg.OperationalError as exc:
        line = _first_line(exc)
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


def _no_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object, refusing a key given twice (RFC 8785 takes I-JSON: which one would count?)."""
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"key {repeated!r} appears twice in one object — give each key once")
    return body


def _default_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"cli:uid{os.getuid()}"


def _identity_options(func):
    """--actor and --request-id: who asked for an audited change, and which request it was."""
    func = click.option(
        "--request-id",
        envvar="ORCH_REQUEST_ID",
        help="Correlates the audit entries of one request (or ORCH_REQUEST_ID). Default: a new UUID.",
    )(func)
    return click.option(
        "--actor",
        envvar="ORCH_ACTOR",
        help="Who is acting, as recorded in the audit ledger (or ORCH_ACTOR). Default: cli:<login user>.",
    )(func)


def _who(actor: str | None, request_id: str | None) -> tuple[str, str]:
    import uuid

    return actor or _default_actor(), request_id or f"cli-{uuid.uuid4()}"


@main.group()
def projection() -> None:
    """The task projection (read model of tasks) and its reconciliation against the Tasks DB."""


def _database_urls():
    from orchestration_pipeline.lib.embedded import resolve_database_urls

    return resolve_database_urls(_settings(), start=True)


def _print_projector_run(run, as_json: bool) -> None:
    body = run.as_dict()
    if as_json:
        click.echo(json.dumps(body))
        return
    latency = ""
    if body["sync_latency_p95_ms"] is not None:
        latency = f"; sync latency avg {body['sync_latency_avg_ms']:.0f} ms, p95 {body['sync_latency_p95_ms']:.0f} ms"
    click.echo(
        f"projected {body['events_applied']} events onto {body['tasks_updated']} task rows in {body['batches']} "
        f"batches ({body['events_per_s']}/s){latency}"
    )


@projection.command("update")
@click.option(
    "--batch-events",
    default=50_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Events per transaction.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def projection_update(batch_events: int, as_json: bool) -> None:
    """Fold the task events committed since the checkpoint into task_projection."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.projection import project_events

    urls = _database_urls()
    with connection(urls.orchestration) as orch, connection(urls.tasks, read_only=True) as tasks:
        run = project_events(
            orch,
            tasks,
            batch_events=batch_events,
            progress=lambda r: click.echo(
                f"  {r.events_applied:,} events ({r.events_per_s:,.0f}/s)", err=True
            ),
        )
    _print_projector_run(run, as_json)


@projection.command("reconcile")
@click.option(
    "--grace-minutes",
    default=15,
    show_default=True,
    type=click.IntRange(min=0),
    help="Leave out tasks changed this recently.",
)
@click.option(
    "--repair-max-rows",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Repair up to this many drifted rows; above, rebuild.",
)
@click.option(
    "--rebuild", "force_rebuild", is_flag=True, help="Rebuild from events plus the Tasks DB regardless."
)
@_identity_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def projection_reconcile(
    grace_minutes: int,
    repair_max_rows: int,
    force_rebuild: bool,
    actor: str | None,
    request_id: str | None,
    as_json: bool,
) -> None:
    """Catch the projection up, compare it with the Tasks DB, then repair or rebuild it.

    Drift classes: missing_in_projection, missing_in_tasks, status_mismatch. The report is
    stored in drift_reports, with a decision event and the projection_drift_count metric; a
    repair or rebuild is recorded in the audit ledger.
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.drift import AuditContext, ReconcileSettings, reconcile
    from orchestration_pipeline.lib.projection import project_events

    urls = _database_urls()
    settings = ReconcileSettings(grace_minutes=grace_minutes, repair_max_rows=repair_max_rows)
    actor, request_id = _who(actor, request_id)
    audit = AuditContext(actor=actor, request_id=request_id, source="cli:projection reconcile")
    with connection(urls.orchestration) as orch, connection(urls.tasks, read_only=True) as tasks:
        project_events(orch, tasks)
        report = reconcile(orch, tasks, audit, settings, force_rebuild=force_rebuild)
    body = report.as_dict()
    if as_json:
        click.echo(json.dumps(body, default=str))
        return
    click.echo(
        f"report {body['report_id']}: {body['tasks_compared']} tasks compared ({body['skipped_in_grace']} in the "
        f"grace window), drift {body['drift_count']} — missing_in_projection {body['missing_in_projection']}, "
        f"missing_in_tasks {body['missing_in_tasks']}, status_mismatch {body['status_mismatch']}"
    )
    for kind, samples in body["samples"].items():
        if samples:
            click.echo(f"  {kind}: " + ", ".join(s["task_id"] for s in samples))
    click.echo(f"action: {body['action']} — {body['action_detail']}")


@projection.command("reports")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def projection_reports(limit: int, as_json: bool) -> None:
    """The newest drift reports."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.drift import recent_reports

    with connection(_orchestration_dsn()) as orch:
        reports = recent_reports(orch, limit=limit)
    for r in reports:
        if as_json:
            click.echo(json.dumps(r, default=str))
        else:
            click.echo(
                f"{r['report_id']:>6}  {r['finished_at']:%Y-%m-%d %H:%M:%S%z}  drift {r['drift_count']:>6}  "
                f"{r['action']:<8} {r['action_detail'] or ''}"
            )
    if not reports and not as_json:
        click.echo("no drift reports yet — run 'orchestration-pipeline projection reconcile'")


@main.group()
def quarantine() -> None:
    """Inspect and replay lines that ingestion could not accept."""


@quarantine.command("list")
@click.option("--failure-type", type=click.Choice(FAILURE_TYPES), help="Only this failure type.")
@click.option("--all", "include_replayed", is_flag=True, help="Include rows that were already replayed.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def quarantine_list(
    failure_type: str | None, include_replayed: bool, limit: int, offset: int, as_json: bool
) -> None:
    """Show quarantined lines, newest first, with why they were rejected and where they came from."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.quarantine import list_quarantine, quarantine_counts

    with connection(_orchestration_dsn()) as conn:
        rows = list_quarantine(
            conn, failure_type=failure_type, include_replayed=include_replayed, limit=limit, offset=offset
        )
        counts = quarantine_counts(conn)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, default=str))
        return
    click.echo("pending by type: " + (", ".join(f"{k}={v}" for k, v in counts.items()) or "none"))
    for r in rows:
        click.echo(
            f"#{r['quarantine_id']} {r['failure_type']} {r['json_pointer'] or '/'} "
            f"{r['source_file']}:{r['source_line']}\n    {r['detail']}\n    {r['raw_preview']}"
        )


@quarantine.command("replay")
@click.option("--id", "ids", multiple=True, type=int, help="Replay these quarantine ids (repeatable).")
@click.option("--failure-type", type=click.Choice(FAILURE_TYPES), help="Only rows of this failure type.")
@click.option("--file", "source_file", help="Only rows from this source file.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows (default: all pending).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@_identity_options
def quarantine_replay(
    ids: tuple[int, ...],
    failure_type: str | None,
    source_file: str | None,
    limit: int | None,
    as_json: bool,
    actor: str | None,
    request_id: str | None,
) -> None:
    """Re-ingest pending quarantined lines with the current validator (after a fix).

    Accepted lines become events; lines that still fail stay quarantined with an attempt count.
    Every examined line leaves an audit entry (operation replay) naming --actor and --request-id.
    """
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.quarantine import replay_quarantine

    actor, request_id = _who(actor, request_id)
    with connection(_orchestration_dsn()) as conn:
        result = replay_quarantine(
            conn,
            actor=actor,
            request_id=request_id,
            ids=list(ids) or None,
            failure_type=failure_type,
            source_file=source_file,
            limit=limit,
            source="cli:quarantine replay",
        )
    body = result.as_dict()
    if as_json:
        click.echo(json.dumps(body))
    else:
        if result.already_replayed:
            click.echo(
                "already replayed, left alone: "
                + ", ".join(f"#{i}" for i in result.already_replayed)
                + " (see them with 'orchestration-pipeline quarantine list --all')"
            )
        click.echo(
            f"examined {body['examined']}: {body['accepted']} accepted, {body['duplicates']} duplicates, "
            f"{body['collapsed']} collapsed, {body['still_failing']} still failing"
        )


@main.group()
def audit() -> None:
    """Query and verify the append-only, hash-chained audit ledger."""


@audit.command("query")
@click.option(
    "--entity", metavar="TYPE[:ID]", help="e.g. policy:nightly-cleanup, decision_execution:42, quarantine."
)
@click.option("--actor", help="Only entries by this actor (exact).")
@click.option("--operation", type=click.Choice(sorted(OPERATIONS)), help="Only this kind of change.")
@click.option("--request-id", help="Only entries of this request.")
@click.option("--source", help="Only entries from this job or automation source.")
@click.option(
    "--since", help="From this time: 30m, 24h, 7d, 2w, or an ISO date/time (UTC unless an offset is given)."
)
@click.option("--until", help="Before this time (same formats as --since).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (before/after included).")
def audit_query(
    entity: str | None,
    actor: str | None,
    operation: str | None,
    request_id: str | None,
    source: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Answer "who changed what, when, and why" from the ledger, newest first.

    \b
      orchestration-pipeline audit query --entity policy:nightly-cleanup
      orchestration-pipeline audit query --actor cli:alice --since 24h
      orchestration-pipeline audit query --request-id cli-3f2a... --json
    """
    from orchestration_pipeline.lib.audit import AuditFilter, query_audit
    from orchestration_pipeline.lib.db import connection

    since_at, until_at = _audit_time(since, "--since"), _audit_time(until, "--until")
    if since_at is not None and until_at is not None and until_at <= since_at:
        raise click.BadParameter(
            f"{until!r} is not after --since {since!r} — give an --until later than --since",
            param_hint="--until",
        )
    entity_type, _, entity_id = (entity or "").partition(":")
    flt = AuditFilter(
        entity_type=entity_type or None,
        entity_id=entity_id or None,
        actor=actor,
        operation=operation,
        request_id=request_id,
        source=source,
        since=since_at,
        until=until_at,
        limit=limit,
    )
    with connection(_orchestration_dsn()) as conn:
        rows = query_audit(conn, flt)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    if not rows:
        click.echo("no audit entries match")
        return
    for r in rows:
        click.echo(
            f"{r['occurred_at'].isoformat()}  #{r['audit_id']}  {r['operation']:<8} {r['entity_type']}:{r['entity_id']}"
            f"  by {r['actor']}  request {r['request_id']}"
            + (f"  source {r['source']}" if r["source"] else "")
            + (f"\n    reason: {r['reason']}" if r["reason"] else "")
            + (
                f"\n    before: {json.dumps(r['before_data'], default=str)}"
                if r["before_data"] is not None
                else ""
            )
            + (
                f"\n    after:  {json.dumps(r['after_data'], default=str)}"
                if r["after_data"] is not None
                else ""
            )
        )


def _audit_time(text: str | None, option: str):
    """--since/--until as a datetime; None when not given. Empty or out-of-range text is a usage error."""
    from orchestration_pipeline.lib.audit import parse_since

    if text is None:
        return None
    if not text.strip():
        raise click.BadParameter("is empty — give e.g. 30m, 24h, 7d or 2026-01-31", param_hint=option)
    try:
        return parse_since(text)
    except OverflowError:  # unreadable text is the lib's AuditError, which names the formats
        raise click.BadParameter(
            f"{text!r} is out of range — give a time after 0001-01-01, e.g. 30d or 2020-01-01",
            param_hint=option,
        ) from None


@audit.command("verify")
@click.option(
    "--chain",
    "chain_id",
    help="Verify only this chain (tx/<start µs>/<xid>, or YYYY-MM-DD/NN for entries written before "
    "per-transaction chains); checkpoints are then not checked.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def audit_verify(chain_id: str | None, as_json: bool) -> None:
    """Recompute every hash chain and checkpoint; exit 1 and name the first broken link if any."""
    from orchestration_pipeline.lib.audit import verify_chain
    from orchestration_pipeline.lib.db import connection

    with connection(_orchestration_dsn()) as conn:
        report = verify_chain(conn, chain_id=chain_id)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    elif report.ok:
        sealed = (
            ""
            if chain_id
            else (
                f", {report.checkpoints} checkpoints; {report.unsealed_entries} newer entries not sealed yet "
                "(orchestration-pipeline audit checkpoint)"
            )
        )
        click.echo(f"ok: {report.rows} entries in {report.chains} chains verified{sealed}")
    if not report.ok:
        first = report.first_broken
        raise click.ClickException(
            f"{report.broken_chains} broken chain(s); first: {first.describe()} — follow docs/runbooks/audit.md"
        )


@audit.command("checkpoint")
@click.option(
    "--max-entries",
    default=20_000,
    show_default=True,
    type=click.IntRange(1),
    help="Entries sealed per checkpoint, each in one short transaction.",
)
@click.option(
    "--wait-ms",
    default=2000,
    show_default=True,
    type=click.IntRange(0),
    help="How long to wait for audited transactions still open (then retry twice, then stop).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
def audit_checkpoint(max_entries: int, wait_ms: int, as_json: bool) -> None:
    """Seal every audit entry written since the last checkpoint.

    Until sealed, an entry is protected by the append-only guard and its own hash; once sealed,
    removing it (or its whole transaction) also breaks the checkpoint chain. Every
    audit_ledger_integrity materialization does this too. Writers never wait for it. Exit 1 if an
    audited transaction stayed open too long, or another checkpoint was running (what could be
    sealed was).
    """
    from dataclasses import asdict

    from orchestration_pipeline.lib.audit import checkpoint_ledger
    from orchestration_pipeline.lib.db import connection

    def progress(checkpoints: int, entries: int) -> None:
        if not as_json:
            click.echo(f"checkpoint {checkpoints}: {entries} entries sealed", err=True)

    with connection(_orchestration_dsn()) as conn:
        run = checkpoint_ledger(conn, max_entries=max_entries, wait_ms=wait_ms, progress=progress)
    if as_json:
        click.echo(json.dumps(asdict(run)))
    elif run.created:
        click.echo(
            f"sealed {run.entries} entries in {run.created} checkpoint(s); newest #{run.checkpoint_seq} {run.checkpoint_hash}"
        )
    else:
        click.echo(
            "nothing new to seal"
            + (f"; newest checkpoint #{run.checkpoint_seq}" if run.checkpoint_seq else "")
        )
    if run.busy:
        raise click.ClickException(
            f"stopped early: {run.busy}; the rest is not sealed yet — run it again later, or raise --wait-ms"
        )


@main.group()
def policy() -> None:
    """Decision policies: which effect each may trigger, on/off, dry-run/live. Changes are audited."""


@policy.command("set")
@click.argument("policy_id")
@click.option("--name", help="Human-readable name (default: the id, or the current name).")
@click.option("--effect", help="create_task, label or notify (required for a new policy).")
@click.option("--enable/--disable", "enabled", default=None, help="Turn the policy on or off.")
@click.option("--dry-run/--live", "dry_run", default=None, help="Simulate only, or perform effects.")
@click.option("--reason", help="Why, for the audit ledger.")
@_identity_options
def policy_set(
    policy_id: str,
    name: str | None,
    effect: str | None,
    enabled: bool | None,
    dry_run: bool | None,
    reason: str | None,
    actor: str | None,
    request_id: str | None,
) -> None:
    """Create a policy or change some of its fields (new policies start disabled and dry-run)."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.executions import Policy, get_policy, upsert_policy

    actor, request_id = _who(actor, request_id)
    urls = _database_urls()  # resolved once: with the embedded server this may start it
    with connection(urls.orchestration) as conn:
        current = get_policy(conn, policy_id)
        if current is None and not effect:
            raise click.UsageError(f"policy {policy_id} is new: give --effect (create_task, label or notify)")
        base = current or Policy(policy_id, name or policy_id, effect or "")
        wanted = Policy(
            policy_id,
            name or base.name,
            effect or base.effect,
            base.enabled if enabled is None else enabled,
            base.dry_run if dry_run is None else dry_run,
        )
        upsert_policy(
            conn, wanted, actor=actor, request_id=request_id, reason=reason, source="cli:policy set"
        )
    state = ("enabled" if wanted.enabled else "disabled") + (", dry-run" if wanted.dry_run else ", live")
    click.echo(f"policy {policy_id}: {wanted.effect}, {state} (request {request_id})")


@policy.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def policy_list(as_json: bool) -> None:
    """All policies and their switches."""
    from dataclasses import asdict

    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.executions import list_policies

    with connection(_orchestration_dsn()) as conn:
        policies = list_policies(conn)
    for p in policies:
        if as_json:
            click.echo(json.dumps(asdict(p)))
        else:
            click.echo(
                f"{p.policy_id}  {p.effect:<12} {'enabled' if p.enabled else 'disabled':<8} "
                f"{'dry-run' if p.dry_run else 'LIVE':<7} {p.name}"
            )


@main.group()
def decisions() -> None:
    """Decision executions: run an action at most once, list attempts, rescue stale claims."""


def _tasks_connection_factory(dsn: str):
    from orchestration_pipeline.lib.db import connection

    return lambda: connection(dsn)


@decisions.command("execute")
@click.argument("policy_id")
@click.option("--target", "target_ref", help="Target reference, e.g. the task id to label.")
@click.option("--payload", default="{}", show_default=True, help="The effect's payload as a JSON object.")
@click.option("--dry-run", is_flag=True, help="Simulate even if the policy is live.")
@click.option("--lease-seconds", default=300, show_default=True, type=click.IntRange(1), help="Claim lease.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@_identity_options
def decisions_execute(
    policy_id: str,
    target_ref: str | None,
    payload: str,
    dry_run: bool,
    lease_seconds: int,
    as_json: bool,
    actor: str | None,
    request_id: str | None,
) -> None:
    """Execute the policy's effect once for TARGET and PAYLOAD (a repeat is skipped as a duplicate).

    \b
      orchestration-pipeline decisions execute tag-flaky --target T-42 --payload '{"tag": "flaky"}'
    """
    from datetime import timedelta

    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.executions import Action, execute_action, get_policy
    from orchestration_pipeline.lib.redaction import redacted_copy

    try:
        body = json.loads(payload, object_pairs_hook=_no_repeated_keys)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    if not isinstance(body, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--payload")
    actor, request_id = _who(actor, request_id)
    urls = _database_urls()  # resolved once: with the embedded server this may start it
    with connection(urls.orchestration) as conn:
        current = get_policy(conn, policy_id)
        outcome = execute_action(
            conn,
            Action(policy_id, current.effect if current else "", target_ref, body),
            actor=actor,
            request_id=request_id,
            tasks_connection=_tasks_connection_factory(urls.tasks),
            lease=timedelta(seconds=lease_seconds),
            dry_run=dry_run,
            source="cli:decisions execute",
        )
    # Printed output lands in CI and job logs: the result as it is stored, secrets redacted.
    result = redacted_copy(outcome.result) if outcome.result else None
    if as_json:
        click.echo(json.dumps({**outcome.as_dict(), "result": result}, default=str))
    else:
        click.echo(
            f"{outcome.status}: execution {outcome.execution_id} attempt {outcome.attempt} "
            f"hash {outcome.action_hash[:16]}…"
            + (f" result {json.dumps(result, default=str)}" if result else "")
            + (f" error {outcome.error}" if outcome.error else "")
        )
    if outcome.status in ("failed", "lease_lost"):
        raise SystemExit(1)


@decisions.command("list")
@click.option("--policy", "policy_id", help="Only this policy.")
@click.option("--state", type=click.Choice(["pending", "succeeded", "failed"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def decisions_list(policy_id: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """Recent execution attempts, newest first."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.executions import list_executions

    with connection(_orchestration_dsn()) as conn:
        rows = list_executions(conn, policy_id=policy_id, state=state, limit=limit)
    for r in rows:
        if as_json:
            click.echo(json.dumps(r, default=str))
        else:
            mode = "dry-run" if r["dry_run"] else "live"
            click.echo(
                f"#{r['execution_id']} {r['policy_id']} {r['effect']} {r['target_ref'] or '-'} {mode} "
                f"{r['state']} attempt {r['attempt']} skips {r['duplicate_skips']}"
                + (f"\n    error: {r['error_text']}" if r["error_text"] else "")
            )


@decisions.command("rescue")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@_identity_options
def decisions_rescue(limit: int, as_json: bool, actor: str | None, request_id: str | None) -> None:
    """Resolve claims pending past their lease: succeeded if the effect happened, else failed (retryable)."""
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.executions import rescue_stale_claims

    actor, request_id = _who(actor, request_id)
    urls = _database_urls()  # resolved once: with the embedded server this may start it
    with connection(urls.orchestration) as conn:
        report = rescue_stale_claims(
            conn,
            actor=actor,
            request_id=request_id,
            tasks_connection=_tasks_connection_factory(urls.tasks),
            limit=limit,
            source="cli:decisions rescue",
        )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(
            f"examined {report.examined}: {len(report.succeeded)} found done, {len(report.failed)} marked failed, "
            f"{len(report.skipped)} resolved meanwhile"
        )


@main.group()
def events() -> None:
    """The event envelope."""


@events.command("schema")
def events_schema() -> None:
    """Print the JSON Schema of the event envelope (one branch per event_type)."""
    from orchestration_pipeline.lib.events import envelope_json_schema

    click.echo(json.dumps(envelope_json_schema(), indent=2))


@main.group()
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

    target = landing_dir or _settings().landing_dir
    tasks_dsn = _database_urls().tasks if with_tasks else None
    if tasks_dsn is not None:  # before any file is written: a failed seed would leave them behind
        with connection(tasks_dsn) as conn:
            require_tasks_schema(conn)
    written = _generate_demo(target, sessions=sessions, faults=faults, seed=seed)
    click.echo(f"wrote {len(written)} files to {target}")
    if tasks_dsn is not None:
        _seed_demo_tasks(tasks_dsn, written)


def _seed_demo_tasks(tasks_dsn: str, written: list[Path]) -> None:
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.demo import demo_tasks, seed_tasks

    with connection(tasks_dsn) as conn:
        count = seed_tasks(conn, demo_tasks(written))
    click.echo(
        f"wrote {count} demo tasks to the Tasks DB (with deliberate drift for the first reconciliation)",
        err=True,
    )


def _cli_event_types() -> dict[str, str]:
    from orchestration_pipeline.emit import EVENT_TYPES

    names = {t: t for t in EVENT_TYPES}
    names.update({t.replace("_", "-").replace(".", "-"): t for t in EVENT_TYPES})
    names["artifact"] = "artifact_emit"
    return names


def _field_value(text: str):
    try:
        return json.loads(text)  # numbers, true/false, null, objects
    except ValueError:
        return text


@main.command(context_settings={"show_default": True})
@click.argument("event_type", metavar="TYPE")
@click.argument("artifact_path", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--session-id", required=True, envvar="ORCH_SESSION_ID", help="Run/session id (or ORCH_SESSION_ID)."
)
@click.option(
    "--source", required=True, envvar="ORCH_SOURCE", help="Producer name, e.g. deploy.ps1 (or ORCH_SOURCE)."
)
@click.option("--task-id", help="Task the event belongs to.")
@click.option("--stage", help="Pipeline stage (required for error).")
@click.option("--severity", help="debug, info, success, warning, error or critical.")
@click.option(
    "--status", help="started, in_progress, completed, succeeded, paused, failed, conflict or skipped."
)
@click.option(
    "--duration-ms", type=click.IntRange(min=0), help="Duration (task-end and command-end need it)."
)
@click.option(
    "-f",
    "--field",
    "fields",
    multiple=True,
    metavar="KEY=VALUE",
    help="A payload field; VALUE is JSON when it parses (5, true, null), else text. Repeatable.",
)
@click.option(
    "--landing-dir", type=click.Path(file_okay=False, path_type=Path), help="Default: $ORCH_HOME/landing."
)
def emit(
    event_type: str,
    artifact_path: Path | None,
    session_id: str,
    source: str,
    task_id: str | None,
    stage: str | None,
    severity: str | None,
    status: str | None,
    duration_ms: int | None,
    fields: tuple[str, ...],
    landing_dir: Path | None,
) -> None:
    """Write one event into the landing directory, atomically (for bash and PowerShell harnesses).

    TYPE is an event type: task-start, task-end, command-start, command-end, decision, artifact,
    error, metric, policy-violation, agent-started, agent-progress, agent-completed,
    agent-conflict-detected, agent-paused or agent-error. Examples:

    \b
      orchestration-pipeline emit task-start --session-id S1 --source build.sh --task-id T1
      orchestration-pipeline emit task-end --session-id S1 --source build.sh --task-id T1 \\
          --duration-ms 1200 -f success=true
      orchestration-pipeline emit metric --session-id S1 --source build.sh -f name=rows -f value=42
      orchestration-pipeline emit artifact out/report.xml --session-id S1 --source build.sh

    Prints the path of the file written. A missing or mistyped field exits 2 naming the field.
    """
    types = _cli_event_types()
    resolved = types.get(event_type)
    if resolved is None:
        raise click.BadParameter(
            f"unknown type {event_type!r}; use one of {', '.join(sorted(k for k in types if '_' not in k and '.' not in k))}",
            param_hint="TYPE",
        )
    payload = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--field")
        payload[key] = _field_value(value)
    target = landing_dir or _settings().landing_dir
    try:
        if resolved == "artifact_emit" and artifact_path is not None:
            from orchestration_pipeline.emit import EventWriter

            with EventWriter(target, source=source, session_id=session_id) as writer:
                writer.artifact(artifact_path, task_id=task_id, stage=stage, **payload)
            click.echo(f"artifact_emit for {artifact_path} written to {target}")
            return
        if artifact_path is not None:
            raise click.BadParameter("a path argument is only for the artifact type", param_hint="TYPE")
        from orchestration_pipeline.emit import emit_one

        written = emit_one(
            target,
            resolved,
            source=source,
            session_id=session_id,
            task_id=task_id,
            stage=stage,
            severity=severity,
            status=status,
            duration_ms=duration_ms,
            payload=payload,
        )
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot write to {target}: {exc.strerror or exc} — check the landing directory"
        ) from None
    click.echo(str(written))


if __name__ == "__main__":
    main()
