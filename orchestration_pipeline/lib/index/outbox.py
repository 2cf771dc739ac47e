"""The search outbox: claiming work under a lease, settling it, retries, dead letters, pruning.

Each function is one short transaction of its own (the connection is in autocommit mode between
them), so the sync never holds a transaction open while it embeds or writes to the index.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from orchestration_pipeline.lib.audit.ledger import record_audit


@dataclass(frozen=True)
class OutboxItem:
    outbox_id: int
    entity_id: str
    version: int
    op: str  # upsert | delete
    content_hash: str | None
    attempts: int
    enqueued_at: datetime
    cause: str


@dataclass(frozen=True)
class Claim:
    """The claimed rows of some entities: per entity, the winner (highest version) and the rest."""

    winners: list[OutboxItem]
    superseded: list[OutboxItem]

    @property
    def size(self) -> int:
        return len(self.winners) + len(self.superseded)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter; every error class counts."""

    max_attempts: int = 6
    base_delay_s: float = 2.0
    max_delay_s: float = 300.0

    def delay_s(self, attempts: int, rng: random.Random | None = None) -> float:
        """The wait before attempt ``attempts + 1``: base·2^(attempts-1), capped, times U(0.5, 1)."""
        if self.base_delay_s <= 0:
            return 0.0
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** max(attempts - 1, 0))
        return ceiling * (0.5 + 0.5 * (rng or random).random())


# Pending, due and unleased rows, oldest first; then every other pending unleased row of the same
# entities (so a claim holds all of an entity's versions and the highest wins). SKIP LOCKED: two
# syncs at once claim disjoint rows.
_CLAIM_SQL = """
WITH picked AS (
    SELECT outbox_id, entity_id FROM search_outbox
    WHERE done_at IS NULL AND next_attempt_at <= now()
      AND (lease_expires_at IS NULL OR lease_expires_at < now())
    ORDER BY next_attempt_at, outbox_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), siblings AS (
    SELECT o.outbox_id FROM search_outbox o
    WHERE o.done_at IS NULL AND o.entity_id IN (SELECT entity_id FROM picked)
      AND (o.lease_expires_at IS NULL OR o.lease_expires_at < now())
    FOR UPDATE SKIP LOCKED
)
UPDATE search_outbox o
SET lease_owner = %(owner)s, lease_expires_at = now() + %(lease_s)s * interval '1 second'
WHERE o.outbox_id IN (SELECT outbox_id FROM picked UNION SELECT outbox_id FROM siblings)
RETURNING o.outbox_id, o.entity_id, o.version, o.op, o.content_hash, o.attempts, o.enqueued_at, o.cause
"""


def claim(conn: psycopg.Connection, owner: str, limit: int, lease_s: float) -> Claim:
    """Lease up to ``limit`` due entities' pending rows for ``lease_s`` seconds, collapsed per
    entity: the highest version wins; the other rows of the entity are settled with it."""
    with conn.transaction():
        rows = conn.execute(_CLAIM_SQL, {"owner": owner, "limit": limit, "lease_s": lease_s}).fetchall()
    by_entity: dict[str, list[OutboxItem]] = {}
    for row in rows:
        item = OutboxItem(*row)
        by_entity.setdefault(item.entity_id, []).append(item)
    winners, superseded = [], []
    for items in by_entity.values():
        items.sort(key=lambda i: (i.version, i.outbox_id))
        winners.append(items[-1])
        superseded.extend(items[:-1])
    return Claim(winners, superseded)


def settle(conn: psycopg.Connection, owner: str, outcomes: Sequence[tuple[int, str]]) -> list[float]:
    """Mark claimed rows done with their outcome ('indexed', 'deleted', 'stale', 'superseded'),
    in one short transaction; rows whose lease another sync has taken since are left to it.
    Returns each settled row's seconds from enqueued to searchable."""
    if not outcomes:
        return []
    with conn.transaction():
        rows = conn.execute(
            """UPDATE search_outbox o
               SET done_at = clock_timestamp(), outcome = r.outcome,
                   searchable_at = clock_timestamp(),
                   lease_owner = NULL, lease_expires_at = NULL
               FROM unnest(%s::bigint[], %s::text[]) AS r(outbox_id, outcome)
               WHERE o.outbox_id = r.outbox_id AND o.lease_owner = %s AND o.done_at IS NULL
               RETURNING extract(epoch FROM o.searchable_at - o.enqueued_at)::float8""",
            ([o[0] for o in outcomes], [o[1] for o in outcomes], owner),
        ).fetchall()
    return [float(r[0]) for r in rows]


def release(conn: psycopg.Connection, owner: str, outbox_ids: Sequence[int]) -> None:
    """Give back claimed rows untouched (not attempted)."""
    if outbox_ids:
        with conn.transaction():
            conn.execute(
                "UPDATE search_outbox SET lease_owner = NULL, lease_expires_at = NULL "
                "WHERE outbox_id = ANY(%s) AND lease_owner = %s AND done_at IS NULL",
                (list(outbox_ids), owner),
            )


_MASKS = (
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
)


def error_fingerprint(error_class: str, message: str) -> tuple[str, str]:
    """(fingerprint, message template): the message with ids and numbers masked, so one kind of
    failure is one fingerprint however many items it strikes."""
    template = message.strip().splitlines()[0] if message.strip() else error_class
    for pattern, mask in _MASKS:
        template = pattern.sub(mask, template)
    template = template[:300]
    digest = hashlib.sha256(f"{error_class}\x1f{template}".encode()).hexdigest()[:16]
    return digest, template


@dataclass(frozen=True)
class Failure:
    item: OutboxItem
    error_class: str
    error_text: str


def fail(
    conn: psycopg.Connection, owner: str, failures: Sequence[Failure], policy: RetryPolicy
) -> tuple[int, int]:
    """Count one attempt for each failed item: schedule a retry with backoff, or, once its
    attempts are spent, move it to ``search_dead_letters`` (errors de-duplicated by fingerprint).
    The entity's superseded rows are released with it (they stay pending). Returns
    (retrying, dead-lettered)."""
    retrying = dead = 0
    with conn.transaction():
        for failure in failures:
            item, attempts = failure.item, failure.item.attempts + 1
            error = f"{failure.error_class}: {failure.error_text}"[:2000]
            if attempts < policy.max_attempts:
                conn.execute(
                    """UPDATE search_outbox SET attempts = %s, last_error = %s,
                           next_attempt_at = now() + %s * interval '1 second',
                           lease_owner = NULL, lease_expires_at = NULL
                       WHERE outbox_id = %s AND lease_owner = %s AND done_at IS NULL""",
                    (attempts, error, policy.delay_s(attempts), item.outbox_id, owner),
                )
                retrying += 1
                continue
            _dead_letter(conn, owner, failure, attempts, error)
            dead += 1
    return retrying, dead


def _dead_letter(conn: psycopg.Connection, owner: str, failure: Failure, attempts: int, error: str) -> None:
    item = failure.item
    moved = conn.execute(
        """UPDATE search_outbox SET attempts = %s, last_error = %s, done_at = clock_timestamp(),
               outcome = 'dead', lease_owner = NULL, lease_expires_at = NULL
           WHERE outbox_id = %s AND lease_owner = %s AND done_at IS NULL""",
        (attempts, error, item.outbox_id, owner),
    ).rowcount
    if not moved:
        return  # another sync took the row over; it counts its own attempts
    fingerprint, template = error_fingerprint(failure.error_class, failure.error_text)
    conn.execute(
        """INSERT INTO search_dead_letters (outbox_id, entity_id, version, op, content_hash, attempts,
                                           fingerprint, error_class, error_text, enqueued_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (item.outbox_id, item.entity_id, item.version, item.op, item.content_hash, attempts,
         fingerprint, failure.error_class, failure.error_text[:2000], item.enqueued_at),
    )  # fmt: skip
    conn.execute(
        """INSERT INTO search_dead_letter_errors AS g (fingerprint, error_class, message_template,
                                                      sample_error, count, first_seen, last_seen)
           VALUES (%s, %s, %s, %s, 1, now(), now())
           ON CONFLICT (fingerprint) DO UPDATE SET count = g.count + 1, last_seen = now()""",
        (fingerprint, failure.error_class, template, failure.error_text[:2000]),
    )


def enqueue(conn: psycopg.Connection, items: Sequence[tuple[str, int, str, str | None]], cause: str) -> int:
    """Add (entity_id, version, op, content_hash) rows with a cause ('repair' or 'replay'), in the
    caller's transaction."""
    if not items:
        return 0
    columns = list(zip(*items, strict=True))  # one statement however many rows (a rebuild enqueues all)
    return conn.execute(
        """INSERT INTO search_outbox (entity_id, version, op, content_hash, cause)
           SELECT e, v, o, h, %s FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[]) AS r(e, v, o, h)""",
        (cause, *(list(c) for c in columns)),
    ).rowcount


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_age_s: float
    leased: int
    retrying: int


def backlog(conn: psycopg.Connection) -> Backlog:
    """Pending rows, the age of the oldest, how many are leased and how many wait for a retry."""
    row = conn.execute(
        """SELECT count(*), coalesce(extract(epoch FROM now() - min(enqueued_at)), 0),
                  count(*) FILTER (WHERE lease_expires_at > now()),
                  count(*) FILTER (WHERE attempts > 0)
           FROM search_outbox WHERE done_at IS NULL"""
    ).fetchone()
    return Backlog(int(row[0]), float(row[1]), int(row[2]), int(row[3]))


def prune(conn: psycopg.Connection, older_than: timedelta) -> int:
    """Delete outbox rows done longer ago than ``older_than`` (dead letters live in their own
    table and are never pruned). Returns the rows deleted."""
    with conn.transaction():
        return conn.execute("DELETE FROM search_outbox WHERE done_at < now() - %s", (older_than,)).rowcount


def replay_dead_letters(
    conn: psycopg.Connection,
    *,
    actor: str,
    request_id: str,
    reason: str,
    fingerprint: str | None = None,
    dead_letter_ids: Sequence[int] | None = None,
) -> list[int]:
    """Re-enqueue open dead letters (all, one fingerprint's, or the given ids) as ``replay``
    outbox rows with fresh attempts, mark them replayed, and audit each, in one transaction.
    Returns the dead letter ids replayed."""
    if not reason.strip():
        raise ValueError("a reason is required to replay dead letters (--reason …)")
    with conn.transaction():
        rows = conn.execute(
            """SELECT dead_letter_id, entity_id, version, op, content_hash, fingerprint, error_class
               FROM search_dead_letters
               WHERE replayed_at IS NULL AND (%(fp)s::text IS NULL OR fingerprint = %(fp)s)
                 AND (%(ids)s::bigint[] IS NULL OR dead_letter_id = ANY(%(ids)s))
               ORDER BY dead_letter_id FOR UPDATE""",
            {"fp": fingerprint, "ids": list(dead_letter_ids) if dead_letter_ids else None},
        ).fetchall()
        for dl_id, entity_id, version, op, content_hash, fp, error_class in rows:
            outbox_id = conn.execute(
                "INSERT INTO search_outbox (entity_id, version, op, content_hash, cause) "
                "VALUES (%s, %s, %s, %s, 'replay') RETURNING outbox_id",
                (entity_id, version, op, content_hash),
            ).fetchone()[0]
            conn.execute(
                """UPDATE search_dead_letters SET replayed_at = now(), replayed_by = %s,
                       replay_reason = %s, replay_outbox_id = %s WHERE dead_letter_id = %s""",
                (actor, reason, outbox_id, dl_id),
            )
            record_audit(
                conn, actor=actor, request_id=request_id, operation="replay",
                entity_type="search_dead_letter", entity_id=str(dl_id),
                before={"entity_id": entity_id, "version": version, "op": op, "fingerprint": fp,
                        "error_class": error_class},
                after={"replay_outbox_id": outbox_id}, reason=reason, source="index.replay-dead-letters",
            )  # fmt: skip
    return [r[0] for r in rows]
