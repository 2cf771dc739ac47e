"""Ingestion: the event envelope, parsing, reading files, writing batches exactly once, quarantine."""
