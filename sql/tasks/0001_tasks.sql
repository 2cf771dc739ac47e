-- The authoritative Tasks DB. The pipeline only reads it (decision effects are the exception).
CREATE TABLE IF NOT EXISTS tasks (
    task_id     text        PRIMARY KEY CHECK (task_id <> ''),
    title       text        NOT NULL,
    status      text        NOT NULL DEFAULT 'todo',
    priority    smallint    NOT NULL DEFAULT 3,
    tags        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tasks_status_check CHECK (status IN (
        'todo', 'in_progress', 'blocked', 'done', 'failed', 'cancelled')),
    CONSTRAINT tasks_priority_check CHECK (priority BETWEEN 0 AND 5),
    CONSTRAINT tasks_tags_array_check CHECK (jsonb_typeof(tags) = 'array')
);

CREATE INDEX IF NOT EXISTS tasks_updated_at_idx ON tasks (updated_at);
