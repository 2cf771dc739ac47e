"""``audit_job``: verify the ledger and summarise decision executions."""

import dagster as dg

from orchestration_pipeline.defs.audit.assets import audit_ledger_integrity, decision_execution_summary

audit_job = dg.define_asset_job(
    "audit_job",
    selection=dg.AssetSelection.assets(audit_ledger_integrity, decision_execution_summary),
    description="Verify the audit ledger's chains and guard; summarise decision executions.",
)
