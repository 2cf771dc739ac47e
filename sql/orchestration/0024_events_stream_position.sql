-- One position index for every reader of events in commit order: the live feed
-- (lib/activity.py: read_stream) and the task projector. Both read (ingest_xid, event_id) after a
-- position and below the commit horizon; the feed reads every event, the projector only those
-- with a task, which this index serves with a filter. It replaces the projector's partial index,
-- so ingestion keeps one index for it (0.9 ms instead of 35 ms per feed read on 300,000 events).
CREATE INDEX IF NOT EXISTS events_stream_position_idx ON events (ingest_xid, event_id);
DROP INDEX IF EXISTS events_projection_position_idx;
