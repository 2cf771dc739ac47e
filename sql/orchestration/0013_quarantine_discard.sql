-- Discarded quarantine rows: lines that will never be fixed and replayed (a README ingested by
-- mistake, a producer's test file). Like a replayed row, a discarded row is kept, with when, by
-- whom and why, and is no longer pending: list, counts and replay leave it out. The file's
-- ingest_files entry still counts it as quarantined, so every file still balances.
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS discarded_at timestamptz;
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS discarded_by text;
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS discard_reason text;

-- A discarded row always says who discarded it and why.
ALTER TABLE quarantine DROP CONSTRAINT IF EXISTS quarantine_discard_named;
ALTER TABLE quarantine ADD CONSTRAINT quarantine_discard_named CHECK (
    discarded_at IS NULL
    OR (nullif(btrim(discarded_by), '') IS NOT NULL AND nullif(btrim(discard_reason), '') IS NOT NULL));

-- Pending now means neither replayed nor discarded; this index replaces 0002's for listing,
-- counting and replaying pending rows by failure type.
CREATE INDEX IF NOT EXISTS quarantine_open_idx
    ON quarantine (failure_type, quarantine_id) WHERE replayed_at IS NULL AND discarded_at IS NULL;
DROP INDEX IF EXISTS quarantine_pending_idx;
