"""Listing and replaying quarantined lines.

Replay re-parses each pending row's (redacted) raw line with the current validator: after a
producer or validator fix, the line is accepted, recognised as a duplicate, or collapsed into
its error group, and the quarantine row records the outcome. A line that still fails stays
pending with its attempt count and latest reason. Truncated lines (over 1 MiB) cannot be replayed.
Every examined row leaves an audit entry (operation ``replay``) in the replay's transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.audit.ledger import record_audit, require_identity
from orchestration_pipeline.lib.db import SchemaGate, end_read
from orchestration_pipeline.lib.ingestion.batches import Counts, conflict_detail, stage_sql, write_batch
from orchestration_pipeline.lib.ingestion.events import ParsedEvent, parse_line
from orchestration_pipeline.lib.ingestion.failure_types import FAILURE_TYPES
from orchestration_pipeline.lib.ingestion.ingest import INGEST_TABLES
from orchestration_pipeline.lib.ingestion.rows import ParsedBatch, add_event


class UnknownQuarantineId(OrchError):
    """A replay asked for quarantine ids that do not exist."""


def _check_failure_type(failure_type: str | None) -> None:
    if failure_type is not None and failure_type not in FAILURE_TYPES:
        raise ValueError(f"unknown failure type {failure_type!r}; use one of {', '.join(FAILURE_TYPES)}")


@dataclass
class ReplayResult:
    run_id: uuid.UUID
    examined: int = 0
    accepted: int = 0
    duplicates: int = 0
    collapsed: int = 0
    still_failing: int = 0
    failures_by_type: dict[str, int] = field(default_factory=dict)
    replayed_ids: list[int] = field(default_factory=list)
    already_replayed: list[int] = field(default_factory=list)  # asked-for ids replayed before

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "examined": self.examined,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "collapsed": self.collapsed,
            "still_failing": self.still_failing,
            "failures_by_type": self.failures_by_type,
            "already_replayed": self.already_replayed,
        }


def _filters(
    ids: list[int] | None, failure_type: str | None, source_file: str | None
) -> tuple[str, list[Any]]:
    clauses, params = ["replayed_at IS NULL"], []
    if ids:
        clauses.append("quarantine_id = ANY(%s)")
        params.append(ids)
    if failure_type:
        clauses.append("failure_type = %s")
        params.append(failure_type)
    if source_file:
        clauses.append("source_file = %s")
        params.append(source_file)
    return " AND ".join(clauses), params


def list_quarantine(
    conn: psycopg.Connection,
    *,
    failure_type: str | None = None,
    include_replayed: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Quarantined lines, newest first, with a preview of the raw line."""
    _check_failure_type(failure_type)
    if limit < 1 or offset < 0:
        raise ValueError(f"limit must be at least 1 and offset at least 0, got {limit} and {offset}")
    SchemaGate(["quarantine"]).check(conn)
    clauses, params = [], []
    if not include_replayed:
        clauses.append("replayed_at IS NULL")
    if failure_type:
        clauses.append("failure_type = %s")
        params.append(failure_type)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""SELECT quarantine_id, failure_type, json_pointer, detail, source_file, source_line,
                       left(raw_line, 200) AS raw_preview, quarantined_at, replay_attempts, replayed_at, replay_outcome
                FROM quarantine {where} ORDER BY quarantine_id DESC LIMIT %s OFFSET %s""",
            [*params, limit, offset],
        ).fetchall()
    end_read(conn)
    return rows


def quarantine_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Pending quarantined lines per failure type."""
    rows = conn.execute(
        "SELECT failure_type, count(*) FROM quarantine WHERE replayed_at IS NULL GROUP BY 1 ORDER BY 1"
    ).fetchall()
    end_read(conn)
    return {r[0]: r[1] for r in rows}


def replay_quarantine(
    conn: psycopg.Connection,
    *,
    actor: str,
    request_id: str,
    ids: list[int] | None = None,
    failure_type: str | None = None,
    source_file: str | None = None,
    limit: int | None = None,
    now: datetime | None = None,
    source: str | None = None,
) -> ReplayResult:
    """Re-ingest pending quarantined lines in one transaction; rows locked by another replay are skipped.

    Each examined row gets an audit entry (operation ``replay``) in that same transaction, naming
    ``actor`` and ``request_id``; both are required. Asked-for ``ids`` that do not exist raise
    :class:`UnknownQuarantineId` before anything is replayed; those already replayed are listed
    in ``already_replayed`` and left alone.
    """
    require_identity(actor, request_id, what="quarantine replay")
    _check_failure_type(failure_type)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    SchemaGate([*INGEST_TABLES, "audit_ledger"]).check(conn)
    result = ReplayResult(run_id=uuid.uuid4())
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    if ids:
        found = dict(
            conn.execute(
                "SELECT quarantine_id, replayed_at IS NOT NULL FROM quarantine WHERE quarantine_id = ANY(%s)",
                (list(ids),),
            ).fetchall()
        )
        end_read(conn)
        missing = sorted(set(ids) - found.keys())
        if missing:
            raise UnknownQuarantineId(
                f"no quarantined line with id {', '.join(map(str, missing))} — "
                "see the ids with 'orchestration-pipeline quarantine list --all'"
            )
        result.already_replayed = sorted({i for i in ids if found[i]})
    where, params = _filters(ids, failure_type, source_file)
    limit_sql = " LIMIT %s" if limit is not None else ""
    if limit is not None:
        params.append(limit)
    with conn.transaction():
        conn.execute(stage_sql())
        cur = conn.cursor()
        rows = cur.execute(
            f"""SELECT quarantine_id, raw_line, raw_truncated, source_file, source_line, failure_type, replay_attempts,
                       derived_event_id
                FROM quarantine WHERE {where} ORDER BY quarantine_id{limit_sql} FOR UPDATE SKIP LOCKED""",
            params,
        ).fetchall()
        stamp = now or datetime.now(UTC)

        entries: list[tuple[int, str, int, dict[str, Any]]] = []

        def audit(qid: int, failure_type: str, attempts: int, after: dict[str, Any]) -> None:
            entries.append((qid, failure_type, attempts, after))

        def still_failing(qid: int, failure_type: str, attempts: int, kind: str, reason: str) -> None:
            result.still_failing += 1
            result.failures_by_type[kind] = result.failures_by_type.get(kind, 0) + 1
            cur.execute(
                """UPDATE quarantine SET replay_attempts = replay_attempts + 1, last_replay_at = %s,
                          last_replay_detail = %s WHERE quarantine_id = %s""",
                (stamp, reason[:2000], qid),
            )
            audit(qid, failure_type, attempts, {"outcome": "still_failing", "failure_type": kind})

        for qid, raw_line, truncated, source_file_, source_line, failure_type, attempts, derived in rows:
            result.examined += 1
            # a line without an event_id keeps the id derived from its original (unredacted) content
            parsed = (
                None
                if truncated
                else parse_line(raw_line.encode("utf-8"), now=stamp, event_id_if_absent=derived)
            )
            if not isinstance(parsed, ParsedEvent):
                reason = (
                    "line was truncated at quarantine time and cannot be replayed"
                    if truncated
                    else parsed.detail
                )
                still_failing(
                    qid,
                    failure_type,
                    attempts,
                    "payload_too_large" if truncated else parsed.failure_type,
                    reason,
                )
                continue
            # the same write path as ingestion, one row at a time: each row's outcome is recorded
            batch = ParsedBatch(lines=1)
            add_event(batch, parsed, source_file_, source_line)
            counts = Counts()
            conflicts = write_batch(cur, batch, result.run_id, counts, quarantine_conflicts=False)
            if conflicts:  # still a second version of a stored event: it stays quarantined
                still_failing(
                    qid, failure_type, attempts, "conflicting_duplicate", conflict_detail(conflicts[0])
                )
                continue
            if counts.accepted:
                outcome, result.accepted = "accepted", result.accepted + 1
            elif counts.collapsed:
                outcome, result.collapsed = "collapsed", result.collapsed + 1
            else:
                outcome, result.duplicates = "duplicate", result.duplicates + 1
            result.replayed_ids.append(qid)
            cur.execute(
                """UPDATE quarantine SET replay_attempts = replay_attempts + 1, last_replay_at = %s, replayed_at = %s,
                          replay_outcome = %s, replay_event_id = %s, last_replay_detail = NULL
                   WHERE quarantine_id = %s""",
                (stamp, stamp, outcome, parsed.event_id, qid),
            )
            audit(
                qid,
                failure_type,
                attempts,
                {"outcome": outcome, "event_id": parsed.event_id, "replayed_at": stamp},
            )
        # Audited last, so the audit chain's lock is held only until commit (see lib/audit.py).
        for qid, failure_type, attempts, after in entries:
            record_audit(
                conn,
                actor=actor,
                request_id=request_id,
                operation="replay",
                entity_type="quarantine",
                entity_id=str(qid),
                before={"failure_type": failure_type, "replay_attempts": attempts, "replayed_at": None},
                after={"replay_attempts": attempts + 1, **after},
                reason=f"quarantine replay run {result.run_id}",
                source=source,
            )
    return result
