-- Baseline table for benchmarks/audit.py's cost breakdown: the ledger's columns, filled the same
-- way, with no index, no trigger and no chain. Inserting into it costs what any second statement
-- in the transaction costs: the floor under every per-transaction audit design.
CREATE TABLE IF NOT EXISTS bench_ledger_plain (LIKE audit_ledger INCLUDING DEFAULTS INCLUDING IDENTITY);
ALTER TABLE bench_ledger_plain
    ALTER chain_id DROP NOT NULL,
    ALTER chain_seq DROP NOT NULL,
    ALTER prev_hash DROP NOT NULL,
    ALTER row_hash DROP NOT NULL;
