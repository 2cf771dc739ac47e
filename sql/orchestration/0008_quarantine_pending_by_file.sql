-- Pending quarantine rows by source path: when a file that was still being written is ingested
-- again in full, the partial last line quarantined from its earlier version is resolved (see
-- lib/ingest.py: superseded partial lines).
CREATE INDEX IF NOT EXISTS quarantine_pending_path_idx ON quarantine (source_file) WHERE replayed_at IS NULL;
