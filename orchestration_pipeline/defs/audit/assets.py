"""``audit_ledger_integrity`` and ``decision_execution_summary``: thin calls into lib.audit and lib.executions."""

import dagster as dg

from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.defs.schema.assets import orchestration_schema
from orchestration_pipeline.errors import AuditError
from orchestration_pipeline.lib.audit.chain import (
    CheckpointHead,
    checkpoint_ledger,
    head_break,
    ledger_summary,
    parse_head,
)
from orchestration_pipeline.lib.executions.history import execution_summary


def recorded_anchor(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, *, not_from_run: str | None = None
) -> CheckpointHead | None:
    """The checkpoint that the newest materialization of ``asset_key`` (from a run other than
    ``not_from_run``) kept as the outside anchor; None before the first checkpoint.

    Its ``anchor`` metadata (``SEQ:HASH``); a materialization recorded before that key existed
    gives ``checkpoints`` (the newest checkpoint's number) and ``last_checkpoint_hash``.
    """
    for record in instance.fetch_materializations(asset_key, limit=2).records:
        if record.run_id == not_from_run:
            continue
        metadata = record.asset_materialization.metadata
        anchor = metadata.get("anchor")
        if anchor is not None:
            text = anchor.value
        else:
            digest, count = metadata.get("last_checkpoint_hash"), metadata.get("checkpoints")
            text = digest.value if digest is not None else "none"
            if count is not None and text != "none":
                text = f"{count.value}:{text}"
        if text == "none":
            return None
        try:
            return parse_head(text)
        except AuditError as exc:
            raise AuditError(
                f"the anchor that run {record.run_id or '(reported)'} recorded for {asset_key.to_user_string()} "
                f"is unreadable: {exc}"
            ) from None
    return None


@dg.asset(
    group_name="audit",
    kinds={"postgres"},
    deps=[orchestration_schema],
    description=(
        "The append-only audit ledger, sealed: each materialization checkpoints every entry written "
        "since the last one, and records the newest checkpoint (`anchor`, SEQ:HASH) in Dagster's own "
        "storage as an outside anchor; while the checkpoint chain no longer holds the previous anchor, "
        "that one is kept instead. Its checks recompute every chain and checkpoint, compare the chain "
        "with the previous anchor and verify the immutability guard."
    ),
)
def audit_ledger_integrity(
    context: dg.AssetExecutionContext, orchestration_db: OrchestrationDatabase
) -> dg.MaterializeResult:
    previous = recorded_anchor(context.instance, context.asset_key, not_from_run=context.run.run_id)
    with orchestration_db.connection() as conn:
        lost = head_break(conn, previous) if previous is not None else None
        run = checkpoint_ledger(
            conn, progress=lambda n, entries: context.log.info(f"checkpoint {n}: {entries} entries sealed")
        )
        summary = ledger_summary(conn)
    if run.busy:
        context.log.warning(
            f"audit checkpoint stopped early ({run.busy}); the next materialization seals the rest"
        )
    digest = summary["last_checkpoint_hash"]
    newest = CheckpointHead(summary["last_checkpoint_seq"], digest) if digest else None
    if lost is not None:
        # A rewritten ledger must not become its own anchor: keep the one it broke, so that
        # audit_chain_intact keeps failing until the chain holds it again (or it is replaced).
        context.log.error(
            f"{lost.describe()}; anchor {previous} kept — follow docs/runbooks/audit.md#audit_chain_intact"
        )
    anchor = previous if lost is not None else newest
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
            "anchor": dg.MetadataValue.text(str(anchor) if anchor else "none"),
            "anchor_held": dg.MetadataValue.bool(lost is None),
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
