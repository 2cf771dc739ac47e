-- Pending quarantine rows by source path and line: when a file that grew is ingested again, each
-- batch looks up its own lines among the rows earlier versions left pending (lib/ingest.py:
-- lines quarantined before), instead of scanning every pending row of the path once per batch,
-- which made re-reading a file with many bad lines quadratic. Its leading column serves the
-- superseded-partial-line lookup by path as well, so it replaces the index of 0008.
CREATE INDEX IF NOT EXISTS quarantine_pending_line_idx
    ON quarantine (source_file, source_line) WHERE replayed_at IS NULL;
DROP INDEX IF EXISTS quarantine_pending_path_idx;
