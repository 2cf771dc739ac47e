-- What ingestion stored stays stored: guard triggers on the tables that account for every line.
--
-- events, ingest_files, error_groups, error_occurrences, error_group_runs and quarantine refuse
-- DELETE and TRUNCATE outright, whoever asks (as the audit ledger does, 0004). UPDATE is refused
-- too, except for the changes the pipeline itself makes, each checked row by row:
--
--   table               the only UPDATE allowed                                 made by
--   events              an `error` event's payload.count grows; nothing else     MOVE_ERRORS_SQL (lib/ingestion/batches.py):
--                       of the row changes                                       a later batch or file of the run bumps the
--                                                                                run's one event per error group
--   error_groups        count grows, first_seen moves earlier, last_seen later,  MOVE_ERRORS_SQL (ON CONFLICT DO UPDATE)
--                       sample_event_ids only gains ids after those it has
--   error_group_runs    count grows; nothing else changes                        MOVE_ERRORS_SQL (ON CONFLICT DO UPDATE)
--   ingest_files,       none                                                     -
--   error_occurrences
--   quarantine          a pending row (neither replayed nor discarded) is        quarantine replay, discard
--                       replayed (replay_attempts, last_replay_at,               (lib/ingestion/quarantine.py) and the
--                       last_replay_detail, replayed_at, replay_outcome,         resolution of a superseded partial line
--                       replay_event_id; attempts never go back) or discarded    (supersede_partial_lines in batches.py)
--                       (discarded_at, discarded_by, discard_reason), never
--                       both; the line, where it came from and why it was
--                       quarantined never change; a replayed or discarded row
--                       is final
--
-- Why rules on the change rather than on who makes it: a session flag (SET LOCAL orch.x = on)
-- can be set by any session, so it would say nothing about the writer, and routing the writes
-- through SECURITY DEFINER functions needs the pipeline to run as a role without rights on these
-- tables, which deployments are not required to set up. A rule on the row itself holds whoever
-- connects (short of disabling the trigger, which `events_accounted_for` reports): it admits
-- exactly the growth ingestion and replay produce, and no edit of what was ingested. Each rule
-- compares the whole row (to_jsonb) minus the columns allowed to change, so a column added later
-- is guarded without touching this file.
--
-- A later migration that must rewrite these rows (a backfill) disables the trigger for that
-- statement in its own transaction: ALTER TABLE … DISABLE TRIGGER …; UPDATE …; ALTER TABLE …
-- ENABLE TRIGGER …. Retention, when it exists, will need a narrow exception of its own to purge
-- archived days.
--
-- The trigger functions only compare values; their search_path is pinned to pg_catalog so no
-- operator or function a caller creates can stand in for the ones they use.

-- DELETE, TRUNCATE, and UPDATE of the tables that allow none: refused, naming what to do instead.
CREATE OR REPLACE FUNCTION ingest_refuse_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% keeps what was ingested: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = CASE TG_TABLE_NAME
                  WHEN 'quarantine' THEN
                      'quarantined lines are kept: replay them after a fix, or mark them with '
                      '''orchestration-pipeline quarantine discard --reason …'''
                  ELSE
                      'ingested rows are never removed or rewritten; a wrong event is corrected by a '
                      'new event (see docs/runbooks/ingestion.md#events_accounted_for)'
              END;
END
$$;

-- events: only an error group's per-run event has its count bumped.
CREATE OR REPLACE FUNCTION events_guard_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.event_type = 'error'
       AND (to_jsonb(NEW) - 'payload') = (to_jsonb(OLD) - 'payload')
       AND (NEW.payload - 'count') = (OLD.payload - 'count')
       AND jsonb_typeof(NEW.payload -> 'count') = 'number'
       AND jsonb_typeof(OLD.payload -> 'count') = 'number'
       AND (NEW.payload ->> 'count')::numeric >= (OLD.payload ->> 'count')::numeric THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'events keeps what was ingested: UPDATE of event % (%) refused', OLD.event_id, OLD.event_type
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only the count of an error group''s event grows; a wrong event is corrected by a new '
                     'event (see docs/runbooks/ingestion.md#events_accounted_for)';
END
$$;

-- error_groups: the counts and the seen window grow, the first sample ids stay.
CREATE OR REPLACE FUNCTION error_groups_guard_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (to_jsonb(NEW) - '{count,first_seen,last_seen,sample_event_ids}'::text[])
           = (to_jsonb(OLD) - '{count,first_seen,last_seen,sample_event_ids}'::text[])
       AND NEW.count >= OLD.count
       AND NEW.first_seen <= OLD.first_seen
       AND NEW.last_seen >= OLD.last_seen
       AND NEW.sample_event_ids[1:cardinality(OLD.sample_event_ids)] = OLD.sample_event_ids THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'error_groups keeps what was ingested: UPDATE of group % refused', OLD.fingerprint
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'a group only grows: its count and seen window, and sample ids after those it has';
END
$$;

-- error_group_runs: a run's count of a group grows.
CREATE OR REPLACE FUNCTION error_group_runs_guard_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (to_jsonb(NEW) - 'count') = (to_jsonb(OLD) - 'count') AND NEW.count >= OLD.count THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'error_group_runs keeps what was ingested: UPDATE of group % in run % refused',
        OLD.fingerprint, OLD.run_id
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'a run''s count of an error group only grows';
END
$$;

-- quarantine: a pending row is replayed or discarded, once; the line itself never changes.
CREATE OR REPLACE FUNCTION quarantine_guard_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_replay  text[] := '{replay_attempts,last_replay_at,last_replay_detail,replayed_at,replay_outcome,replay_event_id}';
    v_discard text[] := '{discarded_at,discarded_by,discard_reason}';
    v_problem text;
BEGIN
    IF OLD.replayed_at IS NOT NULL OR OLD.discarded_at IS NOT NULL THEN
        v_problem := format('it is already %s, which is final',
                            CASE WHEN OLD.discarded_at IS NOT NULL THEN 'discarded' ELSE 'replayed' END);
    ELSIF (to_jsonb(NEW) - v_replay - v_discard) <> (to_jsonb(OLD) - v_replay - v_discard) THEN
        v_problem := 'the line, where it came from and why it was quarantined never change';
    ELSIF NEW.discarded_at IS NOT NULL AND (to_jsonb(NEW) - v_discard) <> (to_jsonb(OLD) - v_discard) THEN
        v_problem := 'a discard sets discarded_at, discarded_by and discard_reason, and nothing else';
    ELSIF NEW.discarded_at IS NULL
          AND (NEW.discarded_by IS DISTINCT FROM OLD.discarded_by
               OR NEW.discard_reason IS DISTINCT FROM OLD.discard_reason) THEN
        v_problem := 'discarded_by and discard_reason are set by a discard, with discarded_at';
    ELSIF NEW.replay_attempts < OLD.replay_attempts THEN
        v_problem := 'replay_attempts never goes back';
    ELSIF NEW.replayed_at IS NULL AND (NEW.replay_outcome IS NOT NULL OR NEW.replay_event_id IS NOT NULL) THEN
        v_problem := 'a replay outcome comes with replayed_at';
    ELSE
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'quarantine row % may change only through replay or discard: UPDATE refused, %',
        OLD.quarantine_id, v_problem
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'use ''orchestration-pipeline quarantine replay'' or ''quarantine discard --reason …''';
END
$$;

-- The triggers. UPDATE guards with rules are row-level (they compare OLD and NEW); refusals are
-- statement-level, so a refused statement is refused even when it matches no row.
CREATE OR REPLACE TRIGGER events_guard_update
    BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION events_guard_update();
CREATE OR REPLACE TRIGGER error_groups_guard_update
    BEFORE UPDATE ON error_groups FOR EACH ROW EXECUTE FUNCTION error_groups_guard_update();
CREATE OR REPLACE TRIGGER error_group_runs_guard_update
    BEFORE UPDATE ON error_group_runs FOR EACH ROW EXECUTE FUNCTION error_group_runs_guard_update();
CREATE OR REPLACE TRIGGER quarantine_guard_update
    BEFORE UPDATE ON quarantine FOR EACH ROW EXECUTE FUNCTION quarantine_guard_update();
CREATE OR REPLACE TRIGGER ingest_files_no_update
    BEFORE UPDATE ON ingest_files FOR EACH STATEMENT EXECUTE FUNCTION ingest_refuse_change();
CREATE OR REPLACE TRIGGER error_occurrences_no_update
    BEFORE UPDATE ON error_occurrences FOR EACH STATEMENT EXECUTE FUNCTION ingest_refuse_change();

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'ingest_files', 'error_groups', 'error_occurrences', 'error_group_runs',
                             'quarantine'] LOOP
        EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE DELETE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION ingest_refuse_change()', t || '_no_delete', t);
        EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION ingest_refuse_change()', t || '_no_truncate', t);
    END LOOP;
END
$$;
