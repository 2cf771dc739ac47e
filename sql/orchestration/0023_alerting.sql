-- Alerting on failed asset checks, stale assets and failed runs (docs/runbooks/alerting.md).
--
-- The Dagster sensors of defs/alerting read check evaluations, freshness state changes and run
-- failures, and lib/alerting folds them into one streak per source:
--
--   source                          a streak of                     resolved by
--   check:<asset>:<check>           failed evaluations of a check   its next passing evaluation
--   freshness:<asset>               WARN/FAIL freshness states      the asset's state back to PASS
--   run:<job>                       failed runs of a job            a later successful run of it
--
-- A streak raises at most one alert (when a failure reaches the minimum severity), may escalate it
-- once (warning -> error) and resolves it once. Each of these writes one notice in the same
-- transaction (an outbox): the sinks (the webhook, stderr) deliver notices after commit, so an alert
-- that is recorded is never lost to a webhook that is down, and every webhook attempt is a row.
-- Alerts written by the `notify` decision effect (source policy:<id>) keep working unchanged: they
-- belong to no streak and never resolve.

ALTER TABLE alerts
    ADD COLUMN IF NOT EXISTS check_key        text,          -- <asset>:<check>, for check alerts
    ADD COLUMN IF NOT EXISTS asset_key        text,          -- the asset of a check or freshness alert
    ADD COLUMN IF NOT EXISTS run_id           text,          -- the Dagster run that raised the alert
    ADD COLUMN IF NOT EXISTS job_name         text,
    ADD COLUMN IF NOT EXISTS link_path        text,          -- a path in the Dagster UI, e.g. /runs/<id>
    ADD COLUMN IF NOT EXISTS runbook          text,          -- docs/runbooks/<file>.md#<section>
    ADD COLUMN IF NOT EXISTS failed_at        timestamptz,   -- when the streak's first failure happened
    ADD COLUMN IF NOT EXISTS last_failed_at   timestamptz,
    ADD COLUMN IF NOT EXISTS occurrences      integer NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS resolved_at      timestamptz,   -- when it passed again
    ADD COLUMN IF NOT EXISTS resolution       text,          -- the passing evaluation, in one line
    ADD COLUMN IF NOT EXISTS acknowledged_by  text,
    ADD COLUMN IF NOT EXISTS ack_reason       text;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'alerts_occurrences_positive') THEN
        ALTER TABLE alerts ADD CONSTRAINT alerts_occurrences_positive CHECK (occurrences >= 1);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'alerts_ack_says_who_and_why') THEN
        ALTER TABLE alerts ADD CONSTRAINT alerts_ack_says_who_and_why CHECK (
            acknowledged_by IS NULL OR (acknowledged_at IS NOT NULL AND btrim(acknowledged_by) <> ''
                                        AND btrim(coalesce(ack_reason, '')) <> ''));
    END IF;
END
$$;

-- At most one unresolved alert per streak source (policy alerts are outside streaks).
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_streak_uq
    ON alerts (source) WHERE resolved_at IS NULL AND split_part(source, ':', 1) IN ('check', 'freshness', 'run');
CREATE INDEX IF NOT EXISTS alerts_unresolved_idx ON alerts (raised_at) WHERE resolved_at IS NULL;

-- The state of every source seen, failing or passing: which streak is current, the alert it raised
-- (NULL while its failures stay below the minimum severity), and the last observation applied, so
-- that an evaluation read twice (a sensor tick retried after a crash) changes nothing.
CREATE TABLE IF NOT EXISTS alert_streaks (
    source            text        PRIMARY KEY CHECK (split_part(source, ':', 1) IN ('check', 'freshness', 'run')),
    state             text        NOT NULL CHECK (state IN ('failing', 'passing')),
    severity          text        CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    started_at        timestamptz NOT NULL,   -- when the current state began (the observation's time)
    failures          integer     NOT NULL DEFAULT 0 CHECK (failures >= 0),
    alert_id          bigint      REFERENCES alerts (alert_id),
    last_observed_at  timestamptz NOT NULL,
    last_event_ref    text        NOT NULL,   -- which Dagster event (run id, storage id) was applied last
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_streaks_failing_has_severity CHECK (state = 'passing' OR severity IS NOT NULL),
    CONSTRAINT alert_streaks_passing_has_no_alert CHECK (state = 'failing' OR alert_id IS NULL)
);

-- What the sinks are told: one row per raised, escalated or resolved alert, written with it.
--   pending    waiting for delivery (leased_until: a deliverer holds it until then)
--   delivered  the webhook accepted it
--   failed     the webhook refused it, or its attempts ran out (see alert_delivery_attempts)
--   unsent     no webhook was configured when it was delivered (stderr only)
CREATE TABLE IF NOT EXISTS alert_notices (
    notice_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id      bigint      NOT NULL REFERENCES alerts (alert_id),
    kind          text        NOT NULL CHECK (kind IN ('raised', 'escalated', 'resolved')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    state         text        NOT NULL DEFAULT 'pending'
                              CHECK (state IN ('pending', 'delivered', 'failed', 'unsent')),
    attempts      integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),   -- in the current round
    leased_until  timestamptz,
    finished_at   timestamptz,
    CONSTRAINT alert_notices_one_per_kind UNIQUE (alert_id, kind),
    CONSTRAINT alert_notices_finished_has_time CHECK (state = 'pending' OR finished_at IS NOT NULL)
);

CREATE INDEX IF NOT EXISTS alert_notices_pending_idx ON alert_notices (notice_id) WHERE state = 'pending';

-- Every webhook attempt, successful or not. `target` is the webhook's scheme and host only: the
-- path of an incoming-webhook URL is its secret.
CREATE TABLE IF NOT EXISTS alert_delivery_attempts (
    attempt_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notice_id     bigint      NOT NULL REFERENCES alert_notices (notice_id),
    sink          text        NOT NULL CHECK (sink IN ('webhook')),
    attempt       integer     NOT NULL CHECK (attempt >= 1),
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    outcome       text        NOT NULL CHECK (outcome IN ('delivered', 'failed')),
    http_status   integer,
    error         text,
    duration_ms   integer     NOT NULL CHECK (duration_ms >= 0),
    target        text        NOT NULL,
    CONSTRAINT alert_delivery_attempts_failed_says_why CHECK (outcome = 'delivered' OR error IS NOT NULL),
    CONSTRAINT alert_delivery_attempts_once UNIQUE (notice_id, sink, attempt)
);

-- The pipeline's writer role changes these rows but never deletes them; attempts are append-only.
GRANT UPDATE (severity, details, occurrences, last_failed_at, resolved_at, resolution, acknowledged_by,
              ack_reason) ON alerts TO orch_pipeline_writer;
GRANT SELECT, INSERT, UPDATE ON alert_streaks, alert_notices TO orch_pipeline_writer;
GRANT SELECT, INSERT ON alert_delivery_attempts TO orch_pipeline_writer;
