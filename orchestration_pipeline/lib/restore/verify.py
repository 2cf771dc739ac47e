"""The checks a drill runs on the restored copy, each with what was expected and what was found.

In the order they run (the outbox check last: it is the only one that writes to the copy):

* ``migrations``: the copy's ``schema_migrations`` (versions and sha256) equal the manifest's;
* ``row_counts``: every table holds the manifest's number of rows (mismatches name the table);
* ``content_hashes``: the critical tables hash as in the manifest (mismatches name the table);
* ``audit_chain``: every audit chain and the checkpoint chain recompute, and the checkpoint head
  recorded in the manifest is in the copy's checkpoint chain;
* ``projection_drift``: the copy's task projection agrees with the Tasks DB, with the grace window
  of the reconciliation counted back from the backup's time (tasks changed since then are skipped);
* ``health``: a query on ``events`` answers within the timeout, and this code could migrate the
  copy (no applied migration differs from its file);
* ``outbox_repopulated``: the copy's decisions are compared with the vector index, and every
  decision whose index entry would be missing or stale is re-enqueued in the copy's outbox; the
  check passes when, afterwards, nothing drifts without an outbox row to repair it.

A check that cannot run (a database or the index unreachable) fails with the reason. The one
exception is the index: it is derived data, rebuilt from the decisions through the outbox, so when
it cannot be opened ``outbox_repopulated`` repopulates the outbox against an empty index instead
(every decision re-enqueued) and fails without blocking the drill: the backup's part, the
decisions and a working outbox, is proven either way; the index is the index checks' concern.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.audit.chain import chain_verdict, parse_head
from orchestration_pipeline.lib.db import migration_status
from orchestration_pipeline.lib.index.location import IndexedState
from orchestration_pipeline.lib.index.reconcile import compare as index_compare
from orchestration_pipeline.lib.index.reconcile import enqueue_repairs
from orchestration_pipeline.lib.projection.drift import compare as projection_compare
from orchestration_pipeline.lib.restore.manifest import DatabaseState
from orchestration_pipeline.lib.wording import plural

MAX_LISTED = 10
#: Opens the vector index: a context manager yielding (index, embedder), as IndexRuntime.open does.
IndexOpener = Callable[[], AbstractContextManager[tuple[Any, Any]]]


@dataclass
class DrillCheck:
    """One named verification: passed or not, what was expected, what was found, and why."""

    name: str
    passed: bool
    expected: Any
    found: Any
    detail: str
    blocking: bool = True  # a failure fails the drill
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "blocking": self.blocking,
            "expected": self.expected,
            "found": self.found,
            "detail": self.detail,
            "duration_s": round(self.duration_s, 3),
        }


def timed(name: str, check: Callable[..., DrillCheck], *args: Any, **kwargs: Any) -> DrillCheck:
    """Run a check and note how long it took; a check that cannot run (a database error, a missing
    table) fails, saying why, instead of ending the drill."""
    started = time.perf_counter()
    try:
        result = check(*args, **kwargs)
    except (psycopg.Error, OrchError) as exc:
        reason = first_line(exc)
        result = DrillCheck(name, False, None, {"error": reason}, f"the check could not run: {reason}")
    result.duration_s = time.perf_counter() - started
    return result


def first_line(exc: BaseException) -> str:
    """The first line of an error (the server's primary message for a database error)."""
    diag = getattr(exc, "diag", None)
    text = (getattr(diag, "message_primary", None) or str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_file(expected_sha: str, expected_bytes: int, found_sha: str | None, found_bytes: int | None,
               error: str | None = None) -> DrillCheck:  # fmt: skip
    """``dump_checksum``: the dump file is the one the manifest describes, byte for byte."""
    expected = {"sha256": expected_sha, "bytes": expected_bytes}
    found = {"sha256": found_sha, "bytes": found_bytes}
    if error:
        return DrillCheck("dump_checksum", False, expected, found, f"the dump cannot be read: {error}")
    if found == expected:
        return DrillCheck(
            "dump_checksum", True, expected, found, "the dump matches its manifest's sha256 and size"
        )
    what = "is truncated" if found_bytes is not None and found_bytes < expected_bytes else "differs"
    return DrillCheck(
        "dump_checksum", False, expected, found,
        f"the dump file {what} ({found_bytes:,} bytes, sha256 {str(found_sha)[:12]}…; the manifest says "
        f"{expected_bytes:,} bytes, {expected_sha[:12]}…): nothing was restored — use another backup",
    )  # fmt: skip


def check_migrations(expected: DatabaseState, found: DatabaseState) -> DrillCheck:
    """``migrations``: the same versions, names and checksums as the manifest."""
    want = {m["version"]: m for m in expected.migrations}
    got = {m["version"]: m for m in found.migrations}
    differ = sorted(v for v in want.keys() | got.keys() if want.get(v) != got.get(v))
    summary = {"head": expected.migration_head, "applied": len(want)}
    found_summary = {"head": found.migration_head, "applied": len(got)}
    if not differ:
        return DrillCheck(
            "migrations",
            True,
            summary,
            found_summary,
            f"{plural(len(got), 'migration')} match, head {found.migration_head}",
        )
    listed = [{"version": v, "expected": want.get(v), "found": got.get(v)} for v in differ[:MAX_LISTED]]
    return DrillCheck(
        "migrations", False, summary, {**found_summary, "differ": listed},
        f"{plural(len(differ), 'migration')} differ from the manifest: versions {', '.join(map(str, differ[:MAX_LISTED]))}",
    )  # fmt: skip


def _table_mismatches(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """The tables whose value differs, or that only one side has."""
    return sorted(t for t in want.keys() | got.keys() if want.get(t) != got.get(t))


def check_row_counts(expected: DatabaseState, found: DatabaseState) -> DrillCheck:
    """``row_counts``: every table holds as many rows as the manifest says."""
    tables = _table_mismatches(expected.row_counts, found.row_counts)
    if not tables:
        total = sum(found.row_counts.values())
        return DrillCheck("row_counts", True, expected.row_counts, found.row_counts,
                          f"{plural(len(found.row_counts), 'table')}, {total:,} rows, all as in the manifest")  # fmt: skip
    parts = [f"{t} (expected {expected.row_counts.get(t)}, found {found.row_counts.get(t)})" for t in tables]
    return DrillCheck(
        "row_counts", False, expected.row_counts, found.row_counts,
        f"row counts differ in {plural(len(tables), 'table')}: {'; '.join(parts[:MAX_LISTED])}",
    )  # fmt: skip


def check_content_hashes(expected: DatabaseState, found: DatabaseState) -> DrillCheck:
    """``content_hashes``: each critical table's order-independent hash equals the manifest's."""
    want = {t: v["hash"] for t, v in expected.content_hashes.items()}
    got = {t: v["hash"] for t, v in found.content_hashes.items()}
    tables = _table_mismatches(want, got)
    if not tables:
        return DrillCheck(
            "content_hashes", True, want, got, f"{', '.join(sorted(got))}: content as in the manifest"
        )
    return DrillCheck(
        "content_hashes", False, want, got,
        f"content differs from the manifest in {plural(len(tables), 'table')}: {', '.join(tables)}",
    )  # fmt: skip


def check_audit_chain(conn: psycopg.Connection, expected_head: str | None) -> DrillCheck:
    """``audit_chain``: the chains and checkpoints recompute, and the manifest's head is in the chain."""
    head = parse_head(expected_head) if expected_head else None
    verdict = chain_verdict(conn, expect_head=head)
    meta = verdict.metadata
    found = {k: meta.get(k) for k in ("rows", "chains", "checkpoints", "newest_checkpoint", "broken_chains")}
    expected = {"broken_chains": 0, "checkpoint_head": expected_head}
    return DrillCheck("audit_chain", verdict.passed, expected, found, verdict.description)


def check_projection(
    orch: psycopg.Connection,
    tasks: psycopg.Connection | None,
    *,
    grace_minutes: int,
    as_of: datetime,
    unavailable: str | None = None,
) -> DrillCheck:
    """``projection_drift``: zero drift between the copy's projection and the Tasks DB, as of the
    backup. ``tasks`` None: the Tasks DB could not be opened (``unavailable`` says why)."""
    expected = {"drift": 0, "as_of": as_of.isoformat(), "grace_minutes": grace_minutes}
    if tasks is None:
        return DrillCheck("projection_drift", False, expected, {"error": unavailable},
                          f"the projection could not be compared with the Tasks DB: {unavailable}")  # fmt: skip
    result = projection_compare(orch, tasks, grace_minutes=grace_minutes, now=as_of, keep=0)
    found = {"drift": result.drift_count, **result.counts, "tasks_compared": result.tasks_compared,
             "skipped_in_grace": result.skipped_in_grace, "samples": result.samples}  # fmt: skip
    if result.drift_count == 0:
        return DrillCheck("projection_drift", True, expected, found,
                          f"no drift across {plural(result.tasks_compared, 'task')}")  # fmt: skip
    worst = ", ".join(f"{k} {v}" for k, v in result.counts.items() if v)
    return DrillCheck("projection_drift", False, expected, found,
                      f"{plural(result.drift_count, 'task')} drift between the copy and the Tasks DB ({worst})")  # fmt: skip


def check_health(conn: psycopg.Connection, *, timeout_s: float) -> DrillCheck:
    """``health``: ``SELECT count(*) FROM events`` answers within the timeout; no applied migration
    differs from its file (this code could migrate and use the copy)."""
    expected = {"answers_within_s": timeout_s, "drifted_migrations": 0}
    started = time.perf_counter()
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout_s * 1000)}ms",))
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    except psycopg.Error as exc:
        reason = first_line(exc)
        return DrillCheck("health", False, expected, {"error": reason},
                          f"the health query did not answer within {timeout_s:g} s: {reason}")  # fmt: skip
    answered_s = round(time.perf_counter() - started, 3)
    status = migration_status(conn, "orchestration")
    found = {"events": events, "answered_s": answered_s, "drifted_migrations": len(status.drifted),
             "pending_migrations": [m.filename for m in status.pending]}  # fmt: skip
    if status.drifted:
        names = ", ".join(m.filename for m in status.drifted)
        return DrillCheck("health", False, expected, found,
                          f"the copy answers, but its applied migrations differ from the files ({names}): "
                          "'db migrate' would refuse it")  # fmt: skip
    pending = (
        f"; {plural(len(status.pending), 'migration')} newer than the backup to apply"
        if status.pending
        else ""
    )
    return DrillCheck(
        "health", True, expected, found, f"events answered in {answered_s} s ({events:,} rows){pending}"
    )


class _EmptyIndex:
    """Stands for an index that could not be opened: it holds nothing."""

    def states(self) -> Iterator[IndexedState]:
        return iter(())


def check_outbox(conn: psycopg.Connection, open_index: IndexOpener | None) -> DrillCheck:
    """``outbox_repopulated``: re-enqueue every decision the index lacks (or holds stale), then
    nothing may drift without an outbox row to repair it. An index that cannot be opened or read
    (down, locked, another embedder's) is replaced by an empty one, and the check fails without
    blocking (see the module docstring)."""
    if open_index is None:
        return _repopulate(conn, _EmptyIndex(), "no vector index is configured")
    try:
        with open_index() as (index, _embedder):
            return _repopulate(conn, index, None)
    except Exception as exc:  # noqa: BLE001 - whatever the index raised, the outbox is still checked
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        return _repopulate(conn, _EmptyIndex(), f"{type(exc).__name__}: {first_line(exc)}")


def _repopulate(conn: psycopg.Connection, index: Any, index_error: str | None) -> DrillCheck:
    """Compare, enqueue the repairs in the copy's outbox, compare again; ``index_error``: why an
    empty index stands in for the real one (the check then fails without blocking)."""
    expected = {"remaining_drift": 0}
    try:
        drift = index_compare(conn, index)
        enqueued = enqueue_repairs(conn, drift) if drift.total else 0
        after = index_compare(conn, index)
    except psycopg.Error as exc:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        reason = first_line(exc)
        return DrillCheck("outbox_repopulated", False, expected, {"error": reason},
                          f"the outbox could not be repopulated in the copy: {reason}")  # fmt: skip
    found = {"decisions": drift.expected, "indexed": drift.indexed, **drift.counts, "in_flight": drift.in_flight,
             "enqueued": enqueued, "remaining_drift": after.total, "index_error": index_error}  # fmt: skip
    if after.total:
        return DrillCheck("outbox_repopulated", False, expected, found,
                          f"{plural(after.total, 'decision')} still drift after re-enqueueing "
                          f"{plural(enqueued, 'repair')}: the copy's outbox does not take them")  # fmt: skip
    if index_error is not None:
        return DrillCheck("outbox_repopulated", False, expected, found,
                          f"the index could not be opened ({index_error}); the outbox was repopulated against "
                          f"an empty index instead ({plural(enqueued, 'decision')} re-enqueued). Not blocking: the "
                          "index is rebuilt from the decisions ('index rebuild')", blocking=False)  # fmt: skip
    return DrillCheck("outbox_repopulated", True, expected, found,
                      f"{plural(enqueued, 'decision')} re-enqueued ({drift.counts['missing_in_index']} missing, "
                      f"{drift.counts['stale_version']} stale, {drift.counts['orphan_in_index']} orphans), "
                      f"{drift.in_flight} already in the outbox; nothing left to drift")  # fmt: skip
