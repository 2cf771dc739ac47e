-- Audit ledger, third chaining scheme: one chain per transaction, sealed by checkpoints.
--
-- Before this, every entry appended to a shared chain (one per UTC day and writer slot) whose
-- head row the trigger updated: each audited transaction took a row lock and wrote a new head
-- version, which cost half of an audited mutation's throughput. Now:
--
--   * Chains. A transaction's entries form their own chain, 'tx/<start µs>/<xid>': the first
--     links to 32 zero bytes, each later one to the entry before it. No head row, no lock, no
--     write besides the entry itself, so concurrent writers never wait for each other.
--     The transaction start time makes the id unique even across a logical restore, which
--     restarts transaction ids. The canonical row (version 1) and the hash are unchanged.
--   * Checkpoints. audit_checkpoint() seals every entry not yet sealed into the next link of
--     one global checkpoint chain: sha256(previous checkpoint || the id and row_hash of every
--     entry in its audit_id range). Removing or adding an entry, or a whole transaction's chain,
--     then breaks the checkpoint. It runs on every audit_ledger_integrity materialization and
--     from `orchestration-pipeline audit checkpoint`; entries newer than the last checkpoint
--     are protected by their row hashes and the append-only guard only, and verify_chain
--     reports how many there are.
--
-- Entries written under 0004/0006 keep their day/slot chains and heads and verify as before.

-- BEFORE INSERT: validate, stamp the time and the chain position, hash. SECURITY DEFINER with
-- search_path pinned to pg_catalog and the ledger named with its schema (as in 0006): nothing a
-- caller creates can stand in for a function, an operator or the table inside it.
DO $do$
BEGIN
EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.audit_ledger_chain()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    v_micros bigint;
    v_chain  text;
    v_prev   bytea;
    v_seq    bigint := 0;
BEGIN
    IF NEW.operation NOT IN ('create', 'update', 'delete', 'complete', 'grant', 'revoke',
                             'rebuild', 'repair', 'purge', 'replay')
       OR btrim(NEW.actor) = '' OR btrim(NEW.request_id) = '' OR NEW.entity_type = '' OR NEW.entity_id = '' THEN
        IF NEW.operation NOT IN ('create', 'update', 'delete', 'complete', 'grant', 'revoke',
                                 'rebuild', 'repair', 'purge', 'replay') THEN
            RAISE EXCEPTION 'audit_ledger: unknown operation %%', NEW.operation USING ERRCODE = 'check_violation',
                HINT = 'use create, update, delete, complete, grant, revoke, rebuild, repair, purge or replay';
        ELSIF btrim(NEW.actor) = '' OR btrim(NEW.request_id) = '' THEN
            RAISE EXCEPTION 'audit_ledger: actor and request_id must not be blank' USING ERRCODE = 'check_violation',
                HINT = 'pass actor=... and request_id=... to record_audit()';
        ELSE
            RAISE EXCEPTION 'audit_ledger: entity_type and entity_id must not be blank' USING ERRCODE = 'check_violation';
        END IF;
    END IF;

    -- The database stamps the time (a writer cannot back-date an entry) and names the chain.
    NEW.occurred_at := now();
    v_micros := (extract(epoch FROM NEW.occurred_at) * 1000000)::bigint;
    v_chain := 'tx/' || v_micros || '/' || pg_current_xact_id();
    -- orch.audit_chain (transaction-local) only says whether this transaction has written an
    -- entry already; the entry itself is found in the ledger, on this transaction's own chain,
    -- so a forged setting can at worst make an insert fail on the unique chain position.
    IF current_setting('orch.audit_chain', true) = v_chain THEN
        SELECT l.row_hash, l.chain_seq INTO v_prev, v_seq
          FROM %1$I.audit_ledger l WHERE l.chain_id = v_chain ORDER BY l.chain_seq DESC LIMIT 1;
    ELSE
        PERFORM set_config('orch.audit_chain', v_chain, true);
    END IF;
    IF v_prev IS NULL THEN
        v_prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
        v_seq := 0;
    END IF;
    NEW.chain_id := v_chain;
    NEW.chain_seq := v_seq + 1;
    NEW.txn_entry := v_seq + 1;
    NEW.prev_hash := v_prev;
    -- Canonical row, version 1 (mirrored by lib/audit.py: canonical_row): 'v1', then each field
    -- as '~' for NULL or '<length>:<text>'.
    NEW.row_hash := sha256(v_prev || convert_to(concat(
        'v1', length(NEW.audit_id::text), ':', NEW.audit_id, length(v_chain), ':', v_chain,
        length(NEW.chain_seq::text), ':', NEW.chain_seq, length(NEW.txn_entry::text), ':', NEW.txn_entry,
        length(v_micros::text), ':', v_micros,
        coalesce(length(NEW.org_id) || ':' || NEW.org_id, '~'),
        length(NEW.actor), ':', NEW.actor,
        coalesce(length(NEW.endpoint) || ':' || NEW.endpoint, '~'),
        coalesce(length(NEW.method) || ':' || NEW.method, '~'),
        length(NEW.request_id), ':', NEW.request_id,
        length(NEW.operation), ':', NEW.operation,
        length(NEW.entity_type), ':', NEW.entity_type,
        length(NEW.entity_id), ':', NEW.entity_id,
        coalesce(length(NEW.before_data::text) || ':' || NEW.before_data::text, '~'),
        coalesce(length(NEW.after_data::text) || ':' || NEW.after_data::text, '~'),
        coalesce(length(NEW.reason) || ':' || NEW.reason, '~'),
        coalesce(length(NEW.source) || ':' || NEW.source, '~')), 'UTF8'));
    RETURN NEW;
END
$body$
$f$, current_schema());
END
$do$;

-- Chain heads are no longer advanced; the rows of the old chains stay as their anchors.
DROP TRIGGER IF EXISTS audit_ledger_head_catch_up ON audit_ledger;
DROP FUNCTION IF EXISTS audit_ledger_head_catch_up();

-- The guard names the table it protects (it now guards the checkpoints too).
CREATE OR REPLACE FUNCTION audit_ledger_refuse_change()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'record a correcting entry with lib/audit.py record_audit() instead of changing history';
END
$$;

-- One row per checkpoint: the entries with from_id < audit_id <= through_id, sealed.
-- checkpoint_hash = sha256(prev_hash || UTF-8 of
--   'c1|<checkpoint_seq>|<from_id>|<through_id>|<entries>|' followed by '<audit_id>:<row_hash hex>'
--   for every entry in the range in audit_id order, joined by ',');
-- the first checkpoint's prev_hash is 32 zero bytes. lib/audit.py recomputes it independently.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    checkpoint_seq  bigint      PRIMARY KEY CHECK (checkpoint_seq > 0),
    from_id         bigint      NOT NULL CHECK (from_id >= 0),
    through_id      bigint      NOT NULL,
    entries         bigint      NOT NULL CHECK (entries > 0),
    prev_hash       bytea       NOT NULL,
    checkpoint_hash bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (through_id > from_id)
);

CREATE OR REPLACE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_ledger_refuse_change();

CREATE OR REPLACE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_ledger_refuse_change();

-- Which entries a checkpoint may seal ("settled": committed, or rolled back for good) is
-- decided from the identity sequence and the writers' locks, so that writers never wait for a
-- checkpoint: an entry's audit_id is drawn while its transaction holds ROW EXCLUSIVE on the
-- ledger, and ids are drawn in order, one at a time (CACHE 1, pinned here and checked by
-- audit_guard_present). So once every transaction that held that lock when the sequence was
-- read has ended, every id up to the value read is settled.
ALTER TABLE audit_ledger ALTER COLUMN audit_id SET CACHE 1 SET NO CYCLE;

-- Seal the settled entries after the last checkpoint, at most p_max_entries of them, as the
-- next checkpoint; returns it, or no row when there is nothing new. Waits up to p_wait_ms for
-- writers still open, then fails with lock_not_available naming their pids; fails the same way
-- at once if another checkpoint is running. Run it in a READ COMMITTED transaction.
DO $do$
BEGIN
EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.audit_checkpoint(p_max_entries integer DEFAULT 20000, p_wait_ms integer DEFAULT 2000)
RETURNS TABLE (checkpoint_seq bigint, from_id bigint, through_id bigint, entries bigint, checkpoint_hash text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    v_seq     bigint;
    v_from    bigint;
    v_prev    bytea;
    v_drawn   bigint;
    v_writers text[];
    v_open    text[];
    v_until   timestamptz;
    v_through bigint;
    v_entries bigint;
    v_body    text;
    v_hash    bytea;
BEGIN
    IF p_max_entries IS NULL OR p_max_entries < 1 OR p_wait_ms IS NULL OR p_wait_ms < 0 THEN
        RAISE EXCEPTION 'audit_checkpoint: p_max_entries must be at least 1 and p_wait_ms at least 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- An older snapshot could miss entries committed while this waited for their writers.
        RAISE EXCEPTION 'audit_checkpoint: run it in a READ COMMITTED transaction'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        -- Waiting here for writers while holding this transaction's own locks could wait on a
        -- writer that waits on us, unseen by the deadlock detector.
        RAISE EXCEPTION 'audit_checkpoint: run it in a transaction of its own, before any write'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    LOCK TABLE %1$I.audit_checkpoints IN EXCLUSIVE MODE NOWAIT;  -- one checkpointer at a time

    -- The last id drawn, then the transactions that may have drawn one up to it (in that order:
    -- a writer that drew an id before the first read still holds its lock at the second).
    v_drawn := coalesce(pg_sequence_last_value(pg_get_serial_sequence('%1$I.audit_ledger', 'audit_id')::regclass), 0);
    SELECT array_agg(l.virtualtransaction) INTO v_writers
      FROM pg_locks l
     WHERE l.locktype = 'relation' AND l.relation = '%1$I.audit_ledger'::regclass
       AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
       AND l.mode = 'RowExclusiveLock' AND l.granted AND l.pid IS DISTINCT FROM pg_backend_pid();
    v_until := clock_timestamp() + p_wait_ms * interval '1 millisecond';
    WHILE v_writers IS NOT NULL LOOP
        -- A prepared (two-phase) transaction has no pid: it is named as such.
        SELECT array_agg(DISTINCT coalesce(l.pid::text, 'prepared transaction ' || l.virtualtransaction)) INTO v_open
          FROM pg_locks l
         WHERE l.locktype = 'relation' AND l.relation = '%1$I.audit_ledger'::regclass
           AND l.mode = 'RowExclusiveLock' AND l.granted AND l.virtualtransaction = ANY (v_writers);
        EXIT WHEN v_open IS NULL;
        IF clock_timestamp() >= v_until THEN
            RAISE EXCEPTION 'audit_checkpoint: %% transaction(s) writing the ledger still open after %% ms (pids %%)',
                cardinality(v_open), p_wait_ms, array_to_string(v_open, ', ')
                USING ERRCODE = 'lock_not_available',
                      HINT = 'the entries they may write are sealed by a later checkpoint; see pg_stat_activity '
                             'for these pids (pg_prepared_xacts for a prepared transaction)';
        END IF;
        PERFORM pg_sleep(0.005);
    END LOOP;

    SELECT c.checkpoint_seq, c.through_id, c.checkpoint_hash INTO v_seq, v_from, v_prev
      FROM %1$I.audit_checkpoints c ORDER BY c.checkpoint_seq DESC LIMIT 1;
    IF NOT FOUND THEN
        v_seq := 0;
        v_from := 0;
        v_prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    END IF;
    -- The next settled entries, at most p_max_entries of them, in one read.
    SELECT count(*), max(e.audit_id), string_agg(e.audit_id::text || ':' || encode(e.row_hash, 'hex'), ',' ORDER BY e.audit_id)
      INTO v_entries, v_through, v_body
      FROM (SELECT l.audit_id, l.row_hash FROM %1$I.audit_ledger l
             WHERE l.audit_id > v_from AND l.audit_id <= v_drawn ORDER BY l.audit_id LIMIT p_max_entries) e;
    IF v_entries = 0 THEN
        RETURN;
    END IF;
    v_seq := v_seq + 1;
    v_hash := sha256(v_prev || convert_to(
        concat('c1|', v_seq, '|', v_from, '|', v_through, '|', v_entries, '|', v_body), 'UTF8'));
    INSERT INTO %1$I.audit_checkpoints (checkpoint_seq, from_id, through_id, entries, prev_hash, checkpoint_hash)
    VALUES (v_seq, v_from, v_through, v_entries, v_prev, v_hash);
    RETURN QUERY SELECT v_seq, v_from, v_through, v_entries, encode(v_hash, 'hex');
END
$body$
$f$, current_schema());
END
$do$;

ALTER TABLE audit_checkpoints OWNER TO orch_audit_owner;
ALTER FUNCTION audit_checkpoint(integer, integer) OWNER TO orch_audit_owner;
REVOKE ALL ON audit_checkpoints FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_checkpoint(integer, integer) FROM PUBLIC;
GRANT SELECT ON audit_checkpoints TO orch_pipeline_writer;
GRANT EXECUTE ON FUNCTION audit_checkpoint(integer, integer) TO orch_pipeline_writer;
