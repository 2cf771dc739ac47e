-- A line whose event_id and occurred_at are already stored, but whose content differs, is not a
-- duplicate: it is a second version of an event (a producer reusing ids, or an edited re-send).
-- The first version stays in `events`; the second is quarantined as 'conflicting_duplicate'
-- instead of being dropped as a duplicate.
ALTER TABLE quarantine DROP CONSTRAINT IF EXISTS quarantine_failure_type_check;
ALTER TABLE quarantine ADD CONSTRAINT quarantine_failure_type_check CHECK (failure_type IN (
    'malformed_json', 'invalid_utf8', 'not_an_object', 'missing_field', 'wrong_type',
    'invalid_value', 'unknown_event_type', 'payload_too_large', 'future_timestamp',
    'conflicting_duplicate'));
