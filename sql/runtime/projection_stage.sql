-- Session-local staging tables of the task projector and the reconciliation (not a migration:
-- created per connection). Rows from the Tasks DB are streamed in with COPY, then set-based SQL
-- joins them with events and the projection. Emptied at commit.
CREATE TEMP TABLE IF NOT EXISTS projection_tasks_stage (
    task_id     text COLLATE "C" PRIMARY KEY,
    title       text,
    status      text,
    priority    smallint,
    tags        jsonb,
    updated_at  timestamptz
) ON COMMIT DELETE ROWS;

-- One batch of task events, folded per task by the projector before it is applied.
CREATE TEMP TABLE IF NOT EXISTS projection_batch_stage (
    task_id        text COLLATE "C" PRIMARY KEY,
    status         text,
    status_ts      timestamptz,
    last_event_ts  timestamptz
) ON COMMIT DELETE ROWS;
