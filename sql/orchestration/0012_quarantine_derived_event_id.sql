-- The event_id a quarantined line without one was given, derived from its original content.
--
-- The stored raw_line is redacted, so an id derived from it at replay would differ from the one
-- an accepted copy of the original line got: the replay would store the event a second time.
-- NULL for a line that carries its own event_id, or that never parsed as a JSON object.
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS derived_event_id uuid;
