-- Session-local staging table for one batch of error events (not a migration: created per
-- connection by the ingester). Unindexed and temporary, so COPY into it is cheap; set-based SQL
-- then records each occurrence, folds it into its error group and writes one event per group
-- per run. Other events are COPY'd straight into `events`.
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

-- Lines of a batch whose (event_id, occurred_at) is already stored, or repeated within the batch:
-- compared with the stored row to tell a duplicate (same content) from a conflicting second
-- version of the event, which is quarantined.
CREATE TEMP TABLE IF NOT EXISTS ingest_repeats (LIKE ingest_stage) ON COMMIT DELETE ROWS;
