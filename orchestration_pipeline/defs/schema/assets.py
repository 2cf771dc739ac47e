"""The ``orchestration_schema`` asset: applies pending migrations of the orchestration DB."""

import dagster as dg

from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.lib.db import migrate, migration_status, timescaledb_available


@dg.asset(
    group_name="schema",
    kinds={"postgres"},
    description="Forward-only migrations of the orchestration DB (sql/orchestration). Materializing applies pending files.",
)
def orchestration_schema(
    context: dg.AssetExecutionContext, orchestration_db: OrchestrationDatabase
) -> dg.MaterializeResult:
    with orchestration_db.connection() as conn:
        applied_now = migrate(conn, "orchestration")
        status = migration_status(conn, "orchestration")
        timescale = timescaledb_available(conn)
    for mig in applied_now:
        context.log.info(f"applied {mig.filename}")
    versions = [f"{a.version:04d}_{a.name}" for a in status.applied]
    return dg.MaterializeResult(
        metadata={
            "applied_versions": dg.MetadataValue.json(versions),
            "applied_this_run": dg.MetadataValue.json([m.filename for m in applied_now]),
            "latest_version": dg.MetadataValue.int(max((a.version for a in status.applied), default=0)),
            "timescaledb_available": dg.MetadataValue.bool(timescale),
        }
    )
