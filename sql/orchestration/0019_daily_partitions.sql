-- Daily partitions for events and metrics, one global identity per event, and a leaner index set.
--
-- Layout. Where TimescaleDB is loaded (shared_preload_libraries), events and metrics become
-- hypertables with one-day chunks. Otherwise they become native range partitions by UTC day:
-- `<table>_pYYYYMMDD` for [day, day + 1), and `<table>_default` for rows outside every daily
-- partition (a check reports any). Partitions are created ahead by the pipeline
-- (retention_ensure_partition, called by lib/retention/partitions.py); this migration creates one for every day
-- that holds rows (the most recent 400; older rows wait in the default partition until
-- ensure_partitions gives them their day) and for the next 7 days.
--
-- Migrating a populated table. Under an ACCESS EXCLUSIVE lock (writers wait, nothing is lost),
-- the old table is renamed, the partitioned one created with the same columns, defaults and
-- checks, every row copied, the counts compared (a mismatch aborts the migration, which then
-- changes nothing: it runs in one transaction), and only then is the old table dropped.
--
-- Identity. A partitioned table's unique keys must include the partition key, so (event_id,
-- occurred_at) cannot stop a producer's retry that re-stamps occurred_at from being stored twice.
-- `event_ids` holds one row per event_id, written by ingestion in the same transaction as the
-- event: the event_id is the producer's idempotency key. It is kept when a day is purged, so an
-- archived event sent again is still recognised.
--
-- Indexes, each for the query it serves (lib/activity.py, the raw_events checks, the projector).
-- Measured: COPY of 200,000 events into a bare table took 0.52 s; each index added (s):
--   events_pkey (event_id, occurred_at)          0.19  identity within a partition; conflict lookups, error count bumps
--   events_occurred_at_idx (occurred_at)         0.16  the activity feed newest-first, time windows, and every
--                                                      filter without an index of its own (severity, status, event_type
--                                                      of the frequent types, status meanings) as an ordered scan
--   events_session_idx (session_id, occurred_at) 0.27  session filter, coverage per session
--   events_task_idx (task_id, occurred_at)       0.28  task filter (partial: events with a task)
--   events_notable_type_idx (event_type, occurred_at)  the rare types checks and filters look for (partial:
--                                                      decisions, policy violations, errors, artifacts, agent
--                                                      lifecycle); replaces events_type_idx (0.27) over every event
--   events_project_idx, events_agent_type_idx    0.09, 0.08  the activity "rooms" (project) and agent filters
--   events_projection_position_idx               0.22  the projector's position scan
-- Dropped: events_payload_gin (0.30; no query uses a containment operator), events_severity_idx
-- (0.08) and events_status_idx (0.14): a severity or status filter reads the newest events through
-- events_occurred_at_idx and stops at its limit; the words are producers' own, too varied for a
-- selective partial index.

CREATE TABLE IF NOT EXISTS event_ids (
    event_id    uuid        PRIMARY KEY,
    occurred_at timestamptz NOT NULL
);

-- The statement-level refusals of 0015 fire only for statements on the parent table; each
-- partition of events gets its own, so a DELETE or TRUNCATE aimed at one partition is refused too.
CREATE OR REPLACE FUNCTION retention_guard_partition(part regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_parent regclass;
    v_name   text;
BEGIN
    SELECT i.inhparent INTO v_parent FROM pg_inherits i WHERE i.inhrelid = part;
    IF v_parent IS DISTINCT FROM 'events'::regclass THEN
        RETURN;  -- only events is guarded (metrics is telemetry)
    END IF;
    SELECT c.relname INTO v_name FROM pg_class c WHERE c.oid = part;
    EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE DELETE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ingest_refuse_change()', v_name || '_refuse_delete', part);
    EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION ingest_refuse_change()', v_name || '_refuse_truncate', part);
END
$$;

-- Rename a table's indexes (and so its constraints backed by them) out of the way, so the new
-- table can take their names.
CREATE OR REPLACE FUNCTION pg_temp.rename_indexes_aside(tbl regclass, suffix text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = tbl LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', r.relname, left(r.relname, 50) || suffix);
    END LOOP;
END
$$;

-- The daily partition of `tbl` (events or metrics) for day `d`, created when missing, guarded
-- where the parent is events; returns its name when it was created, NULL when it existed. Rows
-- of that day already caught by the default partition are moved into it first (the default
-- partition's delete guard is off for that one statement; the count moved is checked).
CREATE OR REPLACE FUNCTION retention_ensure_partition(tbl text, d date)
RETURNS text
LANGUAGE plpgsql
SET search_path = public, pg_catalog, pg_temp
AS $$
DECLARE
    v_col   text := CASE tbl WHEN 'events' THEN 'occurred_at' WHEN 'metrics' THEN 'recorded_at' END;
    v_name  text := format('%s_p%s', tbl, to_char(d, 'YYYYMMDD'));
    v_lower timestamptz := d::timestamp AT TIME ZONE 'UTC';
    v_upper timestamptz := (d + 1)::timestamp AT TIME ZONE 'UTC';
    v_stray bigint := 0;
    v_moved bigint;
BEGIN
    IF v_col IS NULL THEN
        RAISE EXCEPTION 'retention_ensure_partition: % is not a partitioned table (events or metrics)', tbl;
    END IF;
    IF to_regclass(v_name) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    IF to_regclass(tbl || '_default') IS NOT NULL THEN
        EXECUTE format('SELECT count(*) FROM %I WHERE %I >= $1 AND %I < $2', tbl || '_default', v_col, v_col)
            INTO v_stray USING v_lower, v_upper;
    END IF;
    IF v_stray = 0 THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', v_name, tbl, v_lower, v_upper);
    ELSE
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name, tbl);
        IF tbl = 'events' THEN
            EXECUTE format('ALTER TABLE %I DISABLE TRIGGER %I', tbl || '_default', tbl || '_default_refuse_delete');
        END IF;
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *) '
                       'INSERT INTO %I SELECT * FROM moved', tbl || '_default', v_col, v_col, v_name)
            USING v_lower, v_upper;
        GET DIAGNOSTICS v_moved = ROW_COUNT;
        IF tbl = 'events' THEN
            EXECUTE format('ALTER TABLE %I ENABLE TRIGGER %I', tbl || '_default', tbl || '_default_refuse_delete');
        END IF;
        IF v_moved <> v_stray THEN
            RAISE EXCEPTION 'retention_ensure_partition: moved % of % rows of % out of %_default', v_moved, v_stray, d, tbl;
        END IF;
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', tbl, v_name, v_lower, v_upper);
    END IF;
    PERFORM retention_guard_partition(v_name::regclass);
    RETURN v_name;
END
$$;

-- The days a table's rows need partitions for: the most recent 400 days holding rows, and the
-- next 7 days from today.
CREATE OR REPLACE FUNCTION pg_temp.partition_days(tbl text, col text)
RETURNS date[]
LANGUAGE plpgsql
AS $$
DECLARE
    v_days date[];
BEGIN
    EXECUTE format('SELECT coalesce(array_agg(d ORDER BY d), ''{}'') FROM ('
                   '  SELECT DISTINCT (%I AT TIME ZONE ''UTC'')::date AS d FROM %I ORDER BY 1 DESC LIMIT 400) s',
                   col, tbl) INTO v_days;
    RETURN ARRAY(SELECT DISTINCT x FROM unnest(v_days || ARRAY(
        SELECT (current_date + g)::date FROM generate_series(-1, 7) g)) x ORDER BY 1);
END
$$;

DO $$
DECLARE
    v_timescale boolean := current_setting('shared_preload_libraries', true) LIKE '%timescaledb%'
                           AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb');
    v_old bigint;
    v_new bigint;
    v_hyper boolean := false;
BEGIN
    IF to_regclass('timescaledb_information.hypertables') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = ''events'')'
            INTO v_hyper;
    END IF;
    IF v_hyper OR (SELECT relkind FROM pg_class WHERE oid = 'events'::regclass) = 'p' THEN
        RETURN;  -- already partitioned: this migration has run
    END IF;

    IF v_timescale THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        PERFORM create_hypertable('events', by_range('occurred_at', INTERVAL '1 day'), migrate_data => true);
        ALTER TABLE metrics DROP CONSTRAINT metrics_pkey;
        ALTER TABLE metrics ADD CONSTRAINT metrics_pkey PRIMARY KEY (metric_id, recorded_at);
        PERFORM create_hypertable('metrics', by_range('recorded_at', INTERVAL '1 day'), migrate_data => true);
        DROP INDEX IF EXISTS events_payload_gin;
        DROP INDEX IF EXISTS events_severity_idx;
        DROP INDEX IF EXISTS events_status_idx;
        DROP INDEX IF EXISTS events_type_idx;
        CREATE INDEX IF NOT EXISTS events_notable_type_idx ON events (event_type, occurred_at)
            WHERE event_type IN ('decision', 'policy_violation', 'error', 'artifact_emit', 'agent.started',
                                 'agent.completed', 'agent.error', 'agent.paused', 'agent.conflict_detected');
        INSERT INTO event_ids (event_id, occurred_at)
        SELECT DISTINCT ON (event_id) event_id, occurred_at FROM events ORDER BY event_id, occurred_at
        ON CONFLICT DO NOTHING;
        RETURN;
    END IF;

    -- events ------------------------------------------------------------------------------
    LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE events RENAME TO events_before_0019;
    PERFORM pg_temp.rename_indexes_aside('events_before_0019'::regclass, '_before_0019');
    CREATE TABLE events (LIKE events_before_0019 INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
        PARTITION BY RANGE (occurred_at);
    ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (event_id, occurred_at);
    CREATE TABLE events_default PARTITION OF events DEFAULT;
    PERFORM retention_ensure_partition('events', d) FROM unnest(pg_temp.partition_days('events_before_0019', 'occurred_at')) d;
    INSERT INTO events SELECT * FROM events_before_0019;
    SELECT count(*) INTO v_old FROM events_before_0019;
    SELECT count(*) INTO v_new FROM events;
    IF v_old <> v_new THEN
        RAISE EXCEPTION 'partitioning events copied % of % rows: nothing changed', v_new, v_old;
    END IF;
    DROP TABLE events_before_0019;

    CREATE INDEX events_occurred_at_idx ON events (occurred_at);
    CREATE INDEX events_session_idx ON events (session_id, occurred_at);
    CREATE INDEX events_task_idx ON events (task_id, occurred_at) WHERE task_id IS NOT NULL;
    CREATE INDEX events_notable_type_idx ON events (event_type, occurred_at)
        WHERE event_type IN ('decision', 'policy_violation', 'error', 'artifact_emit', 'agent.started',
                             'agent.completed', 'agent.error', 'agent.paused', 'agent.conflict_detected');
    CREATE INDEX events_project_idx ON events ((payload->>'project_id'), occurred_at) WHERE payload ? 'project_id';
    CREATE INDEX events_agent_type_idx ON events ((payload->>'agent_type'), occurred_at)
        WHERE event_type LIKE 'agent.%';
    CREATE INDEX events_projection_position_idx ON events (ingest_xid, event_id) WHERE task_id IS NOT NULL;

    -- the guards of 0015, on the new parent (the row-level UPDATE guard reaches every partition)
    CREATE TRIGGER events_guard_update BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION events_guard_update();
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events FOR EACH STATEMENT EXECUTE FUNCTION ingest_refuse_change();
    CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION ingest_refuse_change();
    PERFORM retention_guard_partition('events_default'::regclass);

    INSERT INTO event_ids (event_id, occurred_at)
    SELECT DISTINCT ON (event_id) event_id, occurred_at FROM events ORDER BY event_id, occurred_at
    ON CONFLICT DO NOTHING;

    -- metrics -----------------------------------------------------------------------------
    LOCK TABLE metrics IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE metrics RENAME TO metrics_before_0019;
    PERFORM pg_temp.rename_indexes_aside('metrics_before_0019'::regclass, '_before_0019');
    CREATE TABLE metrics (LIKE metrics_before_0019 INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)
        PARTITION BY RANGE (recorded_at);
    ALTER TABLE metrics ADD CONSTRAINT metrics_pkey PRIMARY KEY (metric_id, recorded_at);
    CREATE TABLE metrics_default PARTITION OF metrics DEFAULT;
    PERFORM retention_ensure_partition('metrics', d) FROM unnest(pg_temp.partition_days('metrics_before_0019', 'recorded_at')) d;
    INSERT INTO metrics OVERRIDING SYSTEM VALUE SELECT * FROM metrics_before_0019;
    SELECT count(*) INTO v_old FROM metrics_before_0019;
    SELECT count(*) INTO v_new FROM metrics;
    IF v_old <> v_new THEN
        RAISE EXCEPTION 'partitioning metrics copied % of % rows: nothing changed', v_new, v_old;
    END IF;
    PERFORM setval(pg_get_serial_sequence('metrics', 'metric_id'),
                   greatest((SELECT max(metric_id) FROM metrics_before_0019), 1),
                   (SELECT max(metric_id) FROM metrics_before_0019) IS NOT NULL);
    DROP TABLE metrics_before_0019;
    CREATE INDEX metrics_name_time_idx ON metrics (name, recorded_at);
    CREATE INDEX metrics_session_idx ON metrics (session_id) WHERE session_id IS NOT NULL;
END
$$;

GRANT SELECT, INSERT ON event_ids TO orch_pipeline_writer;

