"""``drift_report_fresh`` and ``audit_checkpoint_fresh``, and ``freshness_job``, which evaluates
them (with ``projection_caught_up``) every half hour on their own.

A check attached to an asset also runs after each of its materializations, when it is fresh by
construction; what catches a schedule that stopped is the half-hourly evaluation, which
materializes nothing. Both read their timestamps from the database (``drift_reports.finished_at``,
``audit_ledger.occurred_at``), so a reconciliation or checkpoint made from the CLI counts too.
"""

import dagster as dg

from orchestration_pipeline.defs.audit.assets import audit_ledger_integrity
from orchestration_pipeline.defs.checks_support import pipeline_check, verdict_of
from orchestration_pipeline.defs.projection.assets import projection_drift_report
from orchestration_pipeline.defs.projection.checks import projection_caught_up
from orchestration_pipeline.defs.resources import OrchestrationDatabase, ProjectionSettings
from orchestration_pipeline.lib.audit.freshness import CHECKPOINT_MAX_AGE_HOURS, checkpoint_fresh
from orchestration_pipeline.lib.projection import checks as projection_checks


class AuditFreshnessConfig(dg.Config):
    """How long an audit entry may wait for the checkpoint that seals it."""

    max_unsealed_hours: float = CHECKPOINT_MAX_AGE_HOURS


@pipeline_check(projection_drift_report, "reconciliation.md")
def drift_report_fresh(
    orchestration_db: OrchestrationDatabase, projection_settings: ProjectionSettings
) -> dg.AssetCheckResult:
    """The newest drift report is at most drift_report_max_age_hours (26) old."""
    return verdict_of(
        orchestration_db,
        projection_checks.drift_report_fresh,
        max_age_hours=projection_settings.drift_report_max_age_hours,
    )


@pipeline_check(audit_ledger_integrity, "audit.md")
def audit_checkpoint_fresh(
    config: AuditFreshnessConfig, orchestration_db: OrchestrationDatabase
) -> dg.AssetCheckResult:
    """No audit entry has waited more than max_unsealed_hours (2) for its checkpoint."""
    return verdict_of(orchestration_db, checkpoint_fresh, max_age_hours=config.max_unsealed_hours)


freshness_job = dg.define_asset_job(
    "freshness_job",
    selection=dg.AssetSelection.checks(drift_report_fresh, audit_checkpoint_fresh, projection_caught_up),
    description="Evaluate the freshness checks alone: drift report age, audit sealing, projection lag.",
)

half_hourly_freshness = dg.ScheduleDefinition(
    name="half_hourly_freshness",
    job=freshness_job,
    cron_schedule="17,47 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Every half hour: fail drift_report_fresh, audit_checkpoint_fresh or projection_caught_up when "
        "the nightly reconciliation, the hourly checkpoint or the projector has stopped keeping up."
    ),
)
