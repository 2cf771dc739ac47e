"""Alerting: streaks, sinks, the sensors against a real Dagster instance, and the CLI."""
