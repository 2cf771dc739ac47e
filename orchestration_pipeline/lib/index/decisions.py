"""Decisions in PostgreSQL (the source of truth of the index): writes, deletes and reads.

Every write goes through the ``decisions`` table, whose triggers (``sql/orchestration/0018``)
stamp a new version and content hash and write the ``search_outbox`` row in the same
transaction. Ingested ``decision`` events land here through :func:`decisions_from_events`, called
by the ingestion writer in the file's transaction; :func:`put_decisions` and
:func:`delete_decision` are the direct Python API. All of them write in the caller's transaction.

What an event contributes: ``payload.decision_id`` (else the event id), ``payload.org_id``,
``payload.policy_id``, ``payload.status`` (else the event's status), ``payload.rationale``, the
event's session and task. The newest event of a decision (by ``occurred_at``) wins; an older
one arriving later changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from orchestration_pipeline.lib.audit.ledger import record_audit


class DecisionInput(BaseModel):
    """One decision as the Python API takes it (validated: a clear error names the field)."""

    model_config = ConfigDict(extra="forbid")

    decision_id: StrictStr = Field(min_length=1)
    rationale: StrictStr = Field(min_length=1)
    org_id: StrictStr | None = None
    policy_id: StrictStr | None = None
    session_id: StrictStr | None = None
    task_id: StrictStr | None = None
    status: StrictStr | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    decision_id: str
    org_id: str | None
    policy_id: str | None
    session_id: str | None
    task_id: str | None
    status: str | None
    rationale: str
    created_at: datetime
    updated_at: datetime
    version: int
    content_hash: str

    def index_payload(self) -> dict[str, Any]:
        """The filter fields the index stores beside the vector (version and hash are added by it)."""
        return {
            "org_id": self.org_id,
            "policy_id": self.policy_id,
            "status": self.status,
            "created_at": self.created_at.timestamp(),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "org_id": self.org_id,
            "policy_id": self.policy_id,
            "session_id": self.session_id,
            "task_id": self.task_id,
            "status": self.status,
            "rationale": self.rationale,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "version": self.version,
            "content_hash": self.content_hash,
        }


_COLUMNS = (
    "decision_id, org_id, policy_id, session_id, task_id, status, rationale, created_at, updated_at, "
    "version, content_hash"
)

# The decision events among the given (event_id, occurred_at in epoch microseconds) keys, newest
# per decision, upserted; an event older than what the decision holds is ignored.
_FROM_EVENTS_SQL = """
INSERT INTO decisions AS d (decision_id, org_id, policy_id, session_id, task_id, status, rationale,
                            created_at, updated_at, source_event_id)
SELECT DISTINCT ON (decision_id)
       decision_id, org_id, policy_id, session_id, task_id, status, rationale,
       occurred_at, occurred_at, event_id
FROM (
    SELECT coalesce(nullif(e.payload->>'decision_id', ''), e.event_id::text) AS decision_id,
           e.payload->>'org_id' AS org_id, e.payload->>'policy_id' AS policy_id,
           e.session_id, e.task_id, coalesce(e.payload->>'status', e.status) AS status,
           e.payload->>'rationale' AS rationale, e.occurred_at, e.event_id
    FROM unnest(%s::uuid[], %s::bigint[]) AS k(event_id, micros)
    JOIN events e ON e.event_id = k.event_id
                 AND e.occurred_at = timestamptz 'epoch' + k.micros * interval '1 microsecond'
    WHERE e.event_type = 'decision' AND coalesce(e.payload->>'rationale', '') <> ''
) s
ORDER BY decision_id, occurred_at DESC, event_id DESC
ON CONFLICT (decision_id) DO UPDATE SET
    org_id = EXCLUDED.org_id, policy_id = EXCLUDED.policy_id, session_id = EXCLUDED.session_id,
    task_id = EXCLUDED.task_id, status = EXCLUDED.status, rationale = EXCLUDED.rationale,
    updated_at = EXCLUDED.updated_at, source_event_id = EXCLUDED.source_event_id
WHERE d.updated_at <= EXCLUDED.updated_at
"""


def decisions_from_events(cur: psycopg.Cursor, keys: Sequence[tuple[str, int]]) -> int:
    """Create or update the decisions of the given just-inserted ``decision`` events, in the
    caller's transaction (their outbox rows with them). ``keys`` are (event_id, occurred_at in
    epoch microseconds). Returns the number of decisions written."""
    if not keys:
        return 0
    cur.execute(_FROM_EVENTS_SQL, ([k[0] for k in keys], [k[1] for k in keys]))
    return cur.rowcount


_PUT_SQL = """
INSERT INTO decisions AS d (decision_id, org_id, policy_id, session_id, task_id, status, rationale,
                            created_at, updated_at)
VALUES (%(decision_id)s, %(org_id)s, %(policy_id)s, %(session_id)s, %(task_id)s, %(status)s,
        %(rationale)s, coalesce(%(created_at)s, now()), coalesce(%(updated_at)s, now()))
ON CONFLICT (decision_id) DO UPDATE SET
    org_id = EXCLUDED.org_id, policy_id = EXCLUDED.policy_id, session_id = EXCLUDED.session_id,
    task_id = EXCLUDED.task_id, status = EXCLUDED.status, rationale = EXCLUDED.rationale,
    created_at = coalesce(%(created_at)s, d.created_at), updated_at = EXCLUDED.updated_at
"""


def put_decisions(conn: psycopg.Connection, decisions: Iterable[Mapping[str, Any] | DecisionInput]) -> int:
    """Create or replace decisions (the direct API), in the caller's transaction. Each is validated
    first (:class:`DecisionInput`; a bad one raises before anything is written). Returns the number
    of decisions whose content changed (an identical write makes no new version)."""
    rows = [d if isinstance(d, DecisionInput) else DecisionInput.model_validate(d) for d in decisions]
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(_PUT_SQL, [r.model_dump() for r in rows])
        return max(cur.rowcount, 0)


def delete_decision(
    conn: psycopg.Connection, decision_id: str, *, actor: str, request_id: str, reason: str
) -> bool:
    """Delete one decision (its outbox row removes it from the index), audited, in the caller's
    transaction (or a transaction of its own on an autocommit connection). Returns False when no such decision exists (nothing is audited then)."""
    with conn.transaction():  # the delete and its audit entry commit together, whatever the mode
        row = conn.execute(
            f"DELETE FROM decisions WHERE decision_id = %s RETURNING {_COLUMNS}", (decision_id,)
        ).fetchone()
        if row is None:
            return False
        record_audit(
            conn,
            actor=actor,
            request_id=request_id,
            operation="delete",
            entity_type="decision",
            entity_id=decision_id,
            before=Decision(*row).as_dict(),
            reason=reason,
            source="lib.index.decisions",
        )
    return True


def load_decisions(conn: psycopg.Connection, decision_ids: Sequence[str]) -> dict[str, Decision]:
    """The current decisions of these ids (absent ids are missing from the result)."""
    if not decision_ids:
        return {}
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM decisions WHERE decision_id = ANY(%s)", (list(decision_ids),)
    ).fetchall()
    return {row[0]: Decision(*row) for row in rows}


def expected_states(conn: psycopg.Connection) -> dict[str, tuple[int, str]]:
    """Every current decision's (version, content_hash): what the index should hold."""
    rows = conn.execute("SELECT decision_id, version, content_hash FROM decisions").fetchall()
    return {row[0]: (int(row[1]), row[2]) for row in rows}
