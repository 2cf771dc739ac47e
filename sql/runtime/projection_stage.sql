-- Session-local staging tables of the task projector and the reconciliation (not a migration:
-- created per connection). Rows from the Tasks DB are streamed in with COPY, then set-based SQL
-- joins them with events and the projection. Emptied at commit.
CREATE TEMP TABLE IF NOT EXISTS projection_tasks_stage (
    task_id     text COLLATE "C" NOT NULL,
    title       text,
    status      text,
    priority    smallint,
    tags        jsonb,
    updated_at  timestamptz
) ON COMMIT DELETE ROWS;

CREATE TEMP TABLE IF NOT EXISTS projection_drift_stage (
    task_id  text COLLATE "C" NOT NULL,
    kind     text NOT NULL
) ON COMMIT DELETE ROWS;
