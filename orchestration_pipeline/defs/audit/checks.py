"""Checks on the audit ledger and decision executions: thin calls into lib.audit and lib.executions."""

import dagster as dg

from orchestration_pipeline.defs.audit.assets import (
    audit_ledger_integrity,
    decision_execution_summary,
    recorded_anchor,
)
from orchestration_pipeline.defs.checks_support import pipeline_check, verdict_of
from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.lib.audit.chain import chain_verdict
from orchestration_pipeline.lib.audit.guard import guard_verdict
from orchestration_pipeline.lib.executions.rescue import stale_claims_verdict


@pipeline_check(audit_ledger_integrity, "audit.md", blocking=True)
def audit_chain_intact(
    context: dg.AssetCheckExecutionContext, orchestration_db: OrchestrationDatabase
) -> dg.AssetCheckResult:
    """Every hash chain recomputes from its first entry, every checkpoint from the entries it sealed, and the checkpoint chain still holds the anchor recorded at the previous materialization (ERROR)."""
    anchor = recorded_anchor(context.instance, audit_ledger_integrity.key, not_from_run=context.run.run_id)
    return verdict_of(orchestration_db, chain_verdict, expect_head=anchor)


@pipeline_check(audit_ledger_integrity, "audit.md", blocking=True)
def audit_guard_present(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """Append-only triggers enabled; ledger owned by orch_audit_owner; the writer role may only SELECT and insert entry content; trigger functions pinned to pg_catalog."""
    return verdict_of(orchestration_db, guard_verdict)


@pipeline_check(decision_execution_summary, "audit.md", severity="WARN")
def no_stale_pending_executions(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """No live execution is still pending after its lease (WARN): run 'orchestration-pipeline decisions rescue'."""
    return verdict_of(orchestration_db, stale_claims_verdict)
