-- Baseline tables for benchmarks/ingest.py: the same shape as `events` (columns, constraints,
-- indexes), so raw COPY and row-at-a-time INSERT pay the same index costs as ingestion.
CREATE TABLE IF NOT EXISTS bench_events_copy (LIKE events INCLUDING ALL);
CREATE TABLE IF NOT EXISTS bench_events_insert (LIKE events INCLUDING ALL);
-- (d): the lean write path an ingester is measured against: the event id as primary key, the
-- event as jsonb, nothing else.
CREATE TABLE IF NOT EXISTS bench_events_lean (event_id uuid PRIMARY KEY, event jsonb NOT NULL);
