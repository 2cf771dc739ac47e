"""``restore_drill_job``, run weekly by ``weekly_restore_drill``."""

import dagster as dg

from orchestration_pipeline.defs.restore.assets import restore_drill

restore_drill_job = dg.define_asset_job(
    "restore_drill_job",
    selection=dg.AssetSelection.assets(restore_drill),
    description="Back up the orchestration DB, restore the backup into a scratch database and verify it.",
)

weekly_restore_drill = dg.ScheduleDefinition(
    name="weekly_restore_drill",
    job=restore_drill_job,
    cron_schedule="15 4 * * 0",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Prove the backups restore: a full drill every Sunday at 04:15 UTC.",
)
