"""Why a line is quarantined: the values of ``quarantine.failure_type`` (its CHECK constraint in
sql/orchestration/0007_conflicting_duplicates.sql lists the same). A module of its own so that the
CLI can offer them as choices without importing the parser."""

FAILURE_TYPES = (
    "malformed_json",
    "invalid_utf8",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "unknown_event_type",
    "payload_too_large",
    "future_timestamp",
    "conflicting_duplicate",  # found when writing: an event_id and occurred_at stored with other content
    "duplicate_key",  # one key written twice in an object (parsers would keep the last, silently)
)
