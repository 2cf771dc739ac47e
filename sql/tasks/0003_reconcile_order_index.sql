-- Reconciliation streams the tasks in byte order of task_id; this index serves that order
-- without a sort, and covers the columns it reads.
CREATE INDEX IF NOT EXISTS tasks_task_id_bytewise_idx ON tasks (task_id COLLATE "C") INCLUDE (status, updated_at);
