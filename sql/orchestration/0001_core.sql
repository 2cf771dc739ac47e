-- Core tables of the orchestration DB: raw events, artifacts and metrics.
-- Forward-only and idempotent: every statement is IF NOT EXISTS; nothing is dropped.

-- Raw events. The primary key includes occurred_at so the table can be range-partitioned
-- by time later (a partitioned table's unique keys must contain the partition key).
CREATE TABLE IF NOT EXISTS events (
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    session_id   text,
    task_id      text,
    source       text,
    stage        text,
    severity     text,
    status       text,
    duration_ms  bigint,
    payload      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    received_at  timestamptz NOT NULL DEFAULT now(),
    source_file  text,
    source_line  integer,
    CONSTRAINT events_pkey PRIMARY KEY (event_id, occurred_at),
    CONSTRAINT events_event_type_check CHECK (event_type IN (
        'task_start', 'task_end', 'command_start', 'command_end', 'decision', 'artifact_emit',
        'error', 'metric', 'policy_violation',
        'agent.started', 'agent.progress', 'agent.completed', 'agent.conflict_detected',
        'agent.paused', 'agent.error')),
    CONSTRAINT events_severity_check CHECK (severity IS NULL OR severity IN (
        'debug', 'info', 'success', 'warning', 'error', 'critical')),
    CONSTRAINT events_status_check CHECK (status IS NULL OR status IN (
        'started', 'in_progress', 'completed', 'succeeded', 'paused', 'failed', 'conflict', 'skipped')),
    CONSTRAINT events_duration_check CHECK (duration_ms IS NULL OR duration_ms >= 0),
    CONSTRAINT events_source_line_check CHECK (source_line IS NULL OR source_line >= 1),
    CONSTRAINT events_payload_object_check CHECK (jsonb_typeof(payload) = 'object')
);

CREATE INDEX IF NOT EXISTS events_occurred_at_idx ON events (occurred_at);
CREATE INDEX IF NOT EXISTS events_session_idx ON events (session_id, occurred_at);
CREATE INDEX IF NOT EXISTS events_task_idx ON events (task_id, occurred_at) WHERE task_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_type_idx ON events (event_type, occurred_at);

-- Files (build outputs, test reports, ...) announced by artifact_emit events.
CREATE TABLE IF NOT EXISTS artifacts (
    artifact_id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id            uuid        NOT NULL,
    occurred_at         timestamptz NOT NULL,
    session_id          text,
    task_id             text,
    path                text        NOT NULL,
    size_bytes          bigint      NOT NULL CHECK (size_bytes >= 0),
    sha256              char(64)    CHECK (sha256 IS NULL OR sha256 ~ '^[0-9a-f]{64}$'),
    hash_skipped_reason text,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT artifacts_event_unique UNIQUE (event_id),
    -- An artifact is either hashed or says why it was not.
    CONSTRAINT artifacts_hash_or_reason CHECK (sha256 IS NOT NULL OR hash_skipped_reason IS NOT NULL)
);

CREATE INDEX IF NOT EXISTS artifacts_session_idx ON artifacts (session_id, occurred_at);

-- Numeric measurements: pipeline telemetry and metric events.
CREATE TABLE IF NOT EXISTS metrics (
    metric_id    bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text             NOT NULL CHECK (name <> ''),
    value        double precision NOT NULL,
    unit         text,
    tags         jsonb            NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(tags) = 'object'),
    session_id   text,
    task_id      text,
    event_id     uuid,
    recorded_at  timestamptz      NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS metrics_name_time_idx ON metrics (name, recorded_at);
CREATE INDEX IF NOT EXISTS metrics_session_idx ON metrics (session_id) WHERE session_id IS NOT NULL;
