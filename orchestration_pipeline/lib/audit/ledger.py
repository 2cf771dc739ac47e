"""The audit ledger: one append-only, hash-chained entry per critical mutation.

**Writing.** :func:`record_audit` inserts an entry in the caller's open transaction and never
commits, so the entry and the mutation it describes commit or roll back together. It refuses an
entry without an actor and a request id. Secrets in ``before``, ``after`` and ``reason`` are
redacted first (:mod:`orchestration_pipeline.lib.redaction.patterns`): an entry can never be changed
afterwards, so a secret written into it would stay for good.

**Immutability** is enforced by the database (``sql/orchestration/0004_audit_ledger.sql``): a
row trigger refuses UPDATE and DELETE, a statement trigger refuses TRUNCATE, the table is owned
by ``orch_audit_owner`` (nobody logs in as it), and the pipeline's role
``orch_pipeline_writer`` may only SELECT and INSERT an entry's content columns (never its id, time or
chain position). The trigger functions run as the owner with ``search_path`` pinned to
``pg_catalog`` and the tables named with their schema, so nothing a caller creates runs inside
them. :func:`guard_verdict` checks all of it.

How entries are chained and sealed is in :mod:`orchestration_pipeline.lib.audit.chain`; the guard's
rules are in :mod:`orchestration_pipeline.lib.audit.guard`.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import PurePath
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.errors import AuditError, SchemaNotReady
from orchestration_pipeline.lib.canonical_json import json_has_nul
from orchestration_pipeline.lib.db import end_read, require_schema
from orchestration_pipeline.lib.redaction import may_contain_secret, redact_json_text, redact_text

OPERATIONS = frozenset(
    {"create", "update", "delete", "complete", "grant", "revoke", "rebuild", "repair", "purge", "replay"}
)
AUDIT_TABLES = ("audit_ledger", "audit_chain_heads", "audit_checkpoints")
# What a writer may supply; the database sets the id, the time and the chain columns.
CONTENT_COLUMNS = frozenset(
    {
        "org_id",
        "actor",
        "endpoint",
        "method",
        "request_id",
        "operation",
        "entity_type",
        "entity_id",
        "before_data",
        "after_data",
        "reason",
        "source",
    }
)
OWNER_ROLE = "orch_audit_owner"
WRITER_ROLE = "orch_pipeline_writer"


def _json_default(value: Any) -> Any:
    # Values that mutations commonly carry, written the way a reader expects them.
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | PurePath | Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json_text(name: str, value: Mapping[str, Any] | None) -> str | None:
    """JSON text for a jsonb column, checked here so that a bad value never aborts the caller's transaction."""
    if value is None:
        return None
    try:
        text = json.dumps(dict(value), default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"audit write refused: {name} is not JSON ({exc}) — pass plain data") from None
    if json_has_nul(text):
        raise AuditError(
            f"audit write refused: {name} contains a NUL character, which jsonb cannot store — strip it"
        )
    return text


def require_identity(
    actor: object, request_id: object, *, what: str = "audit write", error: type[Exception] = AuditError
) -> None:
    """Refuse an audited operation that does not say who (``actor``) and for which request."""
    for name, value in (("actor", actor), ("request_id", request_id)):
        if not isinstance(value, str) or not value.strip():
            raise error(
                f"{what} refused: actor and request_id are required — pass actor=... and request_id=... "
                f"({name} was {value!r})"
            )


_ENTRY_COLUMNS = (
    "org_id, actor, endpoint, method, request_id, operation, entity_type, entity_id, before_data, "
    "after_data, reason, source"
)
_ENTRY_VALUES = "%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s"
_INSERT_ENTRY = f"INSERT INTO audit_ledger ({_ENTRY_COLUMNS}) VALUES ({_ENTRY_VALUES}) RETURNING audit_id"
# WITH [RECURSIVE] at the start of a statement, after any whitespace and comments.
_LEADING_WITH = re.compile(r"(?:\s|--[^\n]*\n|/\*.*?\*/)*WITH(\s+RECURSIVE)?\s", re.IGNORECASE | re.DOTALL)


def record_audit(
    conn: psycopg.Connection,
    *,
    actor: str,
    request_id: str,
    operation: str,
    entity_type: str,
    entity_id: str,
    before: Mapping | None = None,
    after: Mapping | None = None,
    reason: str | None = None,
    source: str | None = None,
    org_id: str | None = None,
    endpoint: str | None = None,
    method: str | None = None,
) -> int:
    """Append one audit row in the caller's open transaction; returns its id."""
    fields = {name: value for name, value in locals().items() if name != "conn"}
    try:
        row = conn.execute(_INSERT_ENTRY, _entry_values(conn, fields)).fetchone()
    except psycopg.errors.UndefinedTable:
        raise SchemaNotReady(["audit_ledger"]) from None
    return int(row[0])


# The fields of an entry, as record_audit takes them, and what each defaults to when optional.
_ENTRY_FIELDS = {
    name: param.default
    for name, param in inspect.signature(record_audit).parameters.items()
    if param.kind is inspect.Parameter.KEYWORD_ONLY
}


def _entry_values(conn: psycopg.Connection, fields: Mapping[str, Any]) -> tuple:
    """Validate one entry (record_audit's fields) and return its column values, secrets redacted,
    in _ENTRY_COLUMNS order."""
    unknown = sorted(set(fields) - set(_ENTRY_FIELDS))
    missing = sorted(n for n, d in _ENTRY_FIELDS.items() if d is inspect.Parameter.empty and n not in fields)
    if unknown or missing:
        raise TypeError(f"audit entry: unknown field(s) {unknown}, missing field(s) {missing}")
    e = {name: fields.get(name, default) for name, default in _ENTRY_FIELDS.items()}
    require_identity(e["actor"], e["request_id"])
    if e["operation"] not in OPERATIONS:
        raise AuditError(
            f"audit write refused: unknown operation {e['operation']!r} — use one of {', '.join(sorted(OPERATIONS))}"
        )
    if any(value is None or not str(value).strip() for value in (e["entity_type"], e["entity_id"])):
        raise AuditError("audit write refused: entity_type and entity_id are required — name what changed")
    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        # An autocommit insert would commit on its own, detached from the mutation it describes.
        raise AuditError(
            "audit write refused: no open transaction — write the entry inside the mutation's "
            "transaction (e.g. `with conn.transaction():`)"
        )
    before, after, reason = _json_text("before", e["before"]), _json_text("after", e["after"]), e["reason"]
    # One pre-check over all three, the usual answer being no; if yes, each is redacted in full.
    probe = "\n".join(t for t in (before, after, reason) if t)
    if probe and may_contain_secret(probe.encode()):
        before = before and redact_json_text(before)
        after = after and redact_json_text(after)
        reason = reason and redact_text(reason)[0]
    return (e["org_id"], e["actor"], e["endpoint"], e["method"], e["request_id"], e["operation"],
            e["entity_type"], str(e["entity_id"]), before, after, reason, e["source"])  # fmt: skip


_AUDIT_PARAM_NAMES = tuple(f"_audit_{n}" for n in range(12))


@functools.lru_cache(maxsize=256)
def _audited_query(statement: str, named: bool) -> str:
    """``statement`` with the entry's INSERT as a data-modifying WITH in front (built once per statement)."""
    if named:
        values = ", ".join(
            f"%({name})s" + ("::jsonb" if n in (8, 9) else "") for n, name in enumerate(_AUDIT_PARAM_NAMES)
        )
    else:
        values = _ENTRY_VALUES
    cte = f"audit_entry AS (INSERT INTO audit_ledger ({_ENTRY_COLUMNS}) VALUES ({values}) RETURNING audit_id)"
    leading = _LEADING_WITH.match(statement)
    if leading:
        return f"{statement[: leading.end()]}{cte}, {statement[leading.end() :]}"
    return f"WITH {cte} {statement}"


def audited(
    conn: psycopg.Connection,
    statement: str,
    params: Sequence[Any] | Mapping[str, Any] = (),
    *,
    expect_rows: int | None = None,
    **entry: Any,
) -> psycopg.Cursor:
    """Run one mutation and write its audit entry in the same statement; returns the mutation's cursor.

    ``entry`` takes the keyword arguments of :func:`record_audit` (actor, request_id, operation,
    entity_type, entity_id, before, after, reason, source, org_id, endpoint, method), checked and
    redacted the same way. The entry goes in a data-modifying ``WITH`` in front of ``statement``
    (an INSERT, UPDATE, DELETE or SELECT, which may have a ``WITH`` of its own), so it costs no
    extra round trip and commits or rolls back with the mutation. ``params`` are the statement's
    placeholders, all positional (``%s``) or all named (``%(name)s``); write a literal ``%`` as
    ``%%``, even with no params. The entry is written
    whatever the statement matches: with ``expect_rows`` set, a different row count raises
    :class:`AuditError`, and the caller's transaction must then roll back, entry and all.
    """
    values = _entry_values(conn, entry)
    named = isinstance(params, Mapping)
    if named:
        if any(name in params for name in _AUDIT_PARAM_NAMES):
            raise AuditError("audited(): parameter names starting with _audit_ are reserved — rename them")
        merged: Sequence[Any] | Mapping[str, Any] = {
            **dict(zip(_AUDIT_PARAM_NAMES, values, strict=True)),
            **params,
        }
    else:
        merged = (*values, *params)
    try:
        cur = conn.execute(_audited_query(statement, named), merged)
    except psycopg.errors.UndefinedTable as exc:
        if "audit_ledger" in str(exc):
            raise SchemaNotReady(["audit_ledger"]) from None
        raise
    if expect_rows is not None and cur.rowcount != expect_rows:
        raise AuditError(
            f"audited mutation of {values[6]} {values[7]} touched {cur.rowcount} row(s), expected "
            f"{expect_rows} — roll the transaction back; its audit entry goes with it"
        )
    return cur


# --- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """What an incident question narrows the ledger to; every field is optional."""

    entity_type: str | None = None
    entity_id: str | None = None
    actor: str | None = None
    operation: str | None = None
    request_id: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


def query_audit(conn: psycopg.Connection, flt: AuditFilter) -> list[dict[str, Any]]:
    """Ledger entries matching ``flt``, newest first."""
    require_schema(conn, AUDIT_TABLES, record_decision=False)
    clauses: list[str] = []
    params: list[Any] = []
    for column in ("entity_type", "entity_id", "actor", "operation", "request_id", "source"):
        value = getattr(flt, column)
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if flt.since is not None:
        clauses.append("occurred_at >= %s")
        params.append(flt.since)
    if flt.until is not None:
        clauses.append("occurred_at < %s")
        params.append(flt.until)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""SELECT audit_id, occurred_at, actor, request_id, operation, entity_type, entity_id, before_data,
                       after_data, reason, source, org_id, endpoint, method, chain_id, chain_seq,
                       encode(row_hash, 'hex') AS row_hash
                FROM audit_ledger {where} ORDER BY occurred_at DESC, audit_id DESC LIMIT %s""",
            [*params, flt.limit],
        ).fetchall()
    end_read(conn)
    return rows


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``30m``, ``24h``, ``7d``, ``2w`` (ago), or an ISO date/time (UTC when no offset is given)."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise AuditError(
            f"cannot read time {text!r} — use e.g. 30m, 24h, 7d, 2026-01-31 or 2026-01-31T12:00:00+00:00"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
