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

**Chaining: one chain per transaction, sealed by periodic checkpoints**
(``sql/orchestration/0010_audit_transaction_chains.sql``). A BEFORE INSERT trigger puts each
entry on its transaction's own chain, ``tx/<transaction start µs>/<xid>``: the first entry links
to 32 zero bytes, each later one to the entry before it, and ``row_hash = sha256(prev_hash ||
canonical row)``. :func:`checkpoint_ledger` then seals every entry written since the last
checkpoint into the next link of one global checkpoint chain, hashing the id and ``row_hash`` of
each entry in its id range. Why this way:

* Writers never wait for each other, and an audited mutation costs one row and no lock. The
  earlier scheme (0004/0006: a chain per UTC day and writer slot, advanced through a head row)
  took a row lock and wrote a head version in every audited transaction, which halved an
  audited mutation's throughput; through :func:`audited` the per-transaction chain costs a
  little more than a second plain INSERT would, about 35-40 % on a 2-core machine
  (``benchmarks/audit.py``). Entries of the old chains keep verifying against their heads.
* Tamper evidence is the same once sealed: a changed entry no longer matches its ``row_hash``;
  a removed entry, a removed transaction, or an entry slipped in, no longer matches its
  checkpoint; a changed checkpoint breaks the checkpoint chain. The checkpoint hash is also
  recorded outside the database, in the ``audit_ledger_integrity`` materialization.
* The price is a window: entries newer than the last checkpoint are protected by the
  append-only guard and their own hashes, but deleting a whole unsealed transaction would go
  unseen. Checkpoints run on every ``audit_ledger_integrity`` materialization and from
  ``orchestration-pipeline audit checkpoint``; :func:`verify_chain` reports how many entries
  are not sealed yet.
* Which entries a checkpoint may seal is decided by the writers' locks, not by a clock, and
  writers never wait for a checkpoint: an entry's id is drawn, in order (sequence CACHE 1),
  while its transaction holds ROW EXCLUSIVE on the ledger. The checkpoint reads the last id
  drawn, then waits (bounded) until every transaction that held that lock at the time has
  ended: every id up to the one read is then committed or gone for good. A transaction left
  open past the wait makes the checkpoint stop and name its pid; nothing is half-written.
* The chain id carries the transaction's start time as well as its id, so it stays unique after
  a logical restore, which restarts transaction ids; checkpoints count audit ids, which a restore
  keeps.
* Hashing in the database chains every insert, whoever writes it; nobody can supply their own
  hash, position or timestamp (the trigger stamps ``occurred_at = now()``).
* :func:`audited` writes the entry in the same statement as the mutation (a data-modifying
  ``WITH``), so the audit adds no round trip; :func:`record_audit` is the general form, one more
  statement in the caller's transaction.

**Canonical row, version 1.** ``"v1"`` followed by these fields, each written as ``~`` for NULL or
``<length in characters>:<text>``: audit_id, chain_id, chain_seq, txn_entry, occurred_at as
integer microseconds since the Unix epoch, org_id, actor, endpoint, method, request_id, operation,
entity_type, entity_id, before_data and after_data as PostgreSQL's jsonb text, reason, source.
Hashes are stored as 32 raw bytes (and shown as hex); the hash input is the previous hash's 32
bytes followed by the UTF-8 canonical row. The first link of a chain has 32 zero bytes as
``prev_hash``; on a transaction's chain ``txn_entry`` equals ``chain_seq``. The checkpoint text
is described in the migration. :func:`verify_chain` recomputes every hash here in Python,
independently of the trigger's SQL.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import groupby
from operator import itemgetter
from pathlib import PurePath
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.errors import AuditError, SchemaNotReady
from orchestration_pipeline.lib.canonical_json import json_has_nul
from orchestration_pipeline.lib.db import end_read, require_schema
from orchestration_pipeline.lib.redaction.patterns import may_contain_secret, redact_json_text, redact_text
from orchestration_pipeline.lib.verdict import Verdict

OPERATIONS = frozenset(
    {"create", "update", "delete", "complete", "grant", "revoke", "rebuild", "repair", "purge", "replay"}
)
AUDIT_TABLES = ("audit_ledger", "audit_chain_heads", "audit_checkpoints")
TXN_CHAIN_PREFIX = "tx/"  # chains of 0010 on; older chain ids are YYYY-MM-DD/NN and have heads
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
GENESIS_HASH = "00" * 32  # hex, as reported
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


# --- verification -----------------------------------------------------------------------------


def _field(value: str | None) -> str:
    return "~" if value is None else f"{len(value)}:{value}"


def _epoch_micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def canonical_row(row: Mapping[str, Any]) -> str:
    """Version 1 canonical text of a ledger row (jsonb columns given as their PostgreSQL text)."""
    parts = [
        str(row["audit_id"]),
        row["chain_id"],
        str(row["chain_seq"]),
        str(row["txn_entry"]),
        str(_epoch_micros(row["occurred_at"])),
        row["org_id"],
        row["actor"],
        row["endpoint"],
        row["method"],
        row["request_id"],
        row["operation"],
        row["entity_type"],
        row["entity_id"],
        row["before_data"],
        row["after_data"],
        row["reason"],
        row["source"],
    ]
    return "v1" + "".join(_field(p) for p in parts)


def compute_row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """sha256(prev_hash bytes || UTF-8 canonical row), as hex; ``prev_hash`` is given as hex."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_row(row).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class BrokenLink:
    """Where a chain stops verifying: the entry, what its hash should be, and what was found."""

    chain_id: str
    audit_id: int | None
    chain_seq: int | None
    kind: str  # row_hash | prev_hash | sequence | head | missing_head | checkpoint | checkpoint_count | checkpoint_link
    expected: str | None
    found: str | None

    def describe(self) -> str:
        what = {
            "row_hash": "entry content does not match its row_hash (changed after it was written)",
            "prev_hash": "entry does not link to the one before it (an entry was removed or reordered)",
            "sequence": "chain sequence has a gap or repeat",
            "head": "chain head does not match the last entry (newest entries removed or head altered)",
            "missing_head": "chain has entries but no head row",
            "checkpoint": "checkpoint does not match the entries it sealed (an entry was changed, removed or "
            "added, or the checkpoint altered)",
            "checkpoint_count": "checkpoint sealed a different number of entries than its range now holds "
            "(entries removed or added)",
            "checkpoint_link": "checkpoint does not follow the one before it (a checkpoint was removed or altered)",
        }[self.kind]
        return (
            f"chain {self.chain_id} broken at audit_id {self.audit_id} (seq {self.chain_seq}): {what}; "
            f"expected {self.expected}, found {self.found}"
        )


@dataclass
class ChainReport:
    """The result of recomputing every chain."""

    chains: int = 0
    rows: int = 0
    checkpoints: int = 0
    sealed_through_id: int = 0  # entries up to this id are sealed by a checkpoint
    unsealed_entries: int = 0  # newer entries: run checkpoint_ledger to seal them
    broken_chains: int = 0  # chains and checkpoints that do not verify
    broken: list[BrokenLink] = field(default_factory=list)  # first break of each chain, bounded

    @property
    def ok(self) -> bool:
        return self.broken_chains == 0

    @property
    def first_broken(self) -> BrokenLink | None:
        return min(self.broken, key=lambda b: (b.chain_id, b.chain_seq or 0), default=None)

    def as_dict(self) -> dict[str, Any]:
        first = self.first_broken
        return {
            "ok": self.ok,
            "chains": self.chains,
            "rows": self.rows,
            "checkpoints": self.checkpoints,
            "sealed_through_id": self.sealed_through_id,
            "unsealed_entries": self.unsealed_entries,
            "broken_chains": self.broken_chains,
            "first_broken": asdict(first) if first else None,
            "broken": [asdict(b) for b in self.broken],
        }


_VERIFY_SQL = """
SELECT audit_id, chain_id, chain_seq, txn_entry, occurred_at, org_id, actor, endpoint, method, request_id, operation,
       entity_type, entity_id, before_data::text AS before_data, after_data::text AS after_data, reason,
       source, encode(prev_hash, 'hex') AS prev_hash, encode(row_hash, 'hex') AS row_hash
FROM audit_ledger {where} ORDER BY chain_id, chain_seq
"""


def _chain_breaks(
    rows: Iterable[dict[str, Any]], head: Mapping[str, Any] | None, *, has_head: bool = True
) -> tuple[int, BrokenLink | None]:
    """Verify one chain's rows (in sequence order), and its head if it has one; returns (rows, first break)."""
    count, broken = 0, None
    expected_prev, expected_seq, last = GENESIS_HASH, 1, None
    for row in rows:
        count += 1
        last = row
        if broken is not None:
            continue
        cid, aid, seq = row["chain_id"], row["audit_id"], row["chain_seq"]
        if row["prev_hash"] != expected_prev:
            broken = BrokenLink(cid, aid, seq, "prev_hash", expected_prev, row["prev_hash"])
        elif seq != expected_seq:
            broken = BrokenLink(cid, aid, seq, "sequence", str(expected_seq), str(seq))
        else:
            recomputed = compute_row_hash(row["prev_hash"], row)
            if recomputed != row["row_hash"]:
                broken = BrokenLink(cid, aid, seq, "row_hash", recomputed, row["row_hash"])
        expected_prev, expected_seq = row["row_hash"], seq + 1
    if broken is None and last is not None and has_head:
        if head is None:
            broken = BrokenLink(
                last["chain_id"], last["audit_id"], last["chain_seq"], "missing_head", last["row_hash"], None
            )
        elif head["last_seq"] != last["chain_seq"] or head["last_hash"] != last["row_hash"]:
            broken = BrokenLink(
                last["chain_id"],
                head["last_id"],
                head["last_seq"],
                "head",
                head["last_hash"],
                last["row_hash"],
            )
    return count, broken


def verify_chain(
    conn: psycopg.Connection, *, chain_id: str | None = None, max_reported: int = 10
) -> ChainReport:
    """Recompute every chain (or one) from its first entry; report the first broken link of each.

    Reads in one REPEATABLE READ snapshot, so entries committed meanwhile never look like a
    mismatched head. Needs a connection with no open transaction.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise AuditError(
            "verify_chain needs a connection with no open transaction — commit or roll back first"
        )
    require_schema(conn, AUDIT_TABLES, record_decision=False)
    report = ChainReport()
    where = "WHERE chain_id = %s" if chain_id else ""
    params = (chain_id,) if chain_id else ()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        with conn.cursor(row_factory=dict_row) as cur:
            heads = {
                h["chain_id"]: h
                for h in cur.execute(
                    f"SELECT chain_id, last_seq, encode(last_hash, 'hex') AS last_hash, last_id FROM audit_chain_heads {where}",
                    params,
                ).fetchall()
            }
        seen: set[str] = set()
        with conn.cursor(name="audit_verify", row_factory=dict_row) as cur:
            cur.itersize = 5000
            cur.execute(_VERIFY_SQL.format(where=where), params)
            # Rows stream chain by chain; memory stays bounded whatever the ledger's size.
            for cid, rows in groupby(cur, key=itemgetter("chain_id")):
                if cid in heads:  # per-transaction chains have no head: not kept, memory stays flat
                    seen.add(cid)
                count, broken = _chain_breaks(
                    rows, heads.get(cid), has_head=not cid.startswith(TXN_CHAIN_PREFIX)
                )
                report.chains += 1
                report.rows += count
                if broken is not None:
                    report.broken_chains += 1
                    if len(report.broken) < max_reported:
                        report.broken.append(broken)
        if chain_id is None:
            checkpoint_break = _verify_checkpoints(conn, report)
            if checkpoint_break is not None:
                report.broken_chains += 1
                report.broken.append(checkpoint_break)
    for cid in sorted(set(heads) - seen):
        head = heads[cid]
        if head["last_seq"] == 0:
            continue  # created by a transaction that rolled back its first entry
        report.chains += 1
        report.broken_chains += 1
        if len(report.broken) < max_reported:
            report.broken.append(
                BrokenLink(cid, head["last_id"], head["last_seq"], "head", head["last_hash"], None)
            )
    return report


def _verify_checkpoints(conn: psycopg.Connection, report: ChainReport) -> BrokenLink | None:
    """Recompute the checkpoint chain from the entries (in the caller's snapshot); count the unsealed.

    Returns the first break: the checkpoints after it are not judged, since they build on it.
    """
    checkpoints = conn.execute(
        """SELECT checkpoint_seq, from_id, through_id, entries, encode(prev_hash, 'hex'),
                  encode(checkpoint_hash, 'hex')
           FROM audit_checkpoints ORDER BY checkpoint_seq"""
    ).fetchall()
    report.checkpoints = len(checkpoints)
    expected_prev, expected_from, expected_seq = GENESIS_HASH, 0, 1
    with conn.cursor(name="audit_verify_checkpoints") as cur:
        cur.itersize = 10000
        cur.execute("SELECT audit_id, encode(row_hash, 'hex') FROM audit_ledger ORDER BY audit_id")
        entries = iter(cur)
        pending = next(entries, None)
        for seq, from_id, through_id, sealed, stored_prev, stored_hash in checkpoints:
            where = f"checkpoint/{seq}"
            if seq != expected_seq or from_id != expected_from or stored_prev != expected_prev:
                return BrokenLink(where, through_id, seq, "checkpoint_link", expected_prev, stored_prev)
            digest = hashlib.sha256(bytes.fromhex(expected_prev))
            digest.update(f"c1|{seq}|{from_id}|{through_id}|{sealed}|".encode())
            count = 0
            while pending is not None and pending[0] <= through_id:
                digest.update(f"{',' if count else ''}{pending[0]}:{pending[1]}".encode())
                count += 1
                pending = next(entries, None)
            if count != sealed:
                return BrokenLink(where, through_id, seq, "checkpoint_count", str(sealed), str(count))
            if digest.hexdigest() != stored_hash:
                return BrokenLink(where, through_id, seq, "checkpoint", digest.hexdigest(), stored_hash)
            expected_prev, expected_from, expected_seq = stored_hash, through_id, seq + 1
        report.sealed_through_id = expected_from
        report.unsealed_entries = (pending is not None) + sum(1 for _ in entries)
    return None


def chain_verdict(conn: psycopg.Connection) -> Verdict:
    """``audit_chain_intact``: every chain recomputes, links and ends at its head."""
    report = verify_chain(conn)
    first = report.first_broken
    metadata = {k: v for k, v in report.as_dict().items() if k != "ok"}
    if report.ok:
        return Verdict(
            True,
            f"{report.rows} entries in {report.chains} chains verified, {report.checkpoints} checkpoints; "
            f"{report.unsealed_entries} entries not sealed by a checkpoint yet",
            metadata,
        )
    more = f" (+{report.broken_chains - 1} more broken chains)" if report.broken_chains > 1 else ""
    return Verdict(
        False,
        f"{first.describe()}{more} — follow the forensic flow in docs/runbooks/audit.md",
        metadata,
    )


# --- the guard: triggers and privileges -------------------------------------------------------

_ROW, _BEFORE, _INSERT, _DELETE, _UPDATE, _TRUNCATE = 1, 2, 4, 8, 16, 32
# Run as the ledger's owner, so each must be owned by it with search_path pinned to pg_catalog.
_CHECKPOINT_FUNCTION = "audit_checkpoint(integer,integer)"
_DEFINER_FUNCTIONS = ("audit_ledger_chain()", _CHECKPOINT_FUNCTION)


def guard_problems(conn: psycopg.Connection) -> list[str]:
    """What is missing from the ledger's immutability setup (empty when all is in place)."""
    problems: list[str] = []
    exists = conn.execute(
        "SELECT to_regclass(t) IS NOT NULL FROM unnest(%s::text[]) AS t", (list(AUDIT_TABLES),)
    ).fetchall()
    if not all(e for (e,) in exists):
        end_read(conn)
        return ["audit_ledger tables missing — run 'orchestration-pipeline db migrate'"]
    triggers = conn.execute(
        """SELECT c.relname, t.tgname, t.tgtype, t.tgenabled, p.proname,
                  t.tgqual IS NOT NULL OR t.tgattr::text <> ''
           FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_class c ON c.oid = t.tgrelid
           WHERE t.tgrelid IN ('audit_ledger'::regclass, 'audit_checkpoints'::regclass) AND NOT t.tgisinternal"""
    ).fetchall()
    # 'O' fires normally and 'A' always; 'D' is disabled and 'R' fires only in replica mode. A
    # trigger with a WHEN condition or an UPDATE OF column list fires for some rows only: no guard.
    live = [
        (table, tgtype, proc)
        for table, _n, tgtype, enabled, proc, partial in triggers
        if enabled in ("O", "A") and not partial
    ]
    for table, name, _tgtype, enabled, _proc, partial in triggers:
        if enabled not in ("O", "A"):
            problems.append(
                f"trigger {name} is disabled (tgenabled={enabled}) — ALTER TABLE {table} ENABLE TRIGGER {name}"
            )
        elif partial:
            problems.append(
                f"trigger {name} on {table} fires only for some rows (a WHEN condition or UPDATE OF "
                "columns) — reapply the migration that creates it (0004, 0010)"
            )

    def covered(table: str, proc: str, bits: int, row_level: bool, before: bool) -> bool:
        return any(
            tb == table
            and p == proc
            and bool(t & _BEFORE) == before
            and bool(t & _ROW) == row_level
            and t & bits
            for tb, t, p in live
        )

    wanted = [
        ("audit_ledger", "audit_ledger_chain", _INSERT, True, True, "BEFORE INSERT hash-chain trigger"),
        *(
            (table, "audit_ledger_refuse_change", bits, row_level, True, label)
            for table in ("audit_ledger", "audit_checkpoints")
            for bits, row_level, label in (
                (_UPDATE, True, "row-level BEFORE UPDATE guard"),
                (_DELETE, True, "row-level BEFORE DELETE guard"),
                (_TRUNCATE, False, "statement-level BEFORE TRUNCATE guard"),
            )
        ),
    ]
    for table, proc, bits, row_level, before, label in wanted:
        if not covered(table, proc, bits, row_level, before):
            problems.append(
                f"{label} missing on {table} — reapply sql/orchestration/0004_audit_ledger.sql, then 0006 "
                "and 0010 (psql -1 -f each)"
            )
    # The unique chain position is what makes a fork impossible, whatever a writer sends.
    unique = conn.execute(
        """SELECT count(*) FROM pg_constraint WHERE conrelid = 'audit_ledger'::regclass AND contype = 'u'
             AND conname = 'audit_ledger_chain_position'"""
    ).fetchone()[0]
    if not unique:
        problems.append(
            "unique constraint audit_ledger_chain_position (chain_id, chain_seq) missing — reapply "
            "sql/orchestration/0004_audit_ledger.sql"
        )

    roles = dict(
        conn.execute(
            "SELECT rolname, rolsuper FROM pg_roles WHERE rolname = ANY(%s)", ([OWNER_ROLE, WRITER_ROLE],)
        ).fetchall()
    )
    missing_roles = [r for r in (OWNER_ROLE, WRITER_ROLE) if r not in roles]
    for role in missing_roles:
        problems.append(f"role {role} missing — reapply sql/orchestration/0004_audit_ledger.sql")
    for role, superuser in roles.items():
        if superuser:
            problems.append(f"role {role} is a superuser — ALTER ROLE {role} NOSUPERUSER")
    if missing_roles:
        end_read(conn)
        return problems  # the privilege queries below need both roles

    owners = conn.execute(
        """SELECT c.relname, pg_get_userbyid(c.relowner),
                  (SELECT count(*) FROM aclexplode(coalesce(c.relacl, '{}'::aclitem[])) a WHERE a.grantee = 0)
           FROM pg_class c WHERE c.oid IN ('audit_ledger'::regclass, 'audit_chain_heads'::regclass,
                                          'audit_checkpoints'::regclass)"""
    ).fetchall()
    for table, owner, public_grants in owners:
        if owner != OWNER_ROLE:
            problems.append(f"{table} is owned by {owner} — ALTER TABLE {table} OWNER TO {OWNER_ROLE}")
        if public_grants:
            problems.append(f"PUBLIC has privileges on {table} — REVOKE ALL ON {table} FROM PUBLIC")
    for signature in _DEFINER_FUNCTIONS:
        fn_owner = conn.execute(
            "SELECT pg_get_userbyid(proowner), prosecdef FROM pg_proc WHERE oid = to_regprocedure(%s)",
            (signature,),
        ).fetchone()
        if fn_owner is None or fn_owner[0] != OWNER_ROLE or not fn_owner[1]:
            problems.append(
                f"{signature} must be SECURITY DEFINER owned by {OWNER_ROLE} — reapply "
                "sql/orchestration/0010_audit_transaction_chains.sql (psql -1 -f)"
            )
    if conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (WRITER_ROLE, OWNER_ROLE)).fetchone()[0]:
        problems.append(f"{WRITER_ROLE} is a member of {OWNER_ROLE} — REVOKE {OWNER_ROLE} FROM {WRITER_ROLE}")
    privileges = {
        ("audit_ledger", "INSERT"): False,  # table-wide; the content columns are granted one by one
        ("audit_ledger", "SELECT"): True,
        ("audit_ledger", "UPDATE"): False,
        ("audit_ledger", "DELETE"): False,
        ("audit_ledger", "TRUNCATE"): False,
        ("audit_ledger", "TRIGGER"): False,
        ("audit_chain_heads", "INSERT"): False,
        ("audit_chain_heads", "UPDATE"): False,
        ("audit_chain_heads", "DELETE"): False,
        ("audit_chain_heads", "TRUNCATE"): False,
        ("audit_checkpoints", "SELECT"): True,
        ("audit_checkpoints", "INSERT"): False,  # only through audit_checkpoint(), which decides what to seal
        ("audit_checkpoints", "UPDATE"): False,
        ("audit_checkpoints", "DELETE"): False,
        ("audit_checkpoints", "TRUNCATE"): False,
    }
    # setval() could move the ledger's ids back: new entries would then collide with stored ones
    # or fill sealed ranges. (An identity column needs no privilege on its sequence to insert.)
    if conn.execute(
        "SELECT has_sequence_privilege(%s, pg_get_serial_sequence('audit_ledger', 'audit_id'), 'UPDATE')",
        (WRITER_ROLE,),
    ).fetchone()[0]:
        problems.append(
            f"{WRITER_ROLE} may setval() the ledger's id sequence — REVOKE UPDATE ON SEQUENCE "
            f"audit_ledger_audit_id_seq FROM {WRITER_ROLE}"
        )
    for (table, privilege), wanted_grant in privileges.items():
        has = conn.execute(
            "SELECT has_table_privilege(%s, %s, %s)", (WRITER_ROLE, table, privilege)
        ).fetchone()[0]
        if has and not wanted_grant:
            problems.append(
                f"{WRITER_ROLE} may {privilege} {table} — REVOKE {privilege} ON {table} FROM {WRITER_ROLE}"
            )
        elif wanted_grant and not has:
            problems.append(
                f"{WRITER_ROLE} cannot {privilege} {table} — GRANT {privilege} ON {table} TO {WRITER_ROLE}"
            )
    columns = dict(
        conn.execute(
            """SELECT a.attname, has_column_privilege(%s, 'audit_ledger', a.attname, 'INSERT')
               FROM pg_attribute a WHERE a.attrelid = 'audit_ledger'::regclass AND a.attnum > 0
                 AND NOT a.attisdropped""",
            (WRITER_ROLE,),
        ).fetchall()
    )
    for column, may_insert in sorted(columns.items()):
        if may_insert and column not in CONTENT_COLUMNS:
            problems.append(
                f"{WRITER_ROLE} may set audit_ledger.{column} — REVOKE INSERT ON audit_ledger FROM {WRITER_ROLE}, "
                "then reapply the column grant at the end of sql/orchestration/0006_audit_chain_fast.sql "
                "(psql -1 -f)"
            )
        elif column in CONTENT_COLUMNS and not may_insert:
            problems.append(
                f"{WRITER_ROLE} cannot insert audit_ledger.{column} — GRANT INSERT ({column}) ON audit_ledger "
                f"TO {WRITER_ROLE}"
            )
    pinned = conn.execute(
        """SELECT p.oid::regprocedure::text, coalesce('search_path=pg_catalog, pg_temp' = ANY(p.proconfig), false)
           FROM pg_proc p WHERE p.oid IN (SELECT to_regprocedure(f) FROM unnest(%s::text[]) AS f)""",
        (list(_DEFINER_FUNCTIONS),),
    ).fetchall()
    for proc, ok in pinned:
        if not ok:
            problems.append(
                f"{proc} runs as its owner without search_path pinned to pg_catalog — reapply "
                "sql/orchestration/0010_audit_transaction_chains.sql (psql -1 -f)"
            )
    if conn.execute(
        "SELECT NOT has_function_privilege(%s, %s, 'EXECUTE')", (WRITER_ROLE, _CHECKPOINT_FUNCTION)
    ).fetchone()[0]:
        problems.append(
            f"{WRITER_ROLE} cannot run audit_checkpoint() — GRANT EXECUTE ON FUNCTION "
            f"audit_checkpoint(integer, integer) TO {WRITER_ROLE}"
        )
    sequence = conn.execute(
        """SELECT s.seqcache, s.seqcycle FROM pg_sequence s
           WHERE s.seqrelid = pg_get_serial_sequence('audit_ledger', 'audit_id')::regclass"""
    ).fetchone()
    if sequence is None or sequence[0] != 1 or sequence[1]:
        # With cached or cycling ids an entry could land in a range a checkpoint already sealed.
        problems.append(
            "audit_ledger.audit_id must draw ids one at a time, in order — ALTER TABLE audit_ledger "
            "ALTER COLUMN audit_id SET CACHE 1 SET NO CYCLE"
        )
    end_read(conn)
    return problems


def guard_verdict(conn: psycopg.Connection) -> Verdict:
    """``audit_guard_present``: triggers enabled, owner separate, writer limited to content INSERT and SELECT."""
    problems = guard_problems(conn)
    who = conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    end_read(conn)
    metadata = {"problems": problems[:10], "connected_as": who[0], "connected_as_superuser": bool(who[1])}
    if not problems:
        return Verdict(
            True,
            "append-only triggers enabled; ledger owned by orch_audit_owner; writer may only SELECT and insert content",
            metadata,
        )
    return Verdict(False, f"{len(problems)} problem(s): {problems[0]}", metadata)


# --- summary and queries ----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointRun:
    """What :func:`checkpoint_ledger` sealed, and the checkpoint chain's newest link."""

    created: int  # checkpoints written by this run
    entries: int  # entries they sealed
    busy: str | None  # why it stopped early: writers left open (their pids), or another checkpoint
    checkpoint_seq: int | None
    through_id: int | None
    checkpoint_hash: str | None


def checkpoint_ledger(
    conn: psycopg.Connection,
    *,
    max_entries: int = 20_000,
    wait_ms: int = 2_000,
    attempts: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> CheckpointRun:
    """Seal the entries written before this call and not sealed yet, ``max_entries`` per checkpoint.

    Each checkpoint is one short transaction; writers never wait for it. It waits up to
    ``wait_ms`` for audited transactions still open when it started; one left open longer makes
    the attempt fail and retry, up to ``attempts`` times in a row, and then the run stops with
    ``busy`` saying why (the pids). So does another checkpoint running at the same time.
    ``progress(checkpoints, entries)`` is called after each checkpoint.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise AuditError(
            "checkpoint_ledger needs a connection with no open transaction — commit or roll back first"
        )
    require_schema(conn, AUDIT_TABLES, record_decision=False)
    # Stop at the entries that exist now, even if writers keep adding more meanwhile.
    target = conn.execute("SELECT coalesce(max(audit_id), 0) FROM audit_ledger").fetchone()[0]
    end_read(conn)
    created = entries = failures = 0
    busy, last = None, None
    while True:
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                row = conn.execute(
                    "SELECT * FROM audit_checkpoint(%s, %s)", (max_entries, wait_ms)
                ).fetchone()
        except psycopg.errors.LockNotAvailable as exc:
            failures += 1
            if failures >= attempts:
                text = exc.diag.message_primary or str(exc)
                busy = "another checkpoint is running" if "audit_checkpoints" in text else text
                break
            time.sleep(0.05 * failures)
            continue
        if row is None:
            break
        failures = 0
        created += 1
        entries += row[3]
        last = (row[0], row[2], row[4])  # seq, through_id, hash
        if progress is not None:
            progress(created, entries)
        if row[2] >= target:
            break
    if last is None:  # nothing sealed now: report the newest checkpoint there is
        last = conn.execute(
            """SELECT checkpoint_seq, through_id, encode(checkpoint_hash, 'hex') FROM audit_checkpoints
               ORDER BY checkpoint_seq DESC LIMIT 1"""
        ).fetchone()
        end_read(conn)
    return CheckpointRun(created, entries, busy, *(last or (None, None, None)))


def ledger_summary(conn: psycopg.Connection) -> dict[str, Any]:
    """Entries (sealed and not yet), newest entry, and the newest checkpoint: an anchor to compare later."""
    require_schema(conn, AUDIT_TABLES, record_decision=False)
    last = conn.execute(
        """SELECT checkpoint_seq, through_id, encode(checkpoint_hash, 'hex'), created_at,
                  (SELECT sum(entries) FROM audit_checkpoints)
           FROM audit_checkpoints ORDER BY checkpoint_seq DESC LIMIT 1"""
    ).fetchone()
    seq, through, digest, sealed_at, sealed = last or (0, 0, None, None, 0)
    unsealed = conn.execute("SELECT count(*) FROM audit_ledger WHERE audit_id > %s", (through,)).fetchone()[0]
    newest = conn.execute("SELECT occurred_at FROM audit_ledger ORDER BY audit_id DESC LIMIT 1").fetchone()
    end_read(conn)
    return {
        "entries": int(sealed) + unsealed,
        "sealed_entries": int(sealed),
        "unsealed_entries": unsealed,
        "checkpoints": seq,
        "last_checkpoint_hash": digest,
        "last_checkpoint_at": sealed_at,
        "last_entry_at": newest[0] if newest else None,
    }


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
