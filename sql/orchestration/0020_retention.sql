-- Retention: the manifest of every Parquet archive of a day of `events` or `metrics`, and the
-- daily partitions (or chunks) retention has seen, so that a day dropped without a verified
-- archive is found (docs/runbooks/retention.md).
--
-- A manifest row is written after its file is durable (status `exported`), and moves on only
-- through these transitions, enforced below:
--
--   exported  -> verified | failed | superseded    the file was read back and proven, or not
--   verified  -> purged | failed | superseded      the day was dropped, or a late row means a re-archive
--   purged    -> restored                          the archived rows were loaded back into the live table
--   failed, superseded, restored: final
--
-- What a manifest says about its archive (table, range, rows, hash, file) never changes, and no
-- manifest is ever deleted: after a purge it is the only record of where the rows went.

CREATE TABLE IF NOT EXISTS archive_manifests (
    manifest_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name         text        NOT NULL CHECK (table_name IN ('events', 'metrics')),
    partition_name     text        NOT NULL,   -- the partition, or the chunk (schema-qualified)
    layout             text        NOT NULL CHECK (layout IN ('native', 'timescaledb')),
    day                date        NOT NULL,
    -- 1, or n > 1 for the n-th archive of rows of the day that arrived after part n-1 was purged
    part               integer     NOT NULL DEFAULT 1 CHECK (part >= 1),
    range_start        timestamptz NOT NULL,
    range_end          timestamptz NOT NULL,
    -- computed inside Postgres over the exported rows (lib/retention/canonical.py)
    row_count          bigint      CHECK (row_count >= 0),
    content_hash       bigint,
    columns            jsonb       NOT NULL CHECK (jsonb_typeof(columns) = 'array'),
    -- events only: {source_file: rows} of the archived rows that came from a landing file
    source_file_counts jsonb       CHECK (source_file_counts IS NULL OR jsonb_typeof(source_file_counts) = 'object'),
    file_uri           text        NOT NULL,
    file_sha256        char(64)    CHECK (file_sha256 IS NULL OR file_sha256 ~ '^[0-9a-f]{64}$'),
    file_bytes         bigint      CHECK (file_bytes IS NULL OR file_bytes > 0),
    schema_version     integer     NOT NULL,   -- the schema_migrations head when the day was archived
    status             text        NOT NULL CHECK (status IN ('exported', 'verified', 'purged', 'failed',
                                                              'superseded', 'restored')),
    error              text,
    export_ms          integer     CHECK (export_ms IS NULL OR export_ms >= 0),
    verify_ms          integer     CHECK (verify_ms IS NULL OR verify_ms >= 0),
    exported_at        timestamptz NOT NULL DEFAULT now(),
    verified_at        timestamptz,
    purged_at          timestamptz,
    status_changed_at  timestamptz NOT NULL DEFAULT now(),
    superseded_by      bigint      REFERENCES archive_manifests (manifest_id),
    CONSTRAINT archive_manifests_range CHECK (range_end > range_start),
    -- only an export that failed before its file was complete lacks the file's hash or its rows
    CONSTRAINT archive_manifests_complete CHECK (
        status = 'failed'
        OR (row_count IS NOT NULL AND content_hash IS NOT NULL AND file_sha256 IS NOT NULL AND file_bytes IS NOT NULL)),
    CONSTRAINT archive_manifests_failed_says_why CHECK (status <> 'failed' OR error IS NOT NULL)
);

-- One archive in force per day and part: exported or verified (the rows are still live), or purged.
CREATE UNIQUE INDEX IF NOT EXISTS archive_manifests_in_force
    ON archive_manifests (table_name, day, part) WHERE status IN ('exported', 'verified', 'purged');
CREATE INDEX IF NOT EXISTS archive_manifests_day_idx ON archive_manifests (table_name, day, manifest_id);

CREATE OR REPLACE FUNCTION archive_manifests_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    moving constant text[] := ARRAY['status', 'error', 'verify_ms', 'verified_at', 'purged_at',
                                    'status_changed_at', 'superseded_by'];
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'archive_manifests keeps every archive''s record: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'a manifest only changes status (see docs/runbooks/retention.md)';
    END IF;
    IF (to_jsonb(NEW) - moving) IS DISTINCT FROM (to_jsonb(OLD) - moving) THEN
        RAISE EXCEPTION 'manifest % describes its archive for good: only its status may change',
                        OLD.manifest_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'archive the day again: a new manifest supersedes this one';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
           (OLD.status = 'exported' AND NEW.status IN ('verified', 'failed', 'superseded'))
        OR (OLD.status = 'verified' AND NEW.status IN ('purged', 'failed', 'superseded'))
        OR (OLD.status = 'purged' AND NEW.status = 'restored')) THEN
        RAISE EXCEPTION 'manifest % cannot go from % to %', OLD.manifest_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation',
                  HINT = 'exported -> verified|failed|superseded, verified -> purged|failed|superseded, '
                         'purged -> restored';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER archive_manifests_guard
    BEFORE UPDATE OR DELETE ON archive_manifests FOR EACH ROW EXECUTE FUNCTION archive_manifests_guard();
CREATE OR REPLACE TRIGGER archive_manifests_no_truncate
    BEFORE TRUNCATE ON archive_manifests FOR EACH STATEMENT EXECUTE FUNCTION archive_manifests_guard();

-- Every daily partition (or chunk) retention has seen. One that is gone from the catalogue with no
-- purged manifest for its day was dropped without a verified archive: `nothing_purged_unarchived`.
CREATE TABLE IF NOT EXISTS retention_partitions_seen (
    table_name     text        NOT NULL CHECK (table_name IN ('events', 'metrics')),
    partition_name text        NOT NULL,
    day            date        NOT NULL,
    layout         text        NOT NULL CHECK (layout IN ('native', 'timescaledb')),
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    -- the manifest whose verified archive it was dropped after; NULL while it exists
    purged_by      bigint      REFERENCES archive_manifests (manifest_id),
    PRIMARY KEY (table_name, partition_name)
);

-- A table for an archived day restored for forensics (`archive restore --into`): the shape of the
-- live table, without its constraints' partitioning, indexes or triggers.
CREATE OR REPLACE FUNCTION retention_create_restore_table(target text, source text)
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_catalog, pg_temp
AS $$
BEGIN
    IF source NOT IN ('events', 'metrics') THEN
        RAISE EXCEPTION 'retention_create_restore_table: % has no archives (events or metrics)', source;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', target, source);
END
$$;
