-- Ledger of applied migrations. Run by the migrations runner, under its advisory lock,
-- before any numbered file. Idempotent.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version      integer     PRIMARY KEY,
    name         text        NOT NULL,
    sha256       char(64)    NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    applied_at   timestamptz NOT NULL DEFAULT now(),
    duration_ms  integer     NOT NULL CHECK (duration_ms >= 0)
);
