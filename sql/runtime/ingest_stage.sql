-- Session-local staging table for one batch of parsed events (not a migration: created per
-- connection by the ingester). Unindexed and unlogged, so COPY into it is cheap; rows move to
-- `events` with INSERT ... ON CONFLICT DO NOTHING, which is how duplicates are counted.
CREATE TEMP TABLE IF NOT EXISTS ingest_stage (
    event_id          uuid        NOT NULL,
    event_type        text        NOT NULL,
    occurred_at       timestamptz NOT NULL,
    session_id        text,
    task_id           text,
    source            text,
    stage             text,
    severity          text,
    status            text,
    duration_ms       bigint,
    payload           jsonb       NOT NULL,
    source_file       text,
    source_line       integer,
    fingerprint       text,
    message_template  text
) ON COMMIT DELETE ROWS;
