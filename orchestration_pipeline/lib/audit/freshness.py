"""Whether the audit ledger is sealed in time: no entry waits too long for its checkpoint.

A checkpoint is written only when there is something to seal, so an old newest checkpoint on an
idle ledger is fine. What must not happen is an entry left unsealed (protected by its hash chain
alone) for longer than the limit: that means the hourly checkpoint has stopped. Ages come from
the database's clock: ``occurred_at`` is set by the ledger's trigger, ``created_at`` by the
checkpoint function.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from orchestration_pipeline.lib.db import end_read, require_schema
from orchestration_pipeline.lib.verdict import Verdict
from orchestration_pipeline.lib.wording import plural

#: How long an audit entry may wait for the checkpoint that seals it (the checkpoint runs hourly).
CHECKPOINT_MAX_AGE_HOURS = 2.0

_STATE_SQL = """
WITH newest AS (
    SELECT checkpoint_seq, through_id, created_at FROM audit_checkpoints
    ORDER BY checkpoint_seq DESC LIMIT 1
), unsealed AS (
    SELECT occurred_at FROM audit_ledger
    WHERE audit_id > coalesce((SELECT through_id FROM newest), 0)
)
SELECT (SELECT count(*) FROM unsealed), (SELECT min(occurred_at) FROM unsealed),
       (SELECT checkpoint_seq FROM newest), (SELECT created_at FROM newest),
       coalesce(%(now)s::timestamptz, now())
"""


def _age(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def checkpoint_fresh(
    conn: psycopg.Connection, *, max_age_hours: float = CHECKPOINT_MAX_AGE_HOURS, now: datetime | None = None
) -> Verdict:
    """No ledger entry has waited longer than ``max_age_hours`` for a checkpoint (``now``: the
    database's clock unless given)."""
    if max_age_hours < 0:
        raise ValueError(
            f"max_unsealed_hours must be 0 or more, not {max_age_hours} — fix the check's config"
        )
    require_schema(conn, ("audit_ledger", "audit_checkpoints"), record_decision=False)
    unsealed, oldest, seq, sealed_at, at = conn.execute(_STATE_SQL, {"now": now}).fetchone()
    end_read(conn)
    meta: dict[str, Any] = {
        "unsealed_entries": unsealed,
        "limit_hours": max_age_hours,
        "last_checkpoint_seq": seq,
        "last_checkpoint_at": sealed_at.isoformat() if sealed_at else None,
    }
    if not unsealed:
        return Verdict(True, "every audit entry is sealed by a checkpoint", meta)
    waited = (at - oldest).total_seconds()
    meta["oldest_unsealed_s"] = round(waited)
    waiting = f"{plural(unsealed, 'entry', 'entries')} not sealed, the oldest for {_age(waited)}"
    if waited <= max_age_hours * 3600:
        return Verdict(True, f"{waiting} (limit {max_age_hours:g} h)", meta)
    last = (
        "no checkpoint yet"
        if seq is None
        else f"the newest checkpoint, {seq}, is {_age((at - sealed_at).total_seconds())} old"
    )
    return Verdict(
        False,
        f"{waiting}, over the {max_age_hours:g} h limit; {last} — is the hourly_audit schedule running "
        "(Dagster UI, Automation)? 'orchestration-pipeline audit checkpoint' seals them now",
        meta,
    )
