-- The role decision effects write the Tasks DB as (the pipeline otherwise only reads it).
--
--   orch_tasks_writer  NOLOGIN. May read tasks, insert new ones, and change only their tags and
--                      updated_at. It cannot delete tasks or rewrite titles, status or priority.
--
-- Effects switch to it with SET LOCAL ROLE inside their own transaction, so its grants are
-- what applies even when the pipeline's login is more privileged. On a server, grant the
-- pipeline's login membership: GRANT orch_tasks_writer TO pipeline_login;
-- Roles are cluster-global: creation is idempotent and tolerates many databases per cluster.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orch_tasks_writer') THEN
        CREATE ROLE orch_tasks_writer NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created concurrently by a migration of another database on this cluster
END
$$;

GRANT SELECT, INSERT ON tasks TO orch_tasks_writer;
GRANT UPDATE (tags, updated_at) ON tasks TO orch_tasks_writer;
