"""``restore_settings``: where backups go, which binaries, and the limits of the restore checks.

Registered by the ``Definitions`` object below, so this domain brings its own resource along with
its asset, checks and schedule.
"""

from pathlib import Path

import dagster as dg

from orchestration_pipeline.lib.restore.checks import BACKUP_MAX_AGE_HOURS, RTO_TARGET_MINUTES
from orchestration_pipeline.settings import load_settings


class RestoreSettings(dg.ConfigurableResource):
    """Knobs of the restore drill and its checks; None keeps the default."""

    backup_dir: str | None = None  # default: $ORCH_HOME/backups
    pg_bin: str | None = None  # pg_dump/pg_restore directory; default: the embedded server's, or PATH
    restore_jobs: int = 2  # pg_restore --jobs
    keep_scratch: bool = False  # keep the scratch database after the drill (forensics)
    grace_minutes: int = 15  # projection_drift skips tasks changed this close to the backup
    health_timeout_s: float = 30.0
    # rto_within_target fails above this; backup_fresh warns when the last good backup is older
    rto_target_minutes: float = RTO_TARGET_MINUTES
    backup_max_age_hours: float = BACKUP_MAX_AGE_HOURS

    def backups_path(self) -> Path:
        return Path(self.backup_dir) if self.backup_dir else load_settings().orch_home / "backups"


defs = dg.Definitions(resources={"restore_settings": RestoreSettings()})
