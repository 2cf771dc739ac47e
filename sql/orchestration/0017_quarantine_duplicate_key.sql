-- A line that writes one key twice in an object ({"event_type": "decision", ..., "event_type":
-- "task_start"}) is quarantined as 'duplicate_key' instead of being stored with the last value,
-- which JSON parsers keep silently.
ALTER TABLE quarantine DROP CONSTRAINT IF EXISTS quarantine_failure_type_check;
ALTER TABLE quarantine ADD CONSTRAINT quarantine_failure_type_check CHECK (failure_type IN (
    'malformed_json', 'invalid_utf8', 'not_an_object', 'missing_field', 'wrong_type',
    'invalid_value', 'unknown_event_type', 'payload_too_large', 'future_timestamp',
    'conflicting_duplicate', 'duplicate_key'));
