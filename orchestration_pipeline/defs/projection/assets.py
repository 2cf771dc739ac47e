"""``task_projection`` and ``projection_drift_report``: thin wrappers over lib.projection and lib.drift."""

from datetime import timedelta

import dagster as dg

from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.resources import OrchestrationDatabase, ProjectionSettings, TasksDatabase
from orchestration_pipeline.lib.projection.checks import DRIFT_REPORT_MAX_AGE_HOURS
from orchestration_pipeline.lib.projection.drift import (
    AuditContext,
    DriftReport,
    ReconcileSettings,
    reconcile,
)
from orchestration_pipeline.lib.projection.projector import project_events, projection_lag


@dg.asset(
    group_name="projection",
    kinds={"postgres"},
    deps=[raw_events],
    description="Read model of tasks (CQRS), folded from task events since the checkpoint, hydrated "
    "from the Tasks DB. Read-only outside the projector; rebuildable.",
)
def task_projection(
    context: dg.AssetExecutionContext,
    orchestration_db: OrchestrationDatabase,
    tasks_db: TasksDatabase,
    projection_settings: ProjectionSettings,
) -> dg.MaterializeResult:
    def progress(run) -> None:
        context.log.info(
            f"projected {run.events_applied:,} events in {run.batches} batches ({run.events_per_s:,.0f}/s)"
        )

    with orchestration_db.connection() as orch, tasks_db.connection() as tasks:
        run = project_events(orch, tasks, batch_events=projection_settings.batch_events, progress=progress)
        lag = projection_lag(orch)
    body = run.as_dict()
    metadata = {
        "events_applied": dg.MetadataValue.int(run.events_applied),
        "tasks_updated": dg.MetadataValue.int(run.tasks_updated),
        "batches": dg.MetadataValue.int(run.batches),
        "events_per_s": dg.MetadataValue.int(body["events_per_s"]),
        "lag_events": dg.MetadataValue.int(lag),
        "checkpoint": dg.MetadataValue.text(" / ".join(body["position"] or ["unchanged"])),
    }
    if run.latency.count:
        metadata["projection_sync_latency_avg_ms"] = dg.MetadataValue.float(body["sync_latency_avg_ms"])
        metadata["projection_sync_latency_p95_ms"] = dg.MetadataValue.float(body["sync_latency_p95_ms"])
    return dg.MaterializeResult(metadata=metadata)


def _samples_markdown(report: DriftReport) -> str:
    lines = ["| class | count | sample task ids |", "|---|---|---|"]
    for kind, count in report.comparison.counts.items():
        ids = ", ".join(f"`{s['task_id']}`" for s in report.comparison.samples[kind]) or "–"
        lines.append(f"| {kind} | {count} | {ids} |")
    return "\n".join(lines)


@dg.asset(
    group_name="projection",
    kinds={"postgres"},
    deps=[task_projection],
    description="Nightly reconciliation of task_projection against the authoritative Tasks DB: drift "
    "counts and samples per class, then a repair (small drift) or a rebuild (large drift).",
    # Dagster's own view (the UI's freshness state, from its materializations); the drift_report_fresh
    # check judges the reports in the database, whoever made them.
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=DRIFT_REPORT_MAX_AGE_HOURS)),
)
def projection_drift_report(
    context: dg.AssetExecutionContext,
    orchestration_db: OrchestrationDatabase,
    tasks_db: TasksDatabase,
    projection_settings: ProjectionSettings,
) -> dg.MaterializeResult:
    settings = ReconcileSettings(
        grace_minutes=projection_settings.grace_minutes,
        repair_max_rows=projection_settings.repair_max_rows,
        min_tasks_ratio=projection_settings.min_tasks_ratio,
    )
    audit = AuditContext(
        actor="automation:dagster", request_id=context.run.run_id, source=f"dagster.{context.job_name}"
    )
    with orchestration_db.connection() as orch, tasks_db.connection() as tasks:
        report = reconcile(orch, tasks, audit, settings)
    body = report.as_dict()
    context.log.info(f"drift {report.drift_count}: {report.action_detail}")
    return dg.MaterializeResult(
        metadata={
            "report_id": dg.MetadataValue.int(report.report_id),
            "projection_drift_count": dg.MetadataValue.int(report.drift_count),
            **{kind: dg.MetadataValue.int(count) for kind, count in report.comparison.counts.items()},
            "tasks_compared": dg.MetadataValue.int(body["tasks_compared"]),
            "skipped_in_grace": dg.MetadataValue.int(body["skipped_in_grace"]),
            "action": dg.MetadataValue.text(report.action),
            "action_detail": dg.MetadataValue.text(report.action_detail),
            "rows_changed": dg.MetadataValue.int(report.rows_changed),
            "samples": dg.MetadataValue.md(_samples_markdown(report)),
            "last_reconcile_ts": dg.MetadataValue.timestamp(report.finished_at),
            "compare_s": dg.MetadataValue.float(body["compare_s"]),
            "decision_event_id": dg.MetadataValue.text(report.decision_event_id),
        }
    )
