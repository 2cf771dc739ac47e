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

ALTER TABLE audit_chain_heads SET (fillfactor = 10);

-- The trigger runs with its owner's rights; pin its search_path to this schema with pg_temp
-- last, so no caller's objects can stand in for the ledger's.
SELECT set_config('search_path', quote_ident(current_schema()) || ', pg_temp', true);

CREATE OR REPLACE FUNCTION audit_ledger_chain()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
DECLARE
    -- '<chain>|<seq>|<txn_entry>' of this transaction's last entry, transaction-local.
    v_state  text := current_setting('orch.audit_chain', true);
    v_chain  text;
    v_seq    bigint;
    v_prev   bytea;
    v_rest   text;
BEGIN
    IF NEW.operation NOT IN ('create', 'update', 'delete', 'complete', 'grant', 'revoke',
                             'rebuild', 'repair', 'purge', 'replay')
       OR btrim(NEW.actor) = '' OR btrim(NEW.request_id) = '' OR NEW.entity_type = '' OR NEW.entity_id = '' THEN
        IF NEW.operation NOT IN ('create', 'update', 'delete', 'complete', 'grant', 'revoke',
                                 'rebuild', 'repair', 'purge', 'replay') THEN
            RAISE EXCEPTION 'audit_ledger: unknown operation %', NEW.operation USING ERRCODE = 'check_violation',
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
        || lpad((pg_backend_pid() % 32)::text, 2, '0');
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
        -- transaction's previous entry (found by its position, never trusted from the setting)
        -- and leave the head alone until commit (the deferred audit_ledger_head_catch_up).
        v_seq := split_part(v_state, '|', 2)::bigint;
        SELECT row_hash INTO v_prev FROM audit_ledger WHERE chain_id = v_chain AND chain_seq = v_seq;
    END IF;

    IF v_prev IS NOT NULL THEN
        NEW.chain_seq := v_seq + 1;
        NEW.txn_entry := split_part(v_state, '|', 3)::integer + 1;
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
            UPDATE audit_chain_heads h
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
            INSERT INTO audit_chain_heads (chain_id, last_seq, last_hash, prev_hash)
            VALUES (v_chain, 0, decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'))
            ON CONFLICT (chain_id) DO NOTHING;
        END LOOP;
        IF NEW.row_hash IS NULL THEN
            RAISE EXCEPTION 'audit chain head % could not be created', v_chain;
        END IF;
    END IF;
    -- Transaction-local: reverts with a rolled-back savepoint, together with its entries.
    PERFORM set_config('orch.audit_chain', v_chain || '|' || NEW.chain_seq || '|' || NEW.txn_entry, true);
    RETURN NEW;
END
$$;

ALTER FUNCTION audit_ledger_chain() OWNER TO orch_audit_owner;
REVOKE ALL ON FUNCTION audit_ledger_chain() FROM PUBLIC;
