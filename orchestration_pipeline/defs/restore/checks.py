"""Asset checks on the restore drill: thin calls into lib.restore.checks."""

import dagster as dg

from orchestration_pipeline.defs.checks_support import pipeline_check, verdict_of
from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.defs.restore.assets import restore_drill
from orchestration_pipeline.defs.restore.resources import RestoreSettings
from orchestration_pipeline.lib.restore import checks as restore_checks


@pipeline_check(restore_drill, "restore.md")
def restore_drill_passed(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """The latest drill restored its backup into a scratch database and passed every blocking check."""
    return verdict_of(orchestration_db, restore_checks.restore_drill_passed)


@pipeline_check(restore_drill, "restore.md")
def rto_within_target(
    orchestration_db: OrchestrationDatabase, restore_settings: RestoreSettings
) -> dg.AssetCheckResult:
    """The latest measured RTO (restore start until the copy is queryable and verified) is within the
    target (60 minutes by default); the metadata gives the ratio to the target."""
    return verdict_of(
        orchestration_db, restore_checks.rto_within_target, target_minutes=restore_settings.rto_target_minutes
    )


@pipeline_check(restore_drill, "restore.md", severity="WARN")
def backup_fresh(
    orchestration_db: OrchestrationDatabase, restore_settings: RestoreSettings
) -> dg.AssetCheckResult:
    """The newest backup shown to restore by a passed drill is younger than the configured age
    (8 days by default: the weekly drill plus a day)."""
    return verdict_of(
        orchestration_db, restore_checks.backup_fresh, max_age_hours=restore_settings.backup_max_age_hours
    )
