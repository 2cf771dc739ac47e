-- Outside the agent.* events, status and severity are the producer's own word (ok, SUCCESS,
-- failure, upstream_failed, ...), stored as given after trimming: 1 to 64 characters. The parser
-- enforces that and keeps the enums of the agent.* events; the database keeps the length bound.
-- What a word means is looked up in the synonym map (lib/ingestion/status_words.py) when needed.
-- Every stored row satisfies the new constraints: the old ones allowed only short enum words.
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_severity_check;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_status_check;
ALTER TABLE events ADD CONSTRAINT events_severity_check
    CHECK (severity IS NULL OR char_length(severity) BETWEEN 1 AND 64);
ALTER TABLE events ADD CONSTRAINT events_status_check
    CHECK (status IS NULL OR char_length(status) BETWEEN 1 AND 64);
