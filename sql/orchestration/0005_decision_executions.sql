-- Policies, idempotent decision executions, and the alerts table the `notify` effect writes.
-- Every change to these tables is audited by lib/executions.py in the same transaction.

CREATE TABLE IF NOT EXISTS policies (
    policy_id   text        PRIMARY KEY CHECK (policy_id ~ '^[A-Za-z0-9_.:-]+$'),
    name        text        NOT NULL CHECK (btrim(name) <> ''),
    effect      text        NOT NULL CHECK (effect <> ''),
    enabled     boolean     NOT NULL DEFAULT false,
    dry_run     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per attempt. A live attempt claims its action_hash while pending and keeps it once it
-- succeeded; a failed attempt releases it, so the action can be retried as a new attempt.
-- Dry runs record a simulated row and never claim.
CREATE TABLE IF NOT EXISTS decision_executions (
    execution_id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy_id              text        NOT NULL REFERENCES policies (policy_id),
    effect                 text        NOT NULL,
    target_ref             text,
    payload                jsonb       NOT NULL,
    dry_run                boolean     NOT NULL,
    state                  text        NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    error_text             text,
    attempt                integer     NOT NULL CHECK (attempt >= 1),
    action_hash            char(64)    NOT NULL CHECK (action_hash ~ '^[0-9a-f]{64}$'),
    canonicalizer_version  smallint    NOT NULL CHECK (canonicalizer_version >= 1),
    claimed_at             timestamptz NOT NULL DEFAULT now(),
    lease_expires_at       timestamptz NOT NULL,
    executed_at            timestamptz,
    result                 jsonb,
    duplicate_skips        integer     NOT NULL DEFAULT 0 CHECK (duplicate_skips >= 0),
    last_duplicate_at      timestamptz,
    actor                  text        NOT NULL CHECK (btrim(actor) <> ''),
    request_id             text        NOT NULL CHECK (btrim(request_id) <> ''),
    CONSTRAINT decision_executions_failed_has_error CHECK (state <> 'failed' OR error_text IS NOT NULL),
    CONSTRAINT decision_executions_finished_has_time CHECK (state = 'pending' OR executed_at IS NOT NULL),
    CONSTRAINT decision_executions_dry_run_never_pending CHECK (NOT (dry_run AND state = 'pending'))
);

-- The idempotency barrier: at most one live claim (pending or succeeded) per action. Failed
-- attempts and dry runs are outside it, so a failed action stays retryable.
CREATE UNIQUE INDEX IF NOT EXISTS decision_executions_live_claim_uq
    ON decision_executions (action_hash) WHERE state IN ('pending', 'succeeded') AND NOT dry_run;
CREATE INDEX IF NOT EXISTS decision_executions_hash_idx ON decision_executions (action_hash, attempt);
CREATE INDEX IF NOT EXISTS decision_executions_pending_idx
    ON decision_executions (lease_expires_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS decision_executions_policy_idx ON decision_executions (policy_id, claimed_at);

-- Alerts raised by the `notify` effect (and, later, by failed checks and runs).
CREATE TABLE IF NOT EXISTS alerts (
    alert_id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    raised_at        timestamptz NOT NULL DEFAULT now(),
    source           text        NOT NULL CHECK (source <> ''),
    severity         text        NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    subject          text        NOT NULL CHECK (subject <> ''),
    message          text        NOT NULL,
    details          jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(details) = 'object'),
    execution_id     bigint      REFERENCES decision_executions (execution_id),
    acknowledged_at  timestamptz
);

CREATE INDEX IF NOT EXISTS alerts_raised_idx ON alerts (raised_at);
-- One alert per notify execution, whatever happens.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_execution_uq ON alerts (execution_id) WHERE execution_id IS NOT NULL;

-- The pipeline's writer role (created in 0004) changes these rows but never deletes them.
GRANT SELECT, INSERT, UPDATE ON policies TO orch_pipeline_writer;
GRANT SELECT, INSERT, UPDATE ON decision_executions TO orch_pipeline_writer;
GRANT SELECT, INSERT ON alerts TO orch_pipeline_writer;
GRANT UPDATE (acknowledged_at) ON alerts TO orch_pipeline_writer;
