-- Backups of the orchestration DB and the restore drills that prove them (lib/restore/,
-- docs/runbooks/restore.md).
--
-- A backup is a pg_dump (custom format) plus a manifest computed in the dump's own snapshot: the
-- schema_migrations head and checksums, per-table row counts, content hashes of the critical
-- tables, the audit checkpoint head, the newest received_at, and the dump file's sha256 and size.
-- The manifest is also written beside the dump as JSON, so a backup can be verified and restored
-- when this table is gone with the database it describes.
--
-- A drill restores one backup into a scratch database it creates, verifies the copy against the
-- manifest and records a verdict here. The row is written before the scratch database exists, so
-- a drill killed at any point leaves a row naming what to clean up; the next drill drops the
-- database once the killed drill's advisory lock (held for its whole life) is free.

CREATE TABLE IF NOT EXISTS backups (
    backup_id       text        PRIMARY KEY CHECK (backup_id ~ '^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$'),
    -- the moment of the dump's snapshot: what the backup holds is the database as of then
    taken_at        timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    dump_path       text        NOT NULL,
    manifest_path   text        NOT NULL,
    dump_sha256     char(64)    NOT NULL CHECK (dump_sha256 ~ '^[0-9a-f]{64}$'),
    dump_bytes      bigint      NOT NULL CHECK (dump_bytes > 0),
    server_version  text        NOT NULL,
    pg_dump_version text        NOT NULL,
    duration_ms     integer     NOT NULL CHECK (duration_ms >= 0),
    created_by      text        NOT NULL,
    manifest        jsonb       NOT NULL CHECK (jsonb_typeof(manifest) = 'object')
);

CREATE INDEX IF NOT EXISTS backups_taken_at_idx ON backups (taken_at);

CREATE TABLE IF NOT EXISTS restore_drills (
    drill_id           uuid        PRIMARY KEY,
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    -- running: in progress (or killed: see the advisory lock); passed / failed: verified or not;
    -- error: could not run; abandoned: killed, its scratch database removed by a later drill
    state              text        NOT NULL DEFAULT 'running'
                                   CHECK (state IN ('running', 'passed', 'failed', 'error', 'abandoned')),
    -- no foreign key: a drill may restore a backup known only by its file and manifest
    backup_id          text,
    -- the scratch database: named before it is created, dropped at the end unless kept
    scratch_db         text        UNIQUE CHECK (scratch_db ~ '^orch_drill_[0-9a-f]{32}$'),
    scratch_dropped_at timestamptz,
    kept               boolean     NOT NULL DEFAULT false,
    passed             boolean,
    rto_s              double precision CHECK (rto_s >= 0),
    rpo_s              double precision,
    verdict            jsonb       CHECK (verdict IS NULL OR jsonb_typeof(verdict) = 'object'),
    error              text,
    created_by         text        NOT NULL,
    host               text        NOT NULL,
    pid                integer     NOT NULL,
    CONSTRAINT restore_drills_finished CHECK ((state = 'running') = (finished_at IS NULL)),
    CONSTRAINT restore_drills_verdict CHECK (state NOT IN ('passed', 'failed') OR
                                             (passed IS NOT NULL AND verdict IS NOT NULL)),
    CONSTRAINT restore_drills_error_says_why CHECK (state <> 'error' OR error IS NOT NULL)
);

CREATE INDEX IF NOT EXISTS restore_drills_started_idx ON restore_drills (started_at);
-- the drills whose scratch database may still exist: what the cleanup of leftovers reads
CREATE INDEX IF NOT EXISTS restore_drills_scratch_left_idx ON restore_drills (drill_id)
    WHERE scratch_db IS NOT NULL AND scratch_dropped_at IS NULL;
