"""``schema_migrations_current``: nothing pending and no applied file changed."""

import dagster as dg

from orchestration_pipeline.defs.checks_support import pipeline_check
from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.defs.schema.assets import orchestration_schema
from orchestration_pipeline.lib.db import migration_status
from orchestration_pipeline.lib.wording import plural


@pipeline_check(orchestration_schema, "schema.md", blocking=True)
def schema_migrations_current(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """No pending migrations and no checksum drift."""
    with orchestration_db.connection() as conn:
        status = migration_status(conn, "orchestration")
    pending = [m.filename for m in status.pending]
    drifted = [m.filename for m in status.drifted]
    if status.current:
        description = f"{plural(len(status.applied), 'migration')} applied, none pending"
    else:
        description = f"{len(pending)} pending, {len(drifted)} changed since applied — run 'orchestration-pipeline db migrate'"
    return dg.AssetCheckResult(
        passed=status.current,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "pending": dg.MetadataValue.json(pending[:10]),
            "checksum_drift": dg.MetadataValue.json(drifted[:10]),
            "applied_count": dg.MetadataValue.int(len(status.applied)),
        },
    )
