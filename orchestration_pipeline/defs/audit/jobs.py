"""``audit_job``: seal and verify the ledger and summarise decision executions; run every hour."""

import dagster as dg

from orchestration_pipeline.defs.audit.assets import audit_ledger_integrity, decision_execution_summary

audit_job = dg.define_asset_job(
    "audit_job",
    selection=dg.AssetSelection.assets(audit_ledger_integrity, decision_execution_summary),
    description="Checkpoint and verify the audit ledger's chains and guard; summarise decision executions.",
)

hourly_audit = dg.ScheduleDefinition(
    name="hourly_audit",
    job=audit_job,
    cron_schedule="7 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Every hour: seal the audit entries written since the last checkpoint (so an entry is unsealed "
        "for at most about an hour), then recompute every chain and checkpoint."
    ),
)
