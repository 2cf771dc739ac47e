"""Checks on the audit ledger and decision executions: thin calls into lib.audit and lib.executions."""

import dagster as dg

from orchestration_pipeline.defs.audit.assets import audit_ledger_integrity, decision_execution_summary
from orchestration_pipeline.defs.checks_support import check_metadata, to_check_result
from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.lib.audit.chain import chain_verdict
from orchestration_pipeline.lib.audit.guard import guard_verdict
from orchestration_pipeline.lib.executions.rescue import stale_claims_verdict


@dg.asset_check(
    asset=audit_ledger_integrity,
    blocking=True,
    description="Every hash chain recomputes from its first entry, and every checkpoint from the entries it sealed (ERROR).",
    metadata=check_metadata("ERROR", "docs/runbooks/audit.md#audit_chain_intact"),
)
def audit_chain_intact(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    with orchestration_db.connection() as conn:
        return to_check_result(chain_verdict(conn))


@dg.asset_check(
    asset=audit_ledger_integrity,
    blocking=True,
    description="Append-only triggers enabled; ledger owned by orch_audit_owner; the writer role may only SELECT and insert entry content; trigger functions pinned to pg_catalog.",
    metadata=check_metadata("ERROR", "docs/runbooks/audit.md#audit_guard_present"),
)
def audit_guard_present(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    with orchestration_db.connection() as conn:
        return to_check_result(guard_verdict(conn))


@dg.asset_check(
    asset=decision_execution_summary,
    description="No live execution is still pending after its lease (WARN): run 'orchestration-pipeline decisions rescue'.",
    metadata=check_metadata("WARN", "docs/runbooks/audit.md#no_stale_pending_executions"),
)
def no_stale_pending_executions(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    with orchestration_db.connection() as conn:
        return to_check_result(stale_claims_verdict(conn))
