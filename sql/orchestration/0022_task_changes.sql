-- The change feed of the task projection: what each projection and reconciliation run changed,
-- per task and field, with the value before and after and the cause.
--
--   cause    written by
--   event    the projector folding task events (lib/projection/projector.py)
--   repair   a reconciliation repairing drifted rows (lib/projection/repair.py: repair)
--   rebuild  a reconciliation rebuilding the projection (repair.py: rebuild; the whole diff of the
--            old projection and the rebuilt one, recorded before the swap)
--
-- The fields recorded are what a person asks about: status, title, priority and tags. A task that
-- appears has before = NULL; one that disappears has after = NULL. last_event_ts and
-- last_status_ts move with every event and are left out.
--
-- Triggers on task_projection record event and repair changes, one INSERT per statement
-- (transition tables). Writers name their run and cause with SET LOCAL orchestration.change_run
-- and orchestration.change_cause; without them a change is recorded as an event change of a run
-- named after its transaction. These settings only label rows, they grant nothing.

CREATE TABLE IF NOT EXISTS task_changes (
    change_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     uuid        NOT NULL,
    cause      text        NOT NULL CHECK (cause IN ('event', 'repair', 'rebuild')),
    task_id    text        NOT NULL,
    field      text        NOT NULL CHECK (field IN ('status', 'title', 'priority', 'tags')),
    before     jsonb,
    after      jsonb,
    changed_at timestamptz NOT NULL DEFAULT statement_timestamp()
);

CREATE INDEX IF NOT EXISTS task_changes_time_idx ON task_changes (changed_at);
CREATE INDEX IF NOT EXISTS task_changes_run_idx ON task_changes (run_id);
CREATE INDEX IF NOT EXISTS task_changes_task_idx ON task_changes (task_id, changed_at);

CREATE OR REPLACE FUNCTION task_changes_run()
RETURNS uuid
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(nullif(current_setting('orchestration.change_run', true), '')::uuid,
                    md5('task_projection ' || pg_current_xact_id()::text)::uuid)
$$;

CREATE OR REPLACE FUNCTION task_changes_cause()
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(nullif(current_setting('orchestration.change_cause', true), ''), 'event')
$$;

CREATE OR REPLACE FUNCTION task_changes_record()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_TABLE_NAME <> 'task_projection' THEN
        RETURN NULL;  -- the rebuild's shadow: its diff is recorded before the swap
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_changes (run_id, cause, task_id, field, before, after)
        SELECT task_changes_run(), task_changes_cause(), n.task_id, f.field, NULL, f.value
        FROM new_rows n
        CROSS JOIN LATERAL (VALUES ('status', to_jsonb(n.status)), ('title', to_jsonb(n.title)),
                                   ('priority', to_jsonb(n.priority)), ('tags', n.tags_json)) f(field, value)
        WHERE f.value IS NOT NULL AND f.value <> 'null'::jsonb;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO task_changes (run_id, cause, task_id, field, before, after)
        SELECT task_changes_run(), task_changes_cause(), o.task_id, f.field, f.value, NULL
        FROM old_rows o
        CROSS JOIN LATERAL (VALUES ('status', to_jsonb(o.status)), ('title', to_jsonb(o.title)),
                                   ('priority', to_jsonb(o.priority)), ('tags', o.tags_json)) f(field, value)
        WHERE f.value IS NOT NULL AND f.value <> 'null'::jsonb;
    ELSE
        INSERT INTO task_changes (run_id, cause, task_id, field, before, after)
        SELECT task_changes_run(), task_changes_cause(), n.task_id, f.field, f.before, f.after
        FROM old_rows o JOIN new_rows n USING (task_id)
        CROSS JOIN LATERAL (VALUES
            ('status', to_jsonb(o.status), to_jsonb(n.status)),
            ('title', to_jsonb(o.title), to_jsonb(n.title)),
            ('priority', to_jsonb(o.priority), to_jsonb(n.priority)),
            ('tags', o.tags_json, n.tags_json)) f(field, before, after)
        WHERE f.before IS DISTINCT FROM f.after;
    END IF;
    RETURN NULL;
END
$$;

-- On both tables: the rebuild swaps them by renaming, and triggers follow their table.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['task_projection', 'task_projection_shadow'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS task_changes_insert ON %I', t);
        EXECUTE format('CREATE TRIGGER task_changes_insert AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION task_changes_record()', t);
        EXECUTE format('DROP TRIGGER IF EXISTS task_changes_update ON %I', t);
        EXECUTE format('CREATE TRIGGER task_changes_update AFTER UPDATE ON %I '
                       'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION task_changes_record()', t);
        EXECUTE format('DROP TRIGGER IF EXISTS task_changes_delete ON %I', t);
        EXECUTE format('CREATE TRIGGER task_changes_delete AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION task_changes_record()', t);
    END LOOP;
END
$$;

-- A rebuild's changes: the live projection against the filled shadow, before they are swapped.
CREATE OR REPLACE FUNCTION task_changes_record_rebuild()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = public, pg_catalog, pg_temp
AS $$
DECLARE
    v_count bigint;
BEGIN
    INSERT INTO task_changes (run_id, cause, task_id, field, before, after)
    SELECT task_changes_run(), 'rebuild', coalesce(o.task_id, n.task_id), f.field, f.before, f.after
    FROM task_projection o FULL JOIN task_projection_shadow n USING (task_id)
    CROSS JOIN LATERAL (VALUES
        ('status', to_jsonb(o.status), to_jsonb(n.status)),
        ('title', to_jsonb(o.title), to_jsonb(n.title)),
        ('priority', to_jsonb(o.priority), to_jsonb(n.priority)),
        ('tags', o.tags_json, n.tags_json)) f(field, before, after)
    WHERE f.before IS DISTINCT FROM f.after
      AND NOT (f.before IS NULL AND f.after = 'null'::jsonb) AND NOT (f.after IS NULL AND f.before = 'null'::jsonb);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

GRANT SELECT, INSERT ON task_changes TO orch_pipeline_writer;
