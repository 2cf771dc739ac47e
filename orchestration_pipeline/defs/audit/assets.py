"""``audit_ledger_integrity`` and ``decision_execution_summary``: thin calls into lib.audit and lib.executions."""

import dagster as dg

from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.defs.schema.assets import orchestration_schema
from orchestration_pipeline.lib.audit import ledger_summary
from orchestration_pipeline.lib.executions import execution_summary


@dg.asset(
    group_name="audit",
    kinds={"postgres"},
    deps=[orchestration_schema],
    description=(
        "The append-only audit ledger's chains: entries, chains and a digest of every chain head, "
        "recorded in Dagster's own storage as an outside anchor. Its checks recompute the chains "
        "and verify the immutability guard."
    ),
)
def audit_ledger_integrity(orchestration_db: OrchestrationDatabase) -> dg.MaterializeResult:
    with orchestration_db.connection() as conn:
        summary = ledger_summary(conn)
    last = summary["last_entry_at"]
    return dg.MaterializeResult(
        metadata={
            "entries": dg.MetadataValue.int(summary["entries"]),
            "chains": dg.MetadataValue.int(summary["chains"]),
            "last_entry_at": dg.MetadataValue.text(last.isoformat() if last else "none"),
            "heads_digest": dg.MetadataValue.text(summary["heads_digest"]),
        }
    )


@dg.asset(
    group_name="audit",
    kinds={"postgres"},
    deps=[orchestration_schema],
    description=(
        "Policies: total, enabled, dry_run_on (enabled, simulating) and live_on (enabled, performing "
        "effects); decision executions: last_execution_at, succeeded, failed, duplicate-skipped, "
        "simulated and pending."
    ),
)
def decision_execution_summary(orchestration_db: OrchestrationDatabase) -> dg.MaterializeResult:
    with orchestration_db.connection() as conn:
        summary = execution_summary(conn)
    return dg.MaterializeResult(
        metadata={
            "total": dg.MetadataValue.int(summary["total"]),
            "enabled": dg.MetadataValue.int(summary["enabled"]),
            "dry_run_on": dg.MetadataValue.int(summary["dry_run_on"]),
            "live_on": dg.MetadataValue.int(summary["live_on"]),
            "last_execution_at": dg.MetadataValue.text(summary["last_execution_at"] or "never"),
            "succeeded": dg.MetadataValue.int(summary["succeeded"]),
            "failed": dg.MetadataValue.int(summary["failed"]),
            "duplicate_skipped": dg.MetadataValue.int(summary["duplicate_skipped"]),
            "simulated": dg.MetadataValue.int(summary["simulated"]),
            "pending": dg.MetadataValue.int(summary["pending"]),
            "stale_pending": dg.MetadataValue.int(summary["stale_pending"]),
        }
    )
