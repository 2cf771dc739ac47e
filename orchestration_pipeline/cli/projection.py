"""``projection update|reconcile|reports``: the task read model and its drift reports."""

from __future__ import annotations

import json

import click

from orchestration_pipeline.cli._common import database_urls, identity_options, orchestration_dsn, who
from orchestration_pipeline.lib.wording import plural


@click.group()
def projection() -> None:
    """The task projection (read model of tasks) and its reconciliation against the Tasks DB."""


def _print_projector_run(run, as_json: bool) -> None:
    body = run.as_dict()
    if as_json:
        click.echo(json.dumps(body))
        return
    latency = ""
    if body["sync_latency_p95_ms"] is not None:
        latency = f"; sync latency avg {body['sync_latency_avg_ms']:.0f} ms, p95 {body['sync_latency_p95_ms']:.0f} ms"
    click.echo(
        f"projected {plural(body['events_applied'], 'event')} onto {plural(body['tasks_updated'], 'task row')} "
        f"in {plural(body['batches'], 'batch', 'batches')} ({body['events_per_s']}/s){latency}"
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
    from orchestration_pipeline.lib.projection.projector import project_events

    urls = database_urls()
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
@identity_options
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
    from orchestration_pipeline.lib.projection.drift import AuditContext, ReconcileSettings, reconcile
    from orchestration_pipeline.lib.projection.projector import project_events

    urls = database_urls()
    settings = ReconcileSettings(grace_minutes=grace_minutes, repair_max_rows=repair_max_rows)
    actor, request_id = who(actor, request_id)
    audit = AuditContext(actor=actor, request_id=request_id, source="cli:projection reconcile")
    with connection(urls.orchestration) as orch, connection(urls.tasks, read_only=True) as tasks:
        project_events(orch, tasks)
        report = reconcile(orch, tasks, audit, settings, force_rebuild=force_rebuild)
    body = report.as_dict()
    if as_json:
        click.echo(json.dumps(body, default=str))
        return
    click.echo(
        f"report {body['report_id']}: {plural(body['tasks_compared'], 'task')} compared ({body['skipped_in_grace']} in the "
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
    from orchestration_pipeline.lib.projection.drift import recent_reports

    with connection(orchestration_dsn()) as orch:
        reports = recent_reports(orch, limit=limit)
    if as_json:
        for r in reports:
            click.echo(json.dumps(r, default=str))
        return
    if not reports:
        click.echo("no drift reports yet — run 'orchestration-pipeline projection reconcile'")
        return
    click.echo(_REPORT_ROW.format("report", "finished at", "drift", "action", "detail").rstrip())
    for r in reports:
        click.echo(
            _REPORT_ROW.format(
                r["report_id"],
                f"{r['finished_at']:%Y-%m-%d %H:%M:%S%z}",
                r["drift_count"],
                r["action"],
                r["action_detail"] or "",
            ).rstrip()
        )


# report id, finished at, drift count, action, action detail
_REPORT_ROW = "{:>6}  {:<24}  {:>6}  {:<8}  {}"


@projection.command("changes")
@click.option("--since", help="Only changes since (30m, 24h, 7d, or an ISO date/time). Default: 24h.")
@click.option(
    "--run", "run_id", help="Only the changes of this run (an id from the output or a drift report)."
)
@click.option("--task", "task_id", help="Only this task's changes.")
@click.option("--cause", type=click.Choice(("event", "repair", "rebuild")), help="Only this cause.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def projection_changes(
    since: str | None, run_id: str | None, task_id: str | None, cause: str | None, limit: int, as_json: bool
) -> None:
    """What the projector and the reconciliations changed, per task and field, and why.

    Each line: when, the cause (event: the projector folding task events; repair or rebuild: a
    reconciliation), the run, the task, the field, and its value before and after. Answers "what
    changed last night, and why" with --since 12h.
    """
    import uuid

    from orchestration_pipeline.lib.audit.ledger import parse_since
    from orchestration_pipeline.lib.db import connection
    from orchestration_pipeline.lib.projection.changes import list_changes

    if run_id is not None:
        try:
            uuid.UUID(run_id)
        except ValueError:
            raise click.BadParameter(f"{run_id!r} is not a run id (a UUID)", param_hint="--run") from None
    cutoff = parse_since(since or "24h") if not run_id or since else None
    with connection(orchestration_dsn()) as orch:
        rows, total = list_changes(
            orch, since=cutoff, run_id=run_id, task_id=task_id, cause=cause, limit=limit
        )
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, default=str))
        return
    if not rows:
        click.echo("no changes" + (f" since {since or '24h'}" if cutoff else ""))
        return
    for r in rows:
        click.echo(
            f"{r['changed_at']:%Y-%m-%d %H:%M:%S%z}  {r['cause']:<7}  run {r['run_id'][:8]}  {r['task_id']}  "
            f"{r['field']}: {json.dumps(r['before'])} -> {json.dumps(r['after'])}"
        )
    if total > len(rows):
        click.echo(f"showing {len(rows)} of {total}; narrow with --since, --run or --task, or raise --limit")
