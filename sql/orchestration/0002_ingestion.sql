-- Exactly-once ingestion: file ledger, quarantine, error groups, run summaries, activity indexes.

-- One row per ingested file, keyed by content hash: a re-dropped or renamed file is recognised.
-- Written in the same transaction as the file's events, so a crash leaves neither.
CREATE TABLE IF NOT EXISTS ingest_files (
    file_sha256  char(64)    PRIMARY KEY CHECK (file_sha256 ~ '^[0-9a-f]{64}$'),
    path         text        NOT NULL,
    size_bytes   bigint      NOT NULL CHECK (size_bytes >= 0),
    run_id       uuid        NOT NULL,
    lines        bigint      NOT NULL CHECK (lines >= 0),
    accepted     bigint      NOT NULL CHECK (accepted >= 0),
    quarantined  bigint      NOT NULL CHECK (quarantined >= 0),
    duplicates   bigint      NOT NULL CHECK (duplicates >= 0),
    collapsed    bigint      NOT NULL CHECK (collapsed >= 0),
    redactions   bigint      NOT NULL DEFAULT 0 CHECK (redactions >= 0),
    parse_ms     integer     NOT NULL DEFAULT 0,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS ingest_files_run_idx ON ingest_files (run_id);
CREATE INDEX IF NOT EXISTS ingest_files_path_idx ON ingest_files (path);

-- Lines that could not be accepted. Never dropped: the (redacted) raw line is kept for replay.
CREATE TABLE IF NOT EXISTS quarantine (
    quarantine_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id            uuid        NOT NULL,
    file_sha256       char(64),
    source_file       text        NOT NULL,
    source_line       integer     NOT NULL CHECK (source_line >= 1),
    byte_offset       bigint      NOT NULL DEFAULT 0,
    failure_type      text        NOT NULL CHECK (failure_type IN (
        'malformed_json', 'invalid_utf8', 'not_an_object', 'missing_field', 'wrong_type',
        'invalid_value', 'unknown_event_type', 'payload_too_large', 'future_timestamp')),
    detail            text        NOT NULL,
    json_pointer      text        NOT NULL DEFAULT '',
    raw_line          text        NOT NULL,
    raw_sha256        char(64)    NOT NULL,
    raw_truncated     boolean     NOT NULL DEFAULT false,
    quarantined_at    timestamptz NOT NULL DEFAULT now(),
    replay_attempts   integer     NOT NULL DEFAULT 0,
    last_replay_at    timestamptz,
    last_replay_detail text,
    replayed_at       timestamptz,
    replay_outcome    text        CHECK (replay_outcome IS NULL OR replay_outcome IN ('accepted', 'duplicate', 'collapsed')),
    replay_event_id   uuid
);

CREATE INDEX IF NOT EXISTS quarantine_pending_idx ON quarantine (failure_type, quarantine_id) WHERE replayed_at IS NULL;
CREATE INDEX IF NOT EXISTS quarantine_file_idx ON quarantine (file_sha256);

-- Identical errors (same stage, same normalised message) collapse into one group.
CREATE TABLE IF NOT EXISTS error_groups (
    fingerprint       char(64)    PRIMARY KEY,
    stage             text        NOT NULL,
    message_template  text        NOT NULL,
    sample_message    text        NOT NULL,
    count             bigint      NOT NULL CHECK (count >= 1),
    first_seen        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    sample_event_ids  uuid[]      NOT NULL DEFAULT '{}' CHECK (cardinality(sample_event_ids) <= 5),
    CONSTRAINT error_groups_seen_order CHECK (first_seen <= last_seen)
);

-- Every error line ever accepted, so a re-sent error is a duplicate rather than counted again.
CREATE TABLE IF NOT EXISTS error_occurrences (
    event_id     uuid        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    fingerprint  char(64)    NOT NULL REFERENCES error_groups (fingerprint) DEFERRABLE INITIALLY DEFERRED,
    run_id       uuid        NOT NULL,
    CONSTRAINT error_occurrences_pkey PRIMARY KEY (event_id, occurred_at)
);

CREATE INDEX IF NOT EXISTS error_occurrences_group_idx ON error_occurrences (fingerprint);

-- The one error event each group gets per ingestion run, carrying the run's count.
CREATE TABLE IF NOT EXISTS error_group_runs (
    fingerprint  char(64)    NOT NULL REFERENCES error_groups (fingerprint) DEFERRABLE INITIALLY DEFERRED,
    run_id       uuid        NOT NULL,
    event_id     uuid        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    count        bigint      NOT NULL CHECK (count >= 1),
    CONSTRAINT error_group_runs_pkey PRIMARY KEY (fingerprint, run_id)
);

-- One row per ingestion run: the summary shown in Dagster and by `ingest --json`.
CREATE TABLE IF NOT EXISTS ingest_runs (
    run_id       uuid        PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    summary      jsonb       NOT NULL CHECK (jsonb_typeof(summary) = 'object')
);

-- Activity queries: filter by project, agent type, event type, severity, status and time.
CREATE INDEX IF NOT EXISTS events_project_idx ON events ((payload->>'project_id'), occurred_at)
    WHERE payload ? 'project_id';
CREATE INDEX IF NOT EXISTS events_agent_type_idx ON events ((payload->>'agent_type'), occurred_at)
    WHERE event_type LIKE 'agent.%';
CREATE INDEX IF NOT EXISTS events_severity_idx ON events (severity, occurred_at) WHERE severity IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_status_idx ON events (status, occurred_at) WHERE status IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_payload_gin ON events USING gin (payload jsonb_path_ops);
