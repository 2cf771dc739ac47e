"""Domain logic. Nothing in this package imports Dagster."""
