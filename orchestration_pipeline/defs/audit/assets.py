"""``audit_ledger_integrity`` and ``decision_execution_summary``: thin calls into lib.audit and lib.executions."""

import dagster as dg

from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.defs.schema.assets import orchestration_schema
from orchestration_pipeline.lib.audit.chain import checkpoint_ledger, ledger_summary
from orchestration_pipeline.lib.executions.history import execution_summary


@dg.asset(
    group_name="audit",
    kinds={"postgres"},
    deps=[orchestration_schema],
    description=(
        "The append-only audit ledger, sealed: each materialization checkpoints every entry written "
        "since the last one, and records the newest checkpoint hash in Dagster's own storage as an "
        "outside anchor. Its checks recompute every chain and checkpoint and verify the immutability guard."
    ),
)
def audit_ledger_integrity(
    context: dg.AssetExecutionContext, orchestration_db: OrchestrationDatabase
) -> dg.MaterializeResult:
    with orchestration_db.connection() as conn:
        run = checkpoint_ledger(
            conn, progress=lambda n, entries: context.log.info(f"checkpoint {n}: {entries} entries sealed")
        )
        summary = ledger_summary(conn)
    if run.busy:
        context.log.warning(
            f"audit checkpoint stopped early ({run.busy}); the next materialization seals the rest"
        )
    last = summary["last_entry_at"]
    return dg.MaterializeResult(
        metadata={
            "entries": dg.MetadataValue.int(summary["entries"]),
            "sealed_entries": dg.MetadataValue.int(summary["sealed_entries"]),
            "unsealed_entries": dg.MetadataValue.int(summary["unsealed_entries"]),
            "sealed_now": dg.MetadataValue.int(run.entries),
            "checkpoints": dg.MetadataValue.int(summary["checkpoints"]),
            "checkpoint_busy": dg.MetadataValue.bool(run.busy is not None),
            "last_checkpoint_hash": dg.MetadataValue.text(summary["last_checkpoint_hash"] or "none"),
            "last_entry_at": dg.MetadataValue.text(last.isoformat() if last else "none"),
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
