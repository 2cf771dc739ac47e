-- Decisions, and the transactional outbox that feeds the vector index of their rationales.
--
-- PostgreSQL is the source of truth; the index (Qdrant) is derived. Every create, update and
-- delete of a decision writes one `search_outbox` row in the same transaction, by trigger, so no
-- write path (ingestion, the Python API, a repair) can change a decision without telling the
-- index. The sync (lib/index/sync.py) turns outbox rows into index writes; the reconciler
-- (lib/index/reconcile.py) compares the two sides and enqueues repairs here.
--
-- Versions come from one sequence, so they grow per decision across updates, deletes and
-- re-creations alike: "the highest version wins" orders every pair of writes of one decision,
-- including a delete followed by a create of the same id.

CREATE SEQUENCE IF NOT EXISTS decision_version_seq;

CREATE TABLE IF NOT EXISTS decisions (
    decision_id     text        PRIMARY KEY CHECK (decision_id <> ''),
    org_id          text,
    policy_id       text,
    session_id      text,
    task_id         text,
    status          text,
    rationale       text        NOT NULL CHECK (rationale <> ''),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    version         bigint      NOT NULL,
    -- sha256 of what the index holds of the decision (rationale and filter fields): set by trigger
    content_hash    text        NOT NULL,
    -- the decision event that last set it; NULL for a write through the Python API
    source_event_id uuid
);

-- Set content_hash and a new version; an UPDATE that changes nothing the index holds (nor the
-- session or task) is skipped: no new version, no outbox row.
CREATE OR REPLACE FUNCTION decisions_stamp()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.decision_id <> OLD.decision_id THEN
        RAISE EXCEPTION 'decisions: decision_id cannot change (% -> %)', OLD.decision_id, NEW.decision_id
            USING HINT = 'delete the decision and create it under the new id';
    END IF;
    NEW.content_hash := encode(sha256(convert_to(jsonb_build_array(
        NEW.rationale, NEW.org_id, NEW.policy_id, NEW.status, extract(epoch FROM NEW.created_at)
    )::text, 'UTF8')), 'hex');
    IF TG_OP = 'UPDATE' AND NEW.content_hash = OLD.content_hash
       AND NEW.session_id IS NOT DISTINCT FROM OLD.session_id
       AND NEW.task_id IS NOT DISTINCT FROM OLD.task_id THEN
        RETURN NULL;
    END IF;
    NEW.version := nextval('decision_version_seq');
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS decisions_stamp ON decisions;
CREATE TRIGGER decisions_stamp BEFORE INSERT OR UPDATE ON decisions
    FOR EACH ROW EXECUTE FUNCTION decisions_stamp();

-- Outbox rows: one per change of a decision, written with it.
CREATE TABLE IF NOT EXISTS search_outbox (
    outbox_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_id        text        NOT NULL,
    version          bigint      NOT NULL,
    op               text        NOT NULL CHECK (op IN ('upsert', 'delete')),
    content_hash     text,
    -- write: a decision changed; repair: enqueued by the reconciler; replay: a dead letter re-enqueued
    cause            text        NOT NULL DEFAULT 'write' CHECK (cause IN ('write', 'repair', 'replay')),
    -- when the row was written (the decision's change, to within its transaction)
    enqueued_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT '-infinity',
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       text,
    done_at          timestamptz,
    -- indexed/deleted: written to the index; superseded: a higher version of the entity was
    -- handled with it; stale: the index already held a higher version; dead: moved to dead letters
    outcome          text        CHECK (outcome IN ('indexed', 'deleted', 'superseded', 'stale', 'dead')),
    -- when the change became searchable (indexed or deleted); minus enqueued_at = freshness
    searchable_at    timestamptz,
    CONSTRAINT search_outbox_done_has_outcome CHECK ((done_at IS NULL) = (outcome IS NULL))
);

-- The sync's claim: pending rows by due time, then each claimed entity's other pending rows.
CREATE INDEX IF NOT EXISTS search_outbox_pending_idx
    ON search_outbox (next_attempt_at, outbox_id) WHERE done_at IS NULL;
CREATE INDEX IF NOT EXISTS search_outbox_pending_entity_idx
    ON search_outbox (entity_id) WHERE done_at IS NULL;
-- Freshness over a window, and pruning of done rows.
CREATE INDEX IF NOT EXISTS search_outbox_done_idx ON search_outbox (done_at) WHERE done_at IS NOT NULL;

-- One INSERT into the outbox per statement (transition tables), not one per row: a batch of
-- ingested decisions costs one statement, however many rows it writes.
CREATE OR REPLACE FUNCTION decisions_enqueue()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO search_outbox (entity_id, version, op)
        SELECT decision_id, nextval('decision_version_seq'), 'delete' FROM changed_rows ORDER BY decision_id;
    ELSE
        INSERT INTO search_outbox (entity_id, version, op, content_hash)
        SELECT decision_id, version, 'upsert', content_hash FROM changed_rows ORDER BY decision_id;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS decisions_enqueue ON decisions;
DROP TRIGGER IF EXISTS decisions_enqueue_insert ON decisions;
CREATE TRIGGER decisions_enqueue_insert AFTER INSERT ON decisions REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION decisions_enqueue();
DROP TRIGGER IF EXISTS decisions_enqueue_update ON decisions;
CREATE TRIGGER decisions_enqueue_update AFTER UPDATE ON decisions REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION decisions_enqueue();
DROP TRIGGER IF EXISTS decisions_enqueue_delete ON decisions;
CREATE TRIGGER decisions_enqueue_delete AFTER DELETE ON decisions REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION decisions_enqueue();

-- Items whose retries are spent. Never deleted automatically (a guard refuses DELETE and
-- TRUNCATE); `index replay-dead-letters` re-enqueues them and marks them replayed.
CREATE TABLE IF NOT EXISTS search_dead_letters (
    dead_letter_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id        bigint      NOT NULL,
    entity_id        text        NOT NULL,
    version          bigint      NOT NULL,
    op               text        NOT NULL CHECK (op IN ('upsert', 'delete')),
    content_hash     text,
    attempts         integer     NOT NULL,
    fingerprint      text        NOT NULL,
    error_class      text        NOT NULL,
    error_text       text        NOT NULL,
    enqueued_at      timestamptz NOT NULL,
    dead_at          timestamptz NOT NULL DEFAULT now(),
    replayed_at      timestamptz,
    replayed_by      text,
    replay_reason    text,
    replay_outbox_id bigint,
    CONSTRAINT search_dead_letters_replay_complete CHECK (
        (replayed_at IS NULL) = (replayed_by IS NULL) AND (replayed_at IS NULL) = (replay_outbox_id IS NULL))
);

CREATE INDEX IF NOT EXISTS search_dead_letters_open_idx
    ON search_dead_letters (dead_at) WHERE replayed_at IS NULL;

-- Dead-letter errors de-duplicated by fingerprint (error class + message with ids and numbers
-- masked), like error groups: one row per kind of failure, however many items it struck.
CREATE TABLE IF NOT EXISTS search_dead_letter_errors (
    fingerprint      text        PRIMARY KEY,
    error_class      text        NOT NULL,
    message_template text        NOT NULL,
    sample_error     text        NOT NULL,
    count            bigint      NOT NULL CHECK (count >= 1),
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL
);

-- A dead letter changes once: when it is replayed (replayed_at, replayed_by, replay_reason,
-- replay_outbox_id set together). Anything else is refused, as are DELETE and TRUNCATE.
CREATE OR REPLACE FUNCTION search_dead_letters_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.replayed_at IS NULL AND NEW.replayed_at IS NOT NULL
       AND (to_jsonb(NEW) - ARRAY['replayed_at', 'replayed_by', 'replay_reason', 'replay_outbox_id'])
           = (to_jsonb(OLD) - ARRAY['replayed_at', 'replayed_by', 'replay_reason', 'replay_outbox_id']) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'search_dead_letters keeps every dead letter: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 're-enqueue dead letters with ''orchestration-pipeline index replay-dead-letters --reason …''';
END
$$;

DROP TRIGGER IF EXISTS search_dead_letters_guard_update ON search_dead_letters;
CREATE TRIGGER search_dead_letters_guard_update BEFORE UPDATE ON search_dead_letters
    FOR EACH ROW EXECUTE FUNCTION search_dead_letters_guard();
DROP TRIGGER IF EXISTS search_dead_letters_guard_delete ON search_dead_letters;
CREATE TRIGGER search_dead_letters_guard_delete BEFORE DELETE ON search_dead_letters
    FOR EACH ROW EXECUTE FUNCTION search_dead_letters_guard();
DROP TRIGGER IF EXISTS search_dead_letters_guard_truncate ON search_dead_letters;
CREATE TRIGGER search_dead_letters_guard_truncate BEFORE TRUNCATE ON search_dead_letters
    FOR EACH STATEMENT EXECUTE FUNCTION search_dead_letters_guard();

-- Outcome of each reconciliation of the index against Postgres.
CREATE TABLE IF NOT EXISTS index_reconcile_runs (
    run_id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz NOT NULL DEFAULT now(),
    expected            bigint      NOT NULL,
    indexed             bigint      NOT NULL,
    missing_in_index    bigint      NOT NULL,
    stale_version       bigint      NOT NULL,
    orphan_in_index     bigint      NOT NULL,
    in_flight           bigint      NOT NULL,
    repairs_enqueued    bigint      NOT NULL,
    remaining_drift     bigint,
    samples             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- why the run could not finish (the index unreachable, ...): remaining_drift is then unknown
    error               text
);

GRANT SELECT, INSERT, UPDATE, DELETE ON decisions, search_outbox TO orch_pipeline_writer;
GRANT SELECT, INSERT, UPDATE ON search_dead_letters, search_dead_letter_errors, index_reconcile_runs
    TO orch_pipeline_writer;
GRANT USAGE ON SEQUENCE decision_version_seq TO orch_pipeline_writer;
