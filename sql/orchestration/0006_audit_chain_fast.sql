-- Audit chain trigger, second version: the same chains, canonical row (version 1) and hashes as
-- 0004_audit_ledger.sql, for less work per entry. Rows written by either version verify alike.
--
-- Why it is shaped this way: PL/pgSQL prepares each expression it evaluates once per
-- transaction, and audited transactions usually write one entry, so every expression of the
-- trigger was compiled again for every entry (a third of the trigger's time). Now the canonical
-- row is one expression instead of one SQL function call per field, and a transaction's first
-- entry links, hashes and advances the head in one statement: about eight expressions in all.
-- Chain heads are also stored sparsely (fillfactor 10), so the heads that concurrent writers
-- advance are not all on one heap page and their updates stay HOT.
--
-- It also closes three holes in 0004's trigger:
--   * search_path: 0004 pinned it to the ledger's schema, so an operator created there (for
--     example `integer || text`) ran inside the trigger as orch_audit_owner. Now pg_catalog only.
--   * a transaction's later entries took their entry count from the caller-settable
--     orch.audit_chain; a forged "0" skipped the head catch-up and stalled the chain. The count
--     now comes from the previous entry, under the head's lock.
--   * the writer could choose audit_id; see the column grant at the end.

ALTER TABLE audit_chain_heads SET (fillfactor = 10);

-- The trigger functions run with their owner's rights. Their search_path is pg_catalog alone
-- (pg_temp last, so it is never searched first), and the ledger's tables are named with their
-- schema: no object a caller can create, in any schema, can stand in for an operator, a function
-- or a table here, and the pin does not depend on the session that applies this file.
DO $do$
BEGIN
EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.audit_ledger_chain()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    -- '<chain>|<seq>|<txn_entry>' of this transaction's last entry, transaction-local.
    v_state  text := current_setting('orch.audit_chain', true);
    v_chain  text;
    v_seq    bigint;
    v_prev   bytea;
    v_entry  integer;
    v_rest   text;
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

    -- The database stamps the time (a writer cannot back-date an entry), and the chain is this
    -- UTC day's for this connection's slot (backend pid mod 32).
    NEW.occurred_at := now();
    v_chain := to_char(NEW.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') || '/'
        || lpad((pg_backend_pid() %% 32)::text, 2, '0');
    NEW.chain_id := v_chain;
    -- Canonical row, version 1 (mirrored by lib/audit.py: canonical_row), from occurred_at on;
    -- each field is '~' for NULL, else '<length>:<text>'. audit_id, chain_id, chain_seq and
    -- txn_entry go in front of it below.
    v_rest := concat(
        length(((extract(epoch FROM NEW.occurred_at) * 1000000)::bigint)::text), ':',
        (extract(epoch FROM NEW.occurred_at) * 1000000)::bigint,
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
        coalesce(length(NEW.source) || ':' || NEW.source, '~'));

    IF v_state <> '' AND split_part(v_state, '|', 1) = v_chain THEN
        -- A later entry of a transaction that already holds its chain's head: link to the
        -- transaction's previous entry, found by its position, and count on from that entry's
        -- txn_entry (never from the setting, which any caller can write). The head stays as it is
        -- until commit (the deferred audit_ledger_head_catch_up). The head lock is this
        -- transaction's already; a caller who forged the setting waits here for the real holder
        -- instead of appending beside it.
        PERFORM 1 FROM %1$I.audit_chain_heads WHERE chain_id = v_chain FOR NO KEY UPDATE;
        v_seq := split_part(v_state, '|', 2)::bigint;
        SELECT row_hash, txn_entry INTO v_prev, v_entry
          FROM %1$I.audit_ledger WHERE chain_id = v_chain AND chain_seq = v_seq;
    END IF;

    IF v_prev IS NOT NULL THEN
        NEW.chain_seq := v_seq + 1;
        NEW.txn_entry := v_entry + 1;
        NEW.prev_hash := v_prev;
        NEW.row_hash := sha256(v_prev || convert_to(concat(
            'v1', length(NEW.audit_id::text), ':', NEW.audit_id, length(v_chain), ':', v_chain,
            length(NEW.chain_seq::text), ':', NEW.chain_seq,
            length(NEW.txn_entry::text), ':', NEW.txn_entry, v_rest), 'UTF8'));
    ELSE
        -- The transaction's first entry on its chain. One statement locks the head, links to it
        -- and advances it; a concurrent writer of the same chain waits for this transaction to
        -- end, then re-evaluates against the committed head. txn_entry is 1.
        FOR attempt IN 1..2 LOOP
            UPDATE %1$I.audit_chain_heads h
               SET last_seq = h.last_seq + 1,
                   prev_hash = h.last_hash,
                   last_hash = sha256(h.last_hash || convert_to(concat(
                       'v1', length(NEW.audit_id::text), ':', NEW.audit_id, length(v_chain), ':', v_chain,
                       length((h.last_seq + 1)::text), ':', h.last_seq + 1, '1:1', v_rest), 'UTF8')),
                   last_id = NEW.audit_id,
                   updated_at = NEW.occurred_at
             WHERE h.chain_id = v_chain
            RETURNING 1, h.last_seq, h.prev_hash, h.last_hash
                 INTO NEW.txn_entry, NEW.chain_seq, NEW.prev_hash, NEW.row_hash;
            EXIT WHEN FOUND;
            -- First entry of the chain: create its head (a concurrent creator wins harmlessly).
            INSERT INTO %1$I.audit_chain_heads (chain_id, last_seq, last_hash, prev_hash)
            VALUES (v_chain, 0, decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'))
            ON CONFLICT (chain_id) DO NOTHING;
        END LOOP;
        IF NEW.row_hash IS NULL THEN
            RAISE EXCEPTION 'audit chain head %% could not be created', v_chain;
        END IF;
    END IF;
    -- Transaction-local: reverts with a rolled-back savepoint, together with its entries.
    PERFORM set_config('orch.audit_chain', v_chain || '|' || NEW.chain_seq || '|' || NEW.txn_entry, true);
    RETURN NEW;
END
$body$
$f$, current_schema());

-- AFTER INSERT, deferred to commit, for a transaction's later entries only (0004's, pinned the
-- same way): move the head to the transaction's last entry, once.
EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$I.audit_ledger_head_catch_up()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM %1$I.audit_ledger WHERE chain_id = NEW.chain_id AND chain_seq > NEW.chain_seq) THEN
        UPDATE %1$I.audit_chain_heads
           SET last_seq = NEW.chain_seq, prev_hash = NEW.prev_hash, last_hash = NEW.row_hash,
               last_id = NEW.audit_id, updated_at = NEW.occurred_at
         WHERE chain_id = NEW.chain_id AND last_seq < NEW.chain_seq;
    END IF;
    RETURN NULL;
END
$body$
$f$, current_schema());
END
$do$;

-- 0004's per-field helper; the canonical row is built inline now.
DROP FUNCTION IF EXISTS audit_canonical_field(text);

ALTER FUNCTION audit_ledger_chain() OWNER TO orch_audit_owner;
ALTER FUNCTION audit_ledger_head_catch_up() OWNER TO orch_audit_owner;
REVOKE ALL ON FUNCTION audit_ledger_chain() FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_ledger_head_catch_up() FROM PUBLIC;

-- The writer may insert the entry's content and nothing else: not audit_id (an id it chose
-- could collide on purpose, and INSERT ... ON CONFLICT DO NOTHING would then skip the entry
-- after the trigger had advanced its chain head), nor the time or the chain columns, which the
-- trigger sets anyway.
REVOKE INSERT ON audit_ledger FROM orch_pipeline_writer;
GRANT INSERT (org_id, actor, endpoint, method, request_id, operation, entity_type, entity_id,
              before_data, after_data, reason, source) ON audit_ledger TO orch_pipeline_writer;
