"""Dagster layer: thin wrappers that wire lib/ into assets, checks, sensors and jobs."""
