"""Alerting: sensors that tell once when an asset check fails, an asset goes stale or a run fails."""
