"""Retention: the daily Parquet archives of events and metrics, their verification and the purge."""
