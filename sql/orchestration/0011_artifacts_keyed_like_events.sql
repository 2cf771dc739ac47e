-- Artifacts are keyed like the events they come from: (event_id, occurred_at).
--
-- An event is stored once per (event_id, occurred_at), so two artifact_emit lines with one
-- event_id at two times are two events; artifacts were unique on event_id alone, and the second
-- one's row failed the whole file's transaction, on every rerun. The constraint keeps its name.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'artifacts'::regclass AND conname = 'artifacts_event_unique'
          AND array_length(conkey, 1) = 1
    ) THEN
        ALTER TABLE artifacts DROP CONSTRAINT artifacts_event_unique;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint WHERE conrelid = 'artifacts'::regclass AND conname = 'artifacts_event_unique'
    ) THEN
        ALTER TABLE artifacts ADD CONSTRAINT artifacts_event_unique UNIQUE (event_id, occurred_at);
    END IF;
END
$$;
