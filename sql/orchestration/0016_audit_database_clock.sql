-- Audit times are the moment the database wrote the row, never a moment the writer chose.
--
-- 0010 stamped an entry's occurred_at, and the checkpoint row's created_at, with now(): the start
-- of the writer's transaction. A writer that opens a transaction and writes its entry an hour later
-- (or runs audit_checkpoint() an hour after BEGIN) chose that time: the entry looked an hour older
-- than it was, older than the checkpoint before the one that seals it, and the checkpoint looked
-- older than entries it sealed. Now:
--
--   * occurred_at := clock_timestamp() when the row is inserted. The chain id keeps the
--     transaction's start (now()) and id, which is what makes it one chain per transaction.
--   * audit_checkpoints.created_at := clock_timestamp() after the checkpoint has waited for the
--     writers it seals, so every entry a checkpoint seals was written before the checkpoint's time.
--
-- The canonical row (version 1) and the hashes are unchanged: verify_chain reads occurred_at from
-- the row as before, so entries written under 0010 and under this file verify alike. Both
-- functions run as orch_audit_owner with search_path pinned to pg_catalog, as in 0010; this file
-- replaces both, so reapplying it (psql -1 -f) restores them.

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

    -- The database stamps the time the row is written (whatever the writer supplied, and however
    -- long its transaction has been open) and names the chain after the transaction.
    NEW.occurred_at := clock_timestamp();
    v_micros := (extract(epoch FROM NEW.occurred_at) * 1000000)::bigint;
    v_chain := 'tx/' || (extract(epoch FROM now()) * 1000000)::bigint || '/' || pg_current_xact_id();
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
    -- Canonical row, version 1 (mirrored by lib/audit/chain.py: canonical_row): 'v1', then each
    -- field as '~' for NULL or '<length>:<text>'.
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

-- As in 0010, except that the checkpoint row's created_at is the moment it is written.
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
    -- The time the database writes the checkpoint, after the entries it seals.
    INSERT INTO %1$I.audit_checkpoints (checkpoint_seq, from_id, through_id, entries, prev_hash, checkpoint_hash, created_at)
    VALUES (v_seq, v_from, v_through, v_entries, v_prev, v_hash, clock_timestamp());
    RETURN QUERY SELECT v_seq, v_from, v_through, v_entries, encode(v_hash, 'hex');
END
$body$
$f$, current_schema());
END
$do$;

-- Column defaults say the same, for whoever reads the table's definition (the functions above
-- set both columns themselves).
ALTER TABLE audit_ledger ALTER COLUMN occurred_at SET DEFAULT clock_timestamp();
ALTER TABLE audit_checkpoints ALTER COLUMN created_at SET DEFAULT clock_timestamp();

ALTER FUNCTION audit_ledger_chain() OWNER TO orch_audit_owner;
ALTER FUNCTION audit_checkpoint(integer, integer) OWNER TO orch_audit_owner;
REVOKE ALL ON FUNCTION audit_ledger_chain() FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_checkpoint(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_checkpoint(integer, integer) TO orch_pipeline_writer;
