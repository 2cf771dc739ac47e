"""Hash chains and checkpoints of the audit ledger: computing, verifying and sealing them.

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
  checkpoint; a changed checkpoint breaks the checkpoint chain.
* Someone who can bypass the guard (a superuser) can also recompute every hash, entries and
  checkpoints alike, and the chains then verify. Only a checkpoint kept outside the database
  shows it: ``audit_ledger_integrity`` records the newest one (``SEQ:HASH``) in Dagster at every
  materialization, ``audit_chain_intact`` checks that the chain still holds the one recorded at the
  previous materialization, and ``audit verify --expect-head`` checks any kept elsewhere
  (:class:`CheckpointHead`).
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
  hash, position or time. The trigger stamps ``occurred_at`` and ``audit_checkpoint()`` a
  checkpoint's ``created_at`` with ``clock_timestamp()``, the moment the row is written
  (``0016_audit_database_clock.sql``): not the start of the writer's transaction, which the
  writer would choose by when it begins.
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

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.errors import AuditError
from orchestration_pipeline.lib.audit.ledger import AUDIT_TABLES
from orchestration_pipeline.lib.db import end_read, require_schema
from orchestration_pipeline.lib.verdict import Verdict
from orchestration_pipeline.lib.wording import plural

# --- verification -----------------------------------------------------------------------------


TXN_CHAIN_PREFIX = "tx/"  # chains of 0010 on; older chain ids are YYYY-MM-DD/NN and have heads
GENESIS_HASH = "00" * 32  # hex, as reported
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    # row_hash | prev_hash | sequence | head | missing_head | checkpoint | checkpoint_count | checkpoint_link | anchor
    kind: str
    expected: str | None
    found: str | None

    def describe(self) -> str:
        if self.kind == "anchor":
            return (
                f"the checkpoint kept outside the database is not in the checkpoint chain: expected "
                f"{self.expected}, found {self.found} (the ledger and its checkpoints were rewritten, or "
                "restored from an older copy)"
            )
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
    newest_checkpoint: str | None = None  # SEQ:HASH of the newest checkpoint, as stored
    expected_head: str | None = None  # the checkpoint kept outside the database, when one was given

    @property
    def ok(self) -> bool:
        return self.broken_chains == 0

    @property
    def head_break(self) -> BrokenLink | None:
        """Why the expected head is not in the checkpoint chain (None: found, or none expected)."""
        return next((b for b in self.broken if b.kind == "anchor"), None)

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
            "newest_checkpoint": self.newest_checkpoint,
            "expected_head": self.expected_head,
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
    conn: psycopg.Connection,
    *,
    chain_id: str | None = None,
    max_reported: int = 10,
    expect_head: CheckpointHead | None = None,
) -> ChainReport:
    """Recompute every chain (or one) from its first entry; report the first broken link of each.

    With ``expect_head`` (a checkpoint kept outside the database) the checkpoint chain must also
    hold that checkpoint, at its number when given: a rewrite that recomputed every hash passes
    everything else. Reads in one REPEATABLE READ snapshot, so entries committed meanwhile never
    look like a mismatched head. Needs a connection with no open transaction.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise AuditError(
            "verify_chain needs a connection with no open transaction — commit or roll back first"
        )
    if chain_id is not None and expect_head is not None:
        raise AuditError(
            "an expected head is checked against the checkpoint chain, which verifying one chain "
            "skips — verify the whole ledger, or drop the expected head"
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
            _verify_sealing(conn, report, expect_head)
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


def _verify_sealing(
    conn: psycopg.Connection, report: ChainReport, expect_head: CheckpointHead | None
) -> None:
    """The checkpoint chain, and ``expect_head`` in it, into ``report`` (in the caller's snapshot)."""
    found = [_verify_checkpoints(conn, report)]
    if expect_head is not None:
        report.expected_head = str(expect_head)
        found.append(_head_break(conn, expect_head))
    for broken in filter(None, found):
        report.broken_chains += 1
        report.broken.append(broken)


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
    if checkpoints:
        report.newest_checkpoint = f"{checkpoints[-1][0]}:{checkpoints[-1][5]}"
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


def chain_verdict(conn: psycopg.Connection, expect_head: CheckpointHead | None = None) -> Verdict:
    """``audit_chain_intact``: every chain recomputes, links and ends at its head, and the checkpoint
    chain still holds ``expect_head``, the checkpoint kept outside the database (when there is one)."""
    report = verify_chain(conn, expect_head=expect_head)
    first = report.first_broken
    metadata = {k: v for k, v in report.as_dict().items() if k != "ok"}
    if report.ok:
        if expect_head is None:
            anchor = "; no checkpoint kept outside the database to compare yet"
        else:
            which = (
                f"checkpoint {expect_head.seq}" if expect_head.seq else f"checkpoint {expect_head.hash[:12]}…"
            )
            anchor = f"; {which} kept outside the database is still in the chain"
        return Verdict(
            True,
            f"{plural(report.rows, 'entry', 'entries')} in {plural(report.chains, 'chain')} verified, "
            f"{plural(report.checkpoints, 'checkpoint')}; "
            f"{plural(report.unsealed_entries, 'entry', 'entries')} not sealed by a checkpoint yet{anchor}",
            metadata,
        )
    more = f" (+{report.broken_chains - 1} more broken chains)" if report.broken_chains > 1 else ""
    return Verdict(
        False,
        f"{first.describe()}{more} — follow the forensic flow in docs/runbooks/audit.md",
        metadata,
    )


# --- the checkpoint kept outside the database ------------------------------------------------

_HEAD_TEXT = re.compile(r"(?:(\d{1,18}):)?([0-9a-fA-F]{64})")


@dataclass(frozen=True)
class CheckpointHead:
    """A checkpoint kept outside the database: its hash, and its number when known.

    Written ``SEQ:HASH`` (or ``HASH`` alone), as ``audit checkpoint``, ``audit verify`` and the
    ``audit_ledger_integrity`` materialization show it.
    """

    seq: int | None
    hash: str  # 64 hex digits, lower case

    def __str__(self) -> str:
        return self.hash if self.seq is None else f"{self.seq}:{self.hash}"


def parse_head(text: str) -> CheckpointHead:
    """``SEQ:HASH`` or ``HASH`` (64 hex digits) as a :class:`CheckpointHead`."""
    match = _HEAD_TEXT.fullmatch(text.strip())
    if match is None or (match[1] is not None and int(match[1]) < 1):
        raise AuditError(
            f"cannot read checkpoint head {text!r} — give SEQ:HASH (a checkpoint number from 1, a colon, "
            "64 hex digits) or the HASH alone, as 'audit checkpoint' and 'audit verify' print it"
        )
    return CheckpointHead(int(match[1]) if match[1] else None, match[2].lower())


def _head_break(conn: psycopg.Connection, expected: CheckpointHead) -> BrokenLink | None:
    """Where ``expected`` is missing from the checkpoint chain (in the caller's transaction); None if present.

    With a number the checkpoint of that number must have that hash (later checkpoints may follow
    it); without, some checkpoint must.
    """
    newest = conn.execute(
        """SELECT checkpoint_seq || ':' || encode(checkpoint_hash, 'hex') FROM audit_checkpoints
           ORDER BY checkpoint_seq DESC LIMIT 1"""
    ).fetchone()
    ends = f"the newest is {newest[0]}" if newest else "there are no checkpoints"
    if expected.seq is None:
        match = conn.execute(
            "SELECT 1 FROM audit_checkpoints WHERE checkpoint_hash = decode(%s, 'hex') LIMIT 1",
            (expected.hash,),
        ).fetchone()
        if match is not None:
            return None
        return BrokenLink(
            "checkpoint/anchor", None, None, "anchor", str(expected), f"no checkpoint with that hash ({ends})"
        )
    row = conn.execute(
        "SELECT through_id, encode(checkpoint_hash, 'hex') FROM audit_checkpoints WHERE checkpoint_seq = %s",
        (expected.seq,),
    ).fetchone()
    if row is not None and row[1] == expected.hash:
        return None
    found = f"{expected.seq}:{row[1]}" if row else f"no checkpoint {expected.seq} ({ends})"
    return BrokenLink(
        f"checkpoint/{expected.seq}", row[0] if row else None, expected.seq, "anchor", str(expected), found
    )


def head_break(conn: psycopg.Connection, expected: CheckpointHead) -> BrokenLink | None:
    """Whether the checkpoint chain still holds ``expected`` (one lookup, no recomputation): None if
    it does, else what was found instead. :func:`verify_chain` also recomputes the chain up to it."""
    require_schema(conn, AUDIT_TABLES, record_decision=False)
    try:
        return _head_break(conn, expected)
    finally:
        end_read(conn)


# --- checkpoints and summary -----------------------------------------------------------------


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
        "last_checkpoint_seq": seq or None,
        "last_checkpoint_hash": digest,
        "last_checkpoint_at": sealed_at,
        "last_entry_at": newest[0] if newest else None,
    }
