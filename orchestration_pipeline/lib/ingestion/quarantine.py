"""Listing, replaying and discarding quarantined lines.

A quarantined row is *pending* until it is replayed (``replayed_at``) or discarded
(``discarded_at``); either way the row is kept, so every file still balances.

Replay re-parses each pending row's (redacted) raw line with the current validator: after a
producer or validator fix, the line is accepted, recognised as a duplicate, or collapsed into
its error group, and the quarantine row records the outcome. A line that still fails stays
pending with its attempt count and latest reason. Truncated lines (over 1 MiB) cannot be replayed.
Every examined row leaves an audit entry (operation ``replay``) in the replay's transaction.

Discard is for lines no fix will turn into events (a README ingested by mistake): each row is
marked with when, by whom and why, and leaves an audit entry in the discard's transaction. The
operation is ``delete``: the row leaves the pending set for good, and is kept only as a record.
Discarding a row twice changes nothing the second time.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.audit.ledger import record_audit, require_identity
from orchestration_pipeline.lib.db import SchemaGate, end_read
from orchestration_pipeline.lib.ingestion.batches import Counts, conflict_detail, stage_sql, write_batch
from orchestration_pipeline.lib.ingestion.envelope import ParsedEvent
from orchestration_pipeline.lib.ingestion.events import parse_line
from orchestration_pipeline.lib.ingestion.failure_types import FAILURE_TYPES
from orchestration_pipeline.lib.ingestion.ingest import INGEST_TABLES
from orchestration_pipeline.lib.ingestion.notify import notify_new_events
from orchestration_pipeline.lib.ingestion.rows import ParsedBatch, add_event


class UnknownQuarantineId(OrchError):
    """A replay or discard asked for quarantine ids that do not exist."""


class DiscardRefused(OrchError):
    """A discard did not say which lines or why, or its selection matches no quarantined line."""


# A row neither replayed nor discarded: what list, counts and replay work on.
PENDING = "replayed_at IS NULL AND discarded_at IS NULL"
_LIST_COLUMNS = """quarantine_id, failure_type, json_pointer, detail, source_file, source_line,
    left(raw_line, 200) AS raw_preview, quarantined_at, replay_attempts, replayed_at, replay_outcome,
    discarded_at, discarded_by, discard_reason"""


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
    already_discarded: list[int] = field(default_factory=list)  # asked-for ids discarded before

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
            "already_discarded": self.already_discarded,
        }


@dataclass
class DiscardResult:
    request_id: str
    discarded_ids: list[int] = field(default_factory=list)
    already_discarded: list[int] = field(default_factory=list)  # matched, discarded before: left alone
    already_replayed: list[int] = field(default_factory=list)  # matched, replayed before: left alone

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "discarded": len(self.discarded_ids),
            "discarded_ids": self.discarded_ids,
            "already_discarded": self.already_discarded,
            "already_replayed": self.already_replayed,
        }


def source_file_names(source_file: str) -> list[str]:
    """The ``source_file`` values a path given by a user may be stored as.

    Ingestion records a file's resolved absolute path; the path as given is tried too, so both
    ``--file README.md`` (from its directory) and the stored path match.
    """
    return list(dict.fromkeys([source_file, str(Path(source_file).resolve())]))


def _selection(
    ids: Sequence[int] | None, failure_type: str | None, source_file: str | None
) -> tuple[list[str], list[Any]]:
    """WHERE clauses (joined with AND) and their parameters for the rows a request names."""
    clauses: list[str] = []
    params: list[Any] = []
    if ids:
        clauses.append("quarantine_id = ANY(%s)")
        params.append(list(ids))
    if failure_type:
        clauses.append("failure_type = %s")
        params.append(failure_type)
    if source_file:
        clauses.append("source_file = ANY(%s)")
        params.append(source_file_names(source_file))
    return clauses, params


def _where(clauses: list[str]) -> str:
    return ("WHERE " + " AND ".join(clauses)) if clauses else ""


def list_quarantine(
    conn: psycopg.Connection,
    *,
    failure_type: str | None = None,
    include_replayed: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Quarantined lines, newest first, with a preview of the raw line.

    Only pending rows, unless ``include_replayed``: then replayed and discarded rows too, marked by
    their ``replayed_at`` and ``discarded_at``.
    """
    _check_failure_type(failure_type)
    if limit < 1 or offset < 0:
        raise ValueError(f"limit must be at least 1 and offset at least 0, got {limit} and {offset}")
    SchemaGate(["quarantine"]).check(conn)
    clauses, params = _selection(None, failure_type, None)
    if not include_replayed:
        clauses.append(PENDING)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_LIST_COLUMNS} FROM quarantine {_where(clauses)} "
            "ORDER BY quarantine_id DESC LIMIT %s OFFSET %s",
            [*params, limit, offset],
        ).fetchall()
    end_read(conn)
    return rows


def count_quarantine(
    conn: psycopg.Connection, *, failure_type: str | None = None, include_replayed: bool = False
) -> int:
    """How many rows :func:`list_quarantine` pages through with the same filters."""
    _check_failure_type(failure_type)
    SchemaGate(["quarantine"]).check(conn)
    clauses, params = _selection(None, failure_type, None)
    if not include_replayed:
        clauses.append(PENDING)
    total = conn.execute(f"SELECT count(*) FROM quarantine {_where(clauses)}", params).fetchone()[0]
    end_read(conn)
    return int(total)


def quarantine_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Pending quarantined lines (neither replayed nor discarded) per failure type."""
    rows = conn.execute(
        f"SELECT failure_type, count(*) FROM quarantine WHERE {PENDING} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    end_read(conn)
    return {r[0]: r[1] for r in rows}


def _states_of(conn: psycopg.Connection, ids: Sequence[int]) -> dict[int, str]:
    """``pending``, ``replayed`` or ``discarded`` for each asked-for id; unknown ids raise, naming them."""
    found = {
        qid: state
        for qid, state in conn.execute(
            """SELECT quarantine_id, CASE WHEN discarded_at IS NOT NULL THEN 'discarded'
                                         WHEN replayed_at IS NOT NULL THEN 'replayed' ELSE 'pending' END
               FROM quarantine WHERE quarantine_id = ANY(%s)""",
            (list(ids),),
        ).fetchall()
    }
    end_read(conn)
    missing = sorted(set(ids) - found.keys())
    if missing:
        raise UnknownQuarantineId(
            f"no quarantined line with id {', '.join(map(str, missing))} — "
            "see the ids with 'orchestration-pipeline quarantine list --all'"
        )
    return found


def _start_clean(conn: psycopg.Connection) -> None:
    """End a read the caller left open, so the work below runs in a transaction of its own."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()


# --- replay -----------------------------------------------------------------------------------


@dataclass
class _ReplayRow:
    quarantine_id: int
    raw_line: str
    truncated: bool
    source_file: str
    source_line: int
    failure_type: str
    attempts: int
    derived_event_id: uuid.UUID | None


class _Replay:
    """One replay run inside its transaction: each row's outcome, then the audit entries."""

    def __init__(self, cur: psycopg.Cursor, result: ReplayResult, stamp: datetime):
        self.cur = cur
        self.result = result
        self.stamp = stamp
        self.entries: list[tuple[_ReplayRow, dict[str, Any]]] = []

    def row(self, row: _ReplayRow) -> None:
        """Re-parse and re-write one row; record whether it is now resolved or still failing."""
        self.result.examined += 1
        if row.truncated:
            self._still_failing(
                row, "payload_too_large", "line was truncated at quarantine time and cannot be replayed"
            )
            return
        # a line without an event_id keeps the id derived from its original (unredacted) content
        parsed = parse_line(
            row.raw_line.encode("utf-8"), now=self.stamp, event_id_if_absent=row.derived_event_id
        )
        if not isinstance(parsed, ParsedEvent):
            self._still_failing(row, parsed.failure_type, parsed.detail)
            return
        # the same write path as ingestion, one row at a time: each row's outcome is recorded
        batch = ParsedBatch(lines=1)
        add_event(batch, parsed, row.source_file, row.source_line)
        counts = Counts()
        conflicts = write_batch(self.cur, batch, self.result.run_id, counts, quarantine_conflicts=False)
        if conflicts:  # still a second version of a stored event: it stays quarantined
            self._still_failing(row, "conflicting_duplicate", conflict_detail(conflicts[0]))
            return
        self._resolved(row, parsed.event_id, self._outcome(counts))

    def _outcome(self, counts: Counts) -> str:
        if counts.accepted:
            self.result.accepted += 1
            return "accepted"
        if counts.collapsed:
            self.result.collapsed += 1
            return "collapsed"
        self.result.duplicates += 1
        return "duplicate"

    def _still_failing(self, row: _ReplayRow, kind: str, reason: str) -> None:
        self.result.still_failing += 1
        self.result.failures_by_type[kind] = self.result.failures_by_type.get(kind, 0) + 1
        self.cur.execute(
            """UPDATE quarantine SET replay_attempts = replay_attempts + 1, last_replay_at = %s,
                      last_replay_detail = %s WHERE quarantine_id = %s""",
            (self.stamp, reason[:2000], row.quarantine_id),
        )
        self.entries.append((row, {"outcome": "still_failing", "failure_type": kind}))

    def _resolved(self, row: _ReplayRow, event_id: uuid.UUID, outcome: str) -> None:
        self.result.replayed_ids.append(row.quarantine_id)
        self.cur.execute(
            """UPDATE quarantine SET replay_attempts = replay_attempts + 1, last_replay_at = %s, replayed_at = %s,
                      replay_outcome = %s, replay_event_id = %s, last_replay_detail = NULL
               WHERE quarantine_id = %s""",
            (self.stamp, self.stamp, outcome, event_id, row.quarantine_id),
        )
        self.entries.append((row, {"outcome": outcome, "event_id": event_id, "replayed_at": self.stamp}))

    def audit(self, conn: psycopg.Connection, *, actor: str, request_id: str, source: str | None) -> None:
        """One ``replay`` entry per examined row. Written last, so the audit chain's lock is held
        only until commit (see lib/audit/ledger.py)."""
        for row, after in self.entries:
            record_audit(
                conn,
                actor=actor,
                request_id=request_id,
                operation="replay",
                entity_type="quarantine",
                entity_id=str(row.quarantine_id),
                before={
                    "failure_type": row.failure_type,
                    "replay_attempts": row.attempts,
                    "replayed_at": None,
                },
                after={"replay_attempts": row.attempts + 1, **after},
                reason=f"quarantine replay run {self.result.run_id}",
                source=source,
            )


def _lock_pending_rows(
    cur: psycopg.Cursor,
    ids: Sequence[int] | None,
    failure_type: str | None,
    source_file: str | None,
    limit: int | None,
) -> list[_ReplayRow]:
    """The pending rows asked for, locked; rows another replay holds are skipped, not waited for."""
    clauses, params = _selection(ids, failure_type, source_file)
    clauses.append(PENDING)
    limit_sql = ""
    if limit is not None:
        limit_sql = " LIMIT %s"
        params.append(limit)
    rows = cur.execute(
        f"""SELECT quarantine_id, raw_line, raw_truncated, source_file, source_line, failure_type, replay_attempts,
                   derived_event_id
            FROM quarantine {_where(clauses)} ORDER BY quarantine_id{limit_sql} FOR UPDATE SKIP LOCKED""",
        params,
    ).fetchall()
    return [_ReplayRow(*row) for row in rows]


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
    :class:`UnknownQuarantineId` before anything is replayed; those already replayed or discarded
    are listed in ``already_replayed`` / ``already_discarded`` and left alone.
    """
    require_identity(actor, request_id, what="quarantine replay")
    _check_failure_type(failure_type)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    SchemaGate([*INGEST_TABLES, "audit_ledger"]).check(conn)
    result = ReplayResult(run_id=uuid.uuid4())
    _start_clean(conn)
    if ids:
        states = _states_of(conn, ids)
        result.already_replayed = sorted({i for i in ids if states[i] == "replayed"})
        result.already_discarded = sorted({i for i in ids if states[i] == "discarded"})
    with conn.transaction():
        conn.execute(stage_sql())
        cur = conn.cursor()
        replay = _Replay(cur, result, now or datetime.now(UTC))
        for row in _lock_pending_rows(cur, ids, failure_type, source_file, limit):
            replay.row(row)
        replay.audit(conn, actor=actor, request_id=request_id, source=source)
        if result.accepted:
            notify_new_events(conn, f"replay {result.run_id}")
    return result


# --- discard ----------------------------------------------------------------------------------


def _check_discard_request(
    reason: object, ids: Sequence[int] | None, failure_type: str | None, source_file: str | None
) -> None:
    if not isinstance(reason, str) or not reason.strip():
        raise DiscardRefused(
            "quarantine discard refused: a reason is required — say why these lines will never be "
            "replayed (--reason, e.g. 'README.md ingested by mistake')"
        )
    if not (ids or failure_type or source_file):
        raise DiscardRefused(
            "quarantine discard refused: say which lines — --id, --file or --failure-type "
            "(see them with 'orchestration-pipeline quarantine list')"
        )


def _describe_selection(failure_type: str | None, source_file: str | None) -> str:
    parts = [f"--file {source_file}"] if source_file else []
    if failure_type:
        parts.append(f"--failure-type {failure_type}")
    return " ".join(parts)


def discard_quarantine(
    conn: psycopg.Connection,
    *,
    actor: str,
    request_id: str,
    reason: str,
    ids: Sequence[int] | None = None,
    failure_type: str | None = None,
    source_file: str | None = None,
    now: datetime | None = None,
    source: str | None = None,
) -> DiscardResult:
    """Mark the pending rows asked for as discarded, in one transaction; returns what changed.

    The filters combine (``ids`` and ``failure_type`` and ``source_file``); at least one and a
    ``reason`` are required. Each row keeps its line and gets ``discarded_at``, ``discarded_by``
    (``actor``) and ``discard_reason``, plus one audit entry (operation ``delete``) naming
    ``actor`` and ``request_id``. Matching rows already discarded or replayed are listed and
    left alone, so discarding twice is harmless. Unknown ``ids`` raise
    :class:`UnknownQuarantineId`, and ``failure_type``/``source_file`` that match no row at all
    raise :class:`DiscardRefused`, before anything changes.
    """
    require_identity(actor, request_id, what="quarantine discard")
    _check_discard_request(reason, ids, failure_type, source_file)
    _check_failure_type(failure_type)
    SchemaGate(["quarantine", "audit_ledger"]).check(conn)
    _start_clean(conn)
    if ids:
        _states_of(conn, ids)
    stamp = now or datetime.now(UTC)
    clauses, params = _selection(ids, failure_type, source_file)
    result = DiscardResult(request_id=request_id)
    with conn.transaction():
        # locked in id order, so two discards of overlapping rows cannot deadlock
        discarded = conn.execute(
            f"""WITH chosen AS (
                    SELECT quarantine_id FROM quarantine {_where([*clauses, PENDING])}
                    ORDER BY quarantine_id FOR UPDATE)
                UPDATE quarantine q SET discarded_at = %s, discarded_by = %s, discard_reason = %s
                FROM chosen WHERE q.quarantine_id = chosen.quarantine_id
                RETURNING q.quarantine_id, q.failure_type, q.source_file, q.source_line, q.replay_attempts""",
            [*params, stamp, actor, reason],
        ).fetchall()
        result.discarded_ids = sorted(row[0] for row in discarded)
        _classify_left_alone(conn, clauses, params, result)
        if not result.discarded_ids and not result.already_discarded and not result.already_replayed:
            raise DiscardRefused(
                f"no quarantined line matches {_describe_selection(failure_type, source_file)} — "
                "see the files and failure types with 'orchestration-pipeline quarantine list --all'"
            )
        for qid, kind, file, line, attempts in sorted(discarded):
            record_audit(
                conn,
                actor=actor,
                request_id=request_id,
                operation="delete",
                entity_type="quarantine",
                entity_id=str(qid),
                before={"failure_type": kind, "source_file": file, "source_line": line,
                        "replay_attempts": attempts, "discarded_at": None},
                after={"discarded_at": stamp, "discarded_by": actor, "discard_reason": reason},
                reason=reason,
                source=source,
            )  # fmt: skip
    return result


def _classify_left_alone(
    conn: psycopg.Connection, clauses: list[str], params: list[Any], result: DiscardResult
) -> None:
    """The rows the request matches that were not pending: discarded or replayed before."""
    rows = conn.execute(
        f"""SELECT quarantine_id, discarded_at IS NOT NULL FROM quarantine
            {_where([*clauses, "NOT (quarantine_id = ANY(%s))", f"NOT ({PENDING})"])} ORDER BY 1""",
        [*params, result.discarded_ids],
    ).fetchall()
    result.already_discarded = [qid for qid, discarded in rows if discarded]
    result.already_replayed = [qid for qid, discarded in rows if not discarded]
