-- Immutable, hash-chained audit ledger of critical mutations.
--
-- Roles (cluster-global, so created idempotently; many databases on one cluster share them):
--   orch_audit_owner      NOLOGIN. Owns the ledger, its chain heads and its trigger functions.
--                         Nobody logs in as it; only a superuser (or a member) can alter the ledger.
--   orch_pipeline_writer  NOLOGIN. The role the pipeline writes as: INSERT and SELECT on the
--                         ledger, SELECT on the chain heads, nothing else here.
-- Deployment: grant the pipeline's login role membership in orch_pipeline_writer only
--   (GRANT orch_pipeline_writer TO pipeline_login;), never in orch_audit_owner, and do not run
--   the pipeline as a superuser. Migrations run as a superuser (ALTER ... OWNER needs it).
--   The `audit_guard_present` asset check verifies this setup on every run.
--
-- Tamper evidence: a BEFORE INSERT trigger stamps each row with chain_id, chain_seq, prev_hash
-- and row_hash = sha256(prev_hash || canonical row). Chains are per UTC day and per writer slot
-- (backend pid mod 32), so concurrent writers only wait for each other when their connections
-- share a slot. The canonical row format is documented in lib/audit.py, which recomputes every
-- chain independently (verify_chain).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orch_audit_owner') THEN
        CREATE ROLE orch_audit_owner NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created concurrently by a migration of another database on this cluster
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orch_pipeline_writer') THEN
        CREATE ROLE orch_pipeline_writer NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- Values are validated by the chain trigger rather than by CHECK constraints: a constraint
-- expression is prepared again for every INSERT statement, a trigger's plan once per session,
-- and single-row inserts are this table's only workload.
CREATE TABLE IF NOT EXISTS audit_ledger (
    audit_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    org_id       text,
    actor        text        NOT NULL,
    endpoint     text,
    method       text,
    request_id   text        NOT NULL,
    -- create, update, delete, complete, grant, revoke, rebuild, repair, purge or replay
    operation    text        NOT NULL,
    entity_type  text        NOT NULL,
    entity_id    text        NOT NULL,
    before_data  jsonb,
    after_data   jsonb,
    reason       text,
    source       text,
    -- Set by the chain trigger; whatever a writer supplies is overwritten.
    chain_id     text        NOT NULL,
    chain_seq    bigint      NOT NULL,
    txn_entry    integer     NOT NULL DEFAULT 1,  -- 1 for a transaction's first entry on its chain, 2, ...
    prev_hash    bytea       NOT NULL,  -- sha256, 32 bytes
    row_hash     bytea       NOT NULL,
    CONSTRAINT audit_ledger_chain_position UNIQUE (chain_id, chain_seq)
);

CREATE INDEX IF NOT EXISTS audit_ledger_entity_idx ON audit_ledger (entity_type, entity_id, occurred_at);
CREATE INDEX IF NOT EXISTS audit_ledger_actor_idx ON audit_ledger (actor, occurred_at);
CREATE INDEX IF NOT EXISTS audit_ledger_request_idx ON audit_ledger (request_id);
-- Append-only and time-ordered: a BRIN index is tiny and costs inserts almost nothing.
CREATE INDEX IF NOT EXISTS audit_ledger_occurred_brin ON audit_ledger USING brin (occurred_at);

-- The last link of every chain (and the one before it). The trigger updates a chain's head row
-- to append to that chain, which serialises writers of the same chain and only them. A deleted
-- tail is detected because the head still names it.
CREATE TABLE IF NOT EXISTS audit_chain_heads (
    chain_id     text        PRIMARY KEY,
    last_seq     bigint      NOT NULL CHECK (last_seq >= 0),
    last_hash    bytea       NOT NULL,
    prev_hash    bytea       NOT NULL,
    last_id      bigint,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One field of the canonical row: '~' for NULL, else '<length>:<text>' (unambiguous).
CREATE OR REPLACE FUNCTION audit_canonical_field(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_value IS NULL THEN '~' ELSE length(p_value)::text || ':' || p_value END
$$;

-- The trigger below runs with its owner's rights; pin its search_path to this schema with
-- pg_temp last, so no caller's objects can stand in for the ledger's.
SELECT set_config('search_path', quote_ident(current_schema()) || ', pg_temp', true);

-- BEFORE INSERT: validate, stamp time and chain position, compute the hashes.
-- SECURITY DEFINER so that writers, who have no rights on audit_chain_heads, can advance it.
CREATE OR REPLACE FUNCTION audit_ledger_chain()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
DECLARE
    v_chain  text;
    v_state  text := current_setting('orch.audit_chain', true);
    v_seq    bigint;
    v_prev   bytea;
    v_head   text;
    v_tail   text;
BEGIN
    IF NEW.operation NOT IN ('create', 'update', 'delete', 'complete', 'grant', 'revoke',
                             'rebuild', 'repair', 'purge', 'replay') THEN
        RAISE EXCEPTION 'audit_ledger: unknown operation %', NEW.operation USING ERRCODE = 'check_violation',
            HINT = 'use create, update, delete, complete, grant, revoke, rebuild, repair, purge or replay';
    END IF;
    IF btrim(NEW.actor) = '' OR btrim(NEW.request_id) = '' THEN
        RAISE EXCEPTION 'audit_ledger: actor and request_id must not be blank' USING ERRCODE = 'check_violation',
            HINT = 'pass actor=... and request_id=... to record_audit()';
    END IF;
    IF NEW.entity_type = '' OR NEW.entity_id = '' THEN
        RAISE EXCEPTION 'audit_ledger: entity_type and entity_id must not be blank' USING ERRCODE = 'check_violation';
    END IF;

    -- The database stamps the time: a writer cannot back-date an entry.
    NEW.occurred_at := now();
    -- The chain of this day and of this connection's slot (backend pid mod 32): a transaction
    -- appends only to one chain, and concurrent transactions (other backends) mostly to others.
    v_chain := to_char(NEW.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') || '/'
        || lpad((pg_backend_pid() % 32)::text, 2, '0');
    NEW.chain_id := v_chain;

    -- A later entry of a transaction that already holds this chain's head: link to the
    -- transaction's previous entry (found by its position, never trusted from the setting) and
    -- leave the head alone until commit, so a long transaction does not pile up head versions.
    IF v_state IS NOT NULL AND split_part(v_state, '|', 1) = v_chain THEN
        v_seq := split_part(v_state, '|', 2)::bigint;
        SELECT row_hash INTO v_prev FROM audit_ledger WHERE chain_id = v_chain AND chain_seq = v_seq;
        IF FOUND THEN
            NEW.txn_entry := split_part(v_state, '|', 3)::integer + 1;
        END IF;
    END IF;
    IF v_prev IS NULL THEN
        NEW.txn_entry := 1;
    END IF;

    -- Canonical row, version 1 (mirrored by lib/audit.py: canonical_row); chain_seq goes between.
    v_head := 'v1' || audit_canonical_field(NEW.audit_id::text) || audit_canonical_field(v_chain);
    v_tail := concat(
        audit_canonical_field(NEW.txn_entry::text),
        audit_canonical_field((extract(epoch FROM NEW.occurred_at) * 1000000)::bigint::text),
        audit_canonical_field(NEW.org_id),
        audit_canonical_field(NEW.actor),
        audit_canonical_field(NEW.endpoint),
        audit_canonical_field(NEW.method),
        audit_canonical_field(NEW.request_id),
        audit_canonical_field(NEW.operation),
        audit_canonical_field(NEW.entity_type),
        audit_canonical_field(NEW.entity_id),
        audit_canonical_field(NEW.before_data::text),
        audit_canonical_field(NEW.after_data::text),
        audit_canonical_field(NEW.reason),
        audit_canonical_field(NEW.source));

    IF v_prev IS NOT NULL THEN
        NEW.chain_seq := v_seq + 1;
        NEW.prev_hash := v_prev;
        NEW.row_hash := sha256(v_prev || convert_to(v_head || audit_canonical_field(NEW.chain_seq::text) || v_tail, 'UTF8'));
    ELSE
        -- The transaction's first entry on the chain. One statement locks the head, links to it
        -- and advances it; a concurrent writer of the same chain waits for this transaction to
        -- end, then re-evaluates against the committed head.
        FOR attempt IN 1..2 LOOP
            UPDATE audit_chain_heads h
               SET last_seq = h.last_seq + 1,
                   prev_hash = h.last_hash,
                   last_hash = sha256(h.last_hash
                       || convert_to(v_head || audit_canonical_field((h.last_seq + 1)::text) || v_tail, 'UTF8')),
                   last_id = NEW.audit_id,
                   updated_at = NEW.occurred_at
             WHERE h.chain_id = v_chain
            RETURNING h.last_seq, h.prev_hash, h.last_hash INTO NEW.chain_seq, NEW.prev_hash, NEW.row_hash;
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

-- AFTER INSERT, deferred to commit, for a transaction's later entries only: move the head to
-- the transaction's last entry, once.
CREATE OR REPLACE FUNCTION audit_ledger_head_catch_up()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_ledger WHERE chain_id = NEW.chain_id AND chain_seq > NEW.chain_seq) THEN
        UPDATE audit_chain_heads
           SET last_seq = NEW.chain_seq, prev_hash = NEW.prev_hash, last_hash = NEW.row_hash,
               last_id = NEW.audit_id, updated_at = NEW.occurred_at
         WHERE chain_id = NEW.chain_id AND last_seq < NEW.chain_seq;
    END IF;
    RETURN NULL;
END
$$;

-- The guard: entries are never changed or removed, whoever asks.
CREATE OR REPLACE FUNCTION audit_ledger_refuse_change()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'audit_ledger is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'record a correcting entry with lib/audit.py record_audit() instead of changing history';
END
$$;

CREATE OR REPLACE TRIGGER audit_ledger_chain
    BEFORE INSERT ON audit_ledger
    FOR EACH ROW EXECUTE FUNCTION audit_ledger_chain();

DO $$
BEGIN
    -- Constraint triggers cannot be replaced; create it once.
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'audit_ledger'::regclass AND tgname = 'audit_ledger_head_catch_up') THEN
        CREATE CONSTRAINT TRIGGER audit_ledger_head_catch_up
            AFTER INSERT ON audit_ledger
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.txn_entry > 1)
            EXECUTE FUNCTION audit_ledger_head_catch_up();
    END IF;
END
$$;

CREATE OR REPLACE TRIGGER audit_ledger_append_only
    BEFORE UPDATE OR DELETE ON audit_ledger
    FOR EACH ROW EXECUTE FUNCTION audit_ledger_refuse_change();

CREATE OR REPLACE TRIGGER audit_ledger_no_truncate
    BEFORE TRUNCATE ON audit_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION audit_ledger_refuse_change();

-- Ownership and privileges.
ALTER TABLE audit_ledger OWNER TO orch_audit_owner;
ALTER TABLE audit_chain_heads OWNER TO orch_audit_owner;
ALTER FUNCTION audit_ledger_chain() OWNER TO orch_audit_owner;
ALTER FUNCTION audit_ledger_head_catch_up() OWNER TO orch_audit_owner;
ALTER FUNCTION audit_ledger_refuse_change() OWNER TO orch_audit_owner;
ALTER FUNCTION audit_canonical_field(text) OWNER TO orch_audit_owner;

REVOKE ALL ON audit_ledger FROM PUBLIC;
REVOKE ALL ON audit_chain_heads FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_ledger_chain() FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_ledger_head_catch_up() FROM PUBLIC;
GRANT SELECT, INSERT ON audit_ledger TO orch_pipeline_writer;
GRANT SELECT ON audit_chain_heads TO orch_pipeline_writer;
