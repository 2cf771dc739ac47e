"""Asset checks on the archives and the purge: thin calls into lib.retention.checks."""

from datetime import date

import dagster as dg

from orchestration_pipeline.defs.checks_support import pipeline_check, to_check_result, verdict_of
from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.defs.retention.assets import event_archives, event_purge
from orchestration_pipeline.defs.retention.resources import RetentionSettings
from orchestration_pipeline.lib.retention import checks as retention_checks
from orchestration_pipeline.lib.retention.run import today_utc


@pipeline_check(event_archives, "retention.md", blocking=True)
def archive_verified(
    context: dg.AssetCheckExecutionContext,
    orchestration_db: OrchestrationDatabase,
    retention_settings: RetentionSettings,
) -> dg.AssetCheckResult:
    """The archives of the run's day are verified and no due day's archive is unverified or failed;
    blocking: a failure stops event_purge in the same run."""
    days = [date.fromisoformat(context.partition_key)] if context.has_partition_key else []
    due_before = retention_settings.policy().due_before(today_utc())
    return verdict_of(orchestration_db, retention_checks.archive_verified, due_before=due_before, days=days)


@pipeline_check(event_purge, "retention.md")
def nothing_purged_unarchived(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """Every daily partition that is gone was purged after a verified archive, and every purged
    archive's file is still there."""
    with orchestration_db.connection() as conn:
        verdict = retention_checks.nothing_purged_unarchived(conn)
    return to_check_result(verdict)


@pipeline_check(event_archives, "retention.md", severity="WARN")
def retention_policy_active(
    orchestration_db: OrchestrationDatabase, retention_settings: RetentionSettings
) -> dg.AssetCheckResult:
    """No day past the archive window is left unarchived (nor verified and unpurged with the purge
    on), and no TimescaleDB retention policy drops chunks behind the archive's back."""
    policy = retention_settings.policy()
    return verdict_of(
        orchestration_db,
        retention_checks.retention_policy_active,
        due_before=policy.due_before(today_utc()),
        purge_enabled=policy.purge,
    )


@pipeline_check(event_archives, "retention.md", severity="WARN")
def default_partition_empty(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """No row of events or metrics sits in the default partition (outside every daily partition)."""
    return verdict_of(orchestration_db, retention_checks.default_partition_empty)
