"""Asset checks on the task projection and its drift report: thin calls into lib.projection_checks."""

import dagster as dg

from orchestration_pipeline.defs.checks_support import pipeline_check, to_check_result, verdict_of
from orchestration_pipeline.defs.projection.assets import projection_drift_report, task_projection
from orchestration_pipeline.defs.resources import OrchestrationDatabase, ProjectionSettings, TasksDatabase
from orchestration_pipeline.lib.projection import checks as projection_checks


@pipeline_check(projection_drift_report, "reconciliation.md", blocking=True)
def zero_drift_after_reconcile(
    orchestration_db: OrchestrationDatabase, tasks_db: TasksDatabase, projection_settings: ProjectionSettings
) -> dg.AssetCheckResult:
    """A fresh comparison after the repair finds zero drift against the Tasks DB."""
    with orchestration_db.connection() as orch, tasks_db.connection() as tasks:
        verdict = projection_checks.zero_drift_after_reconcile(
            orch, tasks, grace_minutes=projection_settings.grace_minutes
        )
    return to_check_result(verdict)


@pipeline_check(projection_drift_report, "reconciliation.md")
def drift_not_persistent(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """Drift is not found in two consecutive reconciliations."""
    return verdict_of(orchestration_db, projection_checks.drift_not_persistent)


@pipeline_check(task_projection, "reconciliation.md")
def projection_columns_present(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """Every projection column exists with its type; guard enabled."""
    return verdict_of(orchestration_db, projection_checks.projection_columns_present)


@pipeline_check(task_projection, "reconciliation.md", severity="WARN")
def projection_sync_latency(
    orchestration_db: OrchestrationDatabase, projection_settings: ProjectionSettings
) -> dg.AssetCheckResult:
    """p95 of received_at → projection update stays under the limit (WARN)."""
    return verdict_of(
        orchestration_db,
        projection_checks.projection_sync_latency,
        p95_warn_ms=projection_settings.sync_latency_p95_warn_ms,
    )


@pipeline_check(task_projection, "reconciliation.md")
def projection_caught_up(
    orchestration_db: OrchestrationDatabase, projection_settings: ProjectionSettings
) -> dg.AssetCheckResult:
    """No task event ingested longer ago than the limit still waits for the projector."""
    return verdict_of(
        orchestration_db,
        projection_checks.projection_caught_up,
        max_age_minutes=projection_settings.unprojected_max_age_minutes,
    )
