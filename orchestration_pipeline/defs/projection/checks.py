"""Asset checks on the task projection and its drift report: thin calls into lib.projection_checks."""

import dagster as dg

from orchestration_pipeline.defs.checks_support import check_metadata, to_check_result
from orchestration_pipeline.defs.projection.assets import projection_drift_report, task_projection
from orchestration_pipeline.defs.resources import OrchestrationDatabase, ProjectionSettings, TasksDatabase
from orchestration_pipeline.lib.projection import checks as projection_checks


@dg.asset_check(
    asset=projection_drift_report,
    blocking=True,
    description="A fresh comparison after the repair finds zero drift against the Tasks DB.",
    metadata=check_metadata("ERROR", "docs/runbooks/reconciliation.md#zero_drift_after_reconcile"),
)
def zero_drift_after_reconcile(
    orchestration_db: OrchestrationDatabase, tasks_db: TasksDatabase, projection_settings: ProjectionSettings
) -> dg.AssetCheckResult:
    with orchestration_db.connection() as orch, tasks_db.connection() as tasks:
        verdict = projection_checks.zero_drift_after_reconcile(
            orch, tasks, grace_minutes=projection_settings.grace_minutes
        )
    return to_check_result(verdict)


@dg.asset_check(
    asset=projection_drift_report,
    description="Drift is not found in two consecutive reconciliations.",
    metadata=check_metadata("ERROR", "docs/runbooks/reconciliation.md#drift_not_persistent"),
)
def drift_not_persistent(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    with orchestration_db.connection() as orch:
        return to_check_result(projection_checks.drift_not_persistent(orch))


@dg.asset_check(
    asset=task_projection,
    description="Every projection column exists with its type; guard enabled.",
    metadata=check_metadata("ERROR", "docs/runbooks/reconciliation.md#projection_columns_present"),
)
def projection_columns_present(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    with orchestration_db.connection() as orch:
        return to_check_result(projection_checks.projection_columns_present(orch))


@dg.asset_check(
    asset=task_projection,
    description="p95 of received_at → projection update stays under the limit (WARN).",
    metadata=check_metadata("WARN", "docs/runbooks/reconciliation.md#projection_sync_latency"),
)
def projection_sync_latency(
    orchestration_db: OrchestrationDatabase, projection_settings: ProjectionSettings
) -> dg.AssetCheckResult:
    with orchestration_db.connection() as orch:
        verdict = projection_checks.projection_sync_latency(
            orch, p95_warn_ms=projection_settings.sync_latency_p95_warn_ms
        )
    return to_check_result(verdict)
