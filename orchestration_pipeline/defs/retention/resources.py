"""``retention_settings``: the retention windows and the archive location, for the Dagster layer.

Every field left unset falls back to the pipeline's settings (``load_settings``):
ORCH_RETENTION_HOT_DAYS, ORCH_RETENTION_ARCHIVE_DAYS, ORCH_RETENTION_PURGE, and archives under
``$ORCH_HOME/archive``. The resource is registered by the ``Definitions`` object below, so this
domain brings its own resource along with its assets.
"""

import dagster as dg

from orchestration_pipeline.lib.retention.run import RetentionPolicy
from orchestration_pipeline.settings import load_settings


class RetentionSettings(dg.ConfigurableResource):
    """Overrides of the retention settings; None keeps the ORCH_RETENTION_* value."""

    archive_uri: str | None = None  # a directory or any URI pyarrow accepts (s3://bucket/prefix)
    hot_days: int | None = None
    archive_days: int | None = None
    purge: bool | None = None
    # retention_sensor requests at most this many day runs per evaluation (a long backlog drains gradually)
    sensor_max_days: int = 7

    def policy(self) -> RetentionPolicy:
        base = RetentionPolicy.from_settings(load_settings(), archive_root=self.archive_uri)
        return RetentionPolicy(
            archive_root=base.archive_root,
            hot_days=self.hot_days if self.hot_days is not None else base.hot_days,
            archive_days=self.archive_days if self.archive_days is not None else base.archive_days,
            purge=self.purge if self.purge is not None else base.purge,
        )


defs = dg.Definitions(resources={"retention_settings": RetentionSettings()})
