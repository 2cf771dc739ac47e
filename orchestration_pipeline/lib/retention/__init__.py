"""Retention: daily partitions, verified Parquet archives, and purges only after verification."""
