-- Audit chain trigger, second version: the same chains, canonical row (version 1) and hashes as
-- 0004_audit_ledger.sql, for less work per entry. Rows written by either version verify alike.
--
-- Why it is shaped this way: PL/pgSQL prepares each expression it evaluates once per
-- transaction, and audited transactions usually write one entry, so every expression of the
-- trigger was compiled again for every entry (a third of the trigger's time). A transaction's
-- first entry now takes one statement, which computes the chain, the time, the canonical row
-- and the hash and advances the head; the PL/pgSQL around it is a handful of expressions.
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
    v_micros text;
    v_before text;
    v_after  text;
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

    IF v_state <> '' THEN
        -- A later entry of a transaction that already holds its chain's head: link to the
        -- transaction's previous entry (found by its position, never trusted from the setting)
        -- and leave the head alone until commit (the deferred audit_ledger_head_catch_up).
        v_chain := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD') || '/'
            || lpad((pg_backend_pid() % 32)::text, 2, '0');
        IF split_part(v_state, '|', 1) = v_chain THEN
            v_seq := split_part(v_state, '|', 2)::bigint;
            SELECT row_hash INTO v_prev FROM audit_ledger WHERE chain_id = v_chain AND chain_seq = v_seq;
        END IF;
    END IF;

    IF v_prev IS NOT NULL THEN
        NEW.occurred_at := now();
        NEW.chain_id := v_chain;
        NEW.chain_seq := v_seq + 1;
        NEW.txn_entry := split_part(v_state, '|', 3)::integer + 1;
        NEW.prev_hash := v_prev;
        v_micros := ((extract(epoch FROM NEW.occurred_at) * 1000000)::bigint)::text;
        v_before := NEW.before_data::text;
        v_after := NEW.after_data::text;
        -- Canonical row, version 1 (mirrored by lib/audit.py: canonical_row): each field '~' for
        -- NULL, else '<length>:<text>'.
        NEW.row_hash := sha256(v_prev || convert_to(concat(
            'v1', length(NEW.audit_id::text), ':', NEW.audit_id, length(v_chain), ':', v_chain,
            length(NEW.chain_seq::text), ':', NEW.chain_seq,
            length(NEW.txn_entry::text), ':', NEW.txn_entry,
            length(v_micros), ':', v_micros,
            coalesce(length(NEW.org_id) || ':' || NEW.org_id, '~'),
            length(NEW.actor), ':', NEW.actor,
            coalesce(length(NEW.endpoint) || ':' || NEW.endpoint, '~'),
            coalesce(length(NEW.method) || ':' || NEW.method, '~'),
            length(NEW.request_id), ':', NEW.request_id,
            length(NEW.operation), ':', NEW.operation,
            length(NEW.entity_type), ':', NEW.entity_type,
            length(NEW.entity_id), ':', NEW.entity_id,
            coalesce(length(v_before) || ':' || v_before, '~'),
            coalesce(length(v_after) || ':' || v_after, '~'),
            coalesce(length(NEW.reason) || ':' || NEW.reason, '~'),
            coalesce(length(NEW.source) || ':' || NEW.source, '~')), 'UTF8'));
    ELSE
        -- The transaction's first entry on its chain: the chain of this UTC day and of this
        -- connection's slot (backend pid mod 32). One statement locks the head, links to it,
        -- advances it and returns the entry's position and hashes; a concurrent writer of the
        -- same chain waits for this transaction to end, then re-evaluates against the committed
        -- head. The canonical row is the same as above, with txn_entry 1.
        FOR attempt IN 1..2 LOOP
            UPDATE audit_chain_heads h
               SET last_seq = h.last_seq + 1,
                   prev_hash = h.last_hash,
                   last_hash = sha256(h.last_hash || convert_to(concat(
                       c.head, length((h.last_seq + 1)::text), ':', h.last_seq + 1, c.tail), 'UTF8')),
                   last_id = NEW.audit_id,
                   updated_at = c.at
              FROM (SELECT x.chain_id, x.at,
                           concat('v1', length(NEW.audit_id::text), ':', NEW.audit_id,
                                  length(x.chain_id), ':', x.chain_id) AS head,
                           concat('1:1', length(x.micros), ':', x.micros,
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
                                  coalesce(length(NEW.source) || ':' || NEW.source, '~')) AS tail
                      FROM (SELECT now() AS at,
                                   to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD') || '/'
                                       || lpad((pg_backend_pid() % 32)::text, 2, '0') AS chain_id,
                                   ((extract(epoch FROM now()) * 1000000)::bigint)::text AS micros) x) c
             WHERE h.chain_id = c.chain_id
            RETURNING c.chain_id, c.at, 1, h.last_seq, h.prev_hash, h.last_hash
                 INTO NEW.chain_id, NEW.occurred_at, NEW.txn_entry, NEW.chain_seq, NEW.prev_hash, NEW.row_hash;
            EXIT WHEN FOUND;
            -- First entry of the chain: create its head (a concurrent creator wins harmlessly).
            INSERT INTO audit_chain_heads (chain_id, last_seq, last_hash, prev_hash)
            VALUES (to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD') || '/'
                        || lpad((pg_backend_pid() % 32)::text, 2, '0'),
                    0, decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'))
            ON CONFLICT (chain_id) DO NOTHING;
        END LOOP;
        IF NEW.row_hash IS NULL THEN
            RAISE EXCEPTION 'audit chain head could not be created';
        END IF;
    END IF;
    -- Transaction-local: reverts with a rolled-back savepoint, together with its entries.
    PERFORM set_config('orch.audit_chain', NEW.chain_id || '|' || NEW.chain_seq || '|' || NEW.txn_entry, true);
    RETURN NEW;
END
$$;

ALTER FUNCTION audit_ledger_chain() OWNER TO orch_audit_owner;
REVOKE ALL ON FUNCTION audit_ledger_chain() FROM PUBLIC;
