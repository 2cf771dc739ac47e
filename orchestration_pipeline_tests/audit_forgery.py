"""Forging the audit ledger the way only a superuser can, for the tests that must catch it."""

from psycopg.rows import dict_row

from orchestration_pipeline.lib.audit.chain import checkpoint_ledger, compute_row_hash
from orchestration_pipeline.lib.db import connection


def forge_as_superuser(dsn, audit_id, actor="mallory"):
    """Rewrite a one-entry transaction's actor the way a superuser could: triggers off, the entry's
    hash recomputed, and every checkpoint taken again over the rewritten ledger."""
    with connection(dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                """SELECT audit_id, chain_id, chain_seq, txn_entry, occurred_at, org_id, actor, endpoint, method,
                          request_id, operation, entity_type, entity_id, before_data::text AS before_data,
                          after_data::text AS after_data, reason, source, encode(prev_hash, 'hex') AS prev_hash
                   FROM audit_ledger WHERE audit_id = %s""",
                (audit_id,),
            ).fetchone()
        row["actor"] = actor
        conn.execute(
            "UPDATE audit_ledger SET actor = %s, row_hash = decode(%s, 'hex') WHERE audit_id = %s",
            (actor, compute_row_hash(row["prev_hash"], row), audit_id),
        )
        sealed = conn.execute("SELECT max(entries) FROM audit_checkpoints").fetchone()[0]
        conn.execute("DELETE FROM audit_checkpoints")
        conn.commit()
    if sealed:
        with connection(dsn) as conn:
            checkpoint_ledger(conn, max_entries=sealed)
