-- task_projection: a READ-ONLY, REBUILDABLE read model of the tasks in the authoritative Tasks DB.
--
-- Do not edit its rows by hand. The projector (orchestration_pipeline/lib/projection.py) keeps
-- it in step with `events`, and the nightly reconciliation repairs or rebuilds it from events plus
-- the Tasks DB. A trigger rejects every write unless the transaction ran
--     SET LOCAL orchestration.projector = on
-- which only the projector does. To fix a wrong row, fix the Tasks DB or the events and run the
-- reconciliation ('orchestration-pipeline projection reconcile'); to start over, rebuild it.
--
-- Forward-only and idempotent, like every migration here.

-- Position of each event for the projector. The ingesting transaction's id (64-bit, never wraps)
-- orders events by commit horizon: every transaction with an id below the xmin of a snapshot has
-- finished, so the projector can advance its checkpoint up to that xmin without ever skipping an
-- event whose insert was still uncommitted (the high-water-mark bug of sequence/timestamp cursors).
ALTER TABLE events ADD COLUMN IF NOT EXISTS ingest_xid xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE INDEX IF NOT EXISTS events_projection_position_idx
    ON events (ingest_xid, event_id) WHERE task_id IS NOT NULL;

-- The documented mapping from Tasks DB statuses to projection statuses. Reconciliation compares
-- through it, and repairs write the mapped status.
CREATE TABLE IF NOT EXISTS task_status_map (
    tasks_status       text PRIMARY KEY,
    projection_status  text NOT NULL
);

INSERT INTO task_status_map (tasks_status, projection_status) VALUES
    ('todo', 'pending'),
    ('in_progress', 'running'),
    ('blocked', 'blocked'),
    ('done', 'succeeded'),
    ('failed', 'failed'),
    ('cancelled', 'cancelled')
ON CONFLICT (tasks_status) DO NOTHING;

-- Tie-break between two status observations with the same timestamp, so the projection does not
-- depend on the order events were ingested in: a terminal status beats a running one.
CREATE OR REPLACE FUNCTION task_projection_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'pending' THEN 0 WHEN 'running' THEN 1 WHEN 'blocked' THEN 2
        WHEN 'succeeded' THEN 3 WHEN 'cancelled' THEN 4 WHEN 'failed' THEN 5 ELSE -1 END
$$;

-- True when the observation (new_ts, new_status) is later than (old_ts, old_status).
CREATE OR REPLACE FUNCTION task_projection_newer(
    new_ts timestamptz, new_status text, old_ts timestamptz, old_status text
) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT new_ts IS NOT NULL AND (
        old_ts IS NULL
        OR (new_ts, task_projection_status_rank(new_status)) > (old_ts, task_projection_status_rank(old_status)))
$$;

CREATE TABLE IF NOT EXISTS task_projection (
    task_id         text COLLATE "C" NOT NULL,
    title           text,
    status          text        NOT NULL DEFAULT 'pending',
    last_status_ts  timestamptz,
    priority        smallint,
    tags_json       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    last_event_ts   timestamptz,
    updated_utc     timestamptz NOT NULL DEFAULT now(),
    version         bigint      NOT NULL DEFAULT 1,
    CONSTRAINT task_projection_pkey PRIMARY KEY (task_id),
    CONSTRAINT task_projection_status_check CHECK (status IN (
        'pending', 'running', 'blocked', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT task_projection_tags_array_check CHECK (jsonb_typeof(tags_json) = 'array')
) WITH (fillfactor = 85);  -- room for HOT updates: the projector rewrites rows in place

-- The rebuild fills this shadow, then swaps it in (task_projection_swap_shadow) in one transaction.
CREATE TABLE IF NOT EXISTS task_projection_shadow (LIKE task_projection INCLUDING ALL) WITH (fillfactor = 85);

CREATE OR REPLACE FUNCTION task_projection_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('orchestration.projector', true), '') <> 'on' THEN
        RAISE EXCEPTION '% is read-only and rebuildable: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'fix the Tasks DB or the events, then run ''orchestration-pipeline projection '
                         'reconcile'' (or rebuild); only the projector writes here, after '
                         'SET LOCAL orchestration.projector = on';
    END IF;
    RETURN NULL;  -- statement-level triggers: the return value is ignored
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['task_projection', 'task_projection_shadow'] LOOP
        -- statement-level: it refuses the whole statement, at no per-row cost to the projector
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgrelid = t::regclass AND tgname = 'task_projection_read_only') THEN
            EXECUTE format('CREATE TRIGGER task_projection_read_only BEFORE INSERT OR UPDATE OR DELETE '
                           'ON %I FOR EACH STATEMENT EXECUTE FUNCTION task_projection_guard()', t);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgrelid = t::regclass AND tgname = 'task_projection_no_truncate') THEN
            EXECUTE format('CREATE TRIGGER task_projection_no_truncate BEFORE TRUNCATE '
                           'ON %I FOR EACH STATEMENT EXECUTE FUNCTION task_projection_guard()', t);
        END IF;
    END LOOP;
END
$$;

-- Swap the filled shadow in for the live projection. Renames take ACCESS EXCLUSIVE locks and
-- commit with the caller's transaction, so a reader sees either the old or the new projection,
-- never a half-built one. The old table becomes the (emptied) shadow for the next rebuild.
CREATE OR REPLACE FUNCTION task_projection_swap_shadow() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('orchestration.projector', true), '') <> 'on' THEN
        RAISE EXCEPTION 'task_projection is read-only and rebuildable: swap refused'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'run ''orchestration-pipeline projection reconcile --rebuild''';
    END IF;
    LOCK TABLE task_projection, task_projection_shadow IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE task_projection RENAME CONSTRAINT task_projection_pkey TO task_projection_swap_pkey;
    ALTER TABLE task_projection_shadow RENAME CONSTRAINT task_projection_shadow_pkey TO task_projection_pkey;
    ALTER TABLE task_projection RENAME CONSTRAINT task_projection_swap_pkey TO task_projection_shadow_pkey;
    ALTER TABLE task_projection RENAME TO task_projection_swap;
    ALTER TABLE task_projection_shadow RENAME TO task_projection;
    ALTER TABLE task_projection_swap RENAME TO task_projection_shadow;
    TRUNCATE task_projection_shadow;
END
$$;

-- The projector's position: everything at or before (position_xid, position_event_id) is applied.
-- It commits in the same transaction as the projection rows it describes.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection         text        PRIMARY KEY,
    position_xid       xid8        NOT NULL DEFAULT '0'::xid8,
    position_event_id  uuid        NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    events_applied     bigint      NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

INSERT INTO projection_checkpoints (projection) VALUES ('task_projection') ON CONFLICT DO NOTHING;

-- One row per reconciliation of task_projection against the Tasks DB.
CREATE TABLE IF NOT EXISTS drift_reports (
    report_id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at             timestamptz NOT NULL,
    finished_at            timestamptz NOT NULL DEFAULT now(),
    grace_minutes          integer     NOT NULL CHECK (grace_minutes >= 0),
    tasks_compared         bigint      NOT NULL,
    projection_compared    bigint      NOT NULL,
    skipped_in_grace       bigint      NOT NULL,
    missing_in_projection  bigint      NOT NULL,
    missing_in_tasks       bigint      NOT NULL,
    status_mismatch        bigint      NOT NULL,
    drift_count            bigint      GENERATED ALWAYS AS
                               (missing_in_projection + missing_in_tasks + status_mismatch) STORED,
    samples                jsonb       NOT NULL DEFAULT '{}'::jsonb,
    action                 text        NOT NULL CHECK (action IN ('none', 'repair', 'rebuild', 'refused')),
    action_detail          text,
    rows_changed           bigint      NOT NULL DEFAULT 0,
    request_id             text
);

CREATE INDEX IF NOT EXISTS drift_reports_finished_idx ON drift_reports (finished_at);
