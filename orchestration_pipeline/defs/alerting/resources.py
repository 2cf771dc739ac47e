"""``alert_settings``: where alerts go and how severe they must be, for the alerting sensors.

Fields left unset fall back to the pipeline's settings (``load_settings``), read when a sensor
ticks, not at import: ORCH_ALERT_WEBHOOK_URL and ORCH_ALERT_MIN_SEVERITY. The resource is
registered by the ``Definitions`` object below, so this domain brings its own resource along.
"""

import dagster as dg

from orchestration_pipeline.lib.alerting.delivery import WebhookConfig
from orchestration_pipeline.lib.alerting.model import parse_threshold
from orchestration_pipeline.settings import load_settings


class AlertSettings(dg.ConfigurableResource):
    """Overrides of the alerting settings; None keeps the ORCH_ALERT_* value."""

    webhook_url: str | None = None  # "" turns the webhook off whatever ORCH_ALERT_WEBHOOK_URL says
    min_severity: str | None = None  # WARN or ERROR
    ui_url: str | None = None  # the Dagster UI's base URL (http://host:3000): absolute links in messages
    webhook_attempts: int = 4
    webhook_backoff_s: float = 0.5
    webhook_backoff_max_s: float = 8.0
    webhook_timeout_s: float = 5.0
    # a tick's delivery stops here (the sensor's own timeout is 60 s); what is left goes next tick
    delivery_deadline_s: float = 40.0
    # Dagster events read per tick; a longer backlog drains over the next ticks
    batch_size: int = 500
    # a sensor without a cursor (first start) reads this far back, not the whole event log
    initial_lookback_hours: float = 24.0

    def threshold(self) -> str:
        return parse_threshold(self.min_severity or load_settings().alert_min_severity)

    def webhook(self) -> WebhookConfig | None:
        url = load_settings().alert_webhook_url if self.webhook_url is None else self.webhook_url
        if not url:
            return None
        return WebhookConfig(
            url=url,
            attempts=self.webhook_attempts,
            backoff_s=self.webhook_backoff_s,
            backoff_max_s=self.webhook_backoff_max_s,
            timeout_s=self.webhook_timeout_s,
        )


defs = dg.Definitions(resources={"alert_settings": AlertSettings()})
