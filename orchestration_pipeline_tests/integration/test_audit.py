"""The audit ledger: same-transaction writes, the append-only guard, privileges, hash chains."""

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from orchestration_pipeline.errors import AuditError
from orchestration_pipeline.lib.audit.chain import (
    checkpoint_ledger,
    compute_row_hash,
    ledger_summary,
    verify_chain,
)
from orchestration_pipeline.lib.audit.guard import guard_problems
from orchestration_pipeline.lib.audit.ledger import (
    AuditFilter,
    audited,
    parse_since,
    query_audit,
    record_audit,
)
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline.lib.ingestion.quarantine import replay_quarantine
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db


def _audit(conn, entity_id="p1", **overrides):
    fields = {
        "actor": "alice",
        "request_id": "req-1",
        "operation": "update",
        "entity_type": "policy",
        "entity_id": entity_id,
    }
    fields.update(overrides)
    return record_audit(conn, **fields)


def _count(conn, query="SELECT count(*) FROM audit_ledger", params=()):
    value = conn.execute(query, params).fetchone()[0]
    conn.rollback()
    return value


def _tamper(dsn, statement, params=()):
    """Change the ledger the way only a superuser can: with triggers off for this session."""
    with connection(dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(statement, params)
        conn.commit()


def test_record_audit_writes_the_entry_and_the_database_stamps_chain_and_time(orch_conn):
    before = {"enabled": False, "at": datetime(2026, 1, 1, tzinfo=UTC), "id": uuid.UUID(int=1)}
    audit_id = _audit(
        orch_conn,
        before=before,
        after={"enabled": True},
        reason="turn it on",
        source="job:x",
        org_id="org-1",
        endpoint="/policies/p1",
        method="PATCH",
    )
    orch_conn.commit()
    row = orch_conn.execute(
        """SELECT actor, request_id, operation, entity_type, entity_id, before_data, after_data, reason, source,
                  org_id, endpoint, method, chain_id, chain_seq, prev_hash, occurred_at
           FROM audit_ledger WHERE audit_id = %s""",
        (audit_id,),
    ).fetchone()
    assert row[:5] == ("alice", "req-1", "update", "policy", "p1")
    assert row[5] == {"enabled": False, "at": "2026-01-01T00:00:00+00:00", "id": str(uuid.UUID(int=1))}
    assert row[6:12] == ({"enabled": True}, "turn it on", "job:x", "org-1", "/policies/p1", "PATCH")
    assert row[12].startswith("tx/") and row[13] == 1  # the transaction's own chain
    assert row[14] == bytes(32)  # the first link of a chain
    assert abs(row[15] - datetime.now(UTC)) < timedelta(minutes=1)


def test_secrets_are_redacted_before_they_reach_the_ledger_for_good(orch_conn):
    audit_id = _audit(
        orch_conn,
        before={"dsn": "postgresql://svc:LEAK1@db/app", "api_key": "LEAK2", "enabled": False},
        after={"headers": {"Authorization": "Bearer LEAK3abcdefgh"}, "enabled": True},
        reason="rotated: password=LEAK4",
    )
    orch_conn.commit()
    row = orch_conn.execute(
        "SELECT before_data, after_data, reason FROM audit_ledger WHERE audit_id = %s", (audit_id,)
    ).fetchone()
    assert "LEAK" not in json.dumps(row)
    assert row[0]["enabled"] is False and row[1]["enabled"] is True  # the rest is kept
    assert row[2] == "rotated: password=[REDACTED]"
    orch_conn.rollback()
    assert verify_chain(orch_conn).ok  # the hash covers what was stored


@pytest.mark.parametrize("field", ["actor", "request_id"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_an_entry_without_actor_or_request_id_is_refused(orch_conn, field, value):
    with pytest.raises(
        AuditError, match="actor and request_id are required — pass actor=... and request_id=..."
    ):
        _audit(orch_conn, **{field: value})
    assert _count(orch_conn) == 0


def test_the_database_refuses_blank_identity_too(orch_conn):
    with pytest.raises(psycopg.errors.CheckViolation):
        orch_conn.execute(
            "INSERT INTO audit_ledger (actor, request_id, operation, entity_type, entity_id) "
            "VALUES (' ', 'r', 'update', 'policy', 'p')"
        )


@pytest.mark.parametrize(("field", "value"), [("entity_id", None), ("entity_id", "  "), ("entity_type", " ")])
def test_an_entry_without_an_entity_is_refused(orch_conn, field, value):
    # None was stored as the text 'None'
    with pytest.raises(AuditError, match="entity_type and entity_id are required"):
        _audit(orch_conn, **{field: value})
    assert _count(orch_conn) == 0


def test_an_unknown_operation_is_refused(orch_conn):
    with pytest.raises(AuditError, match="unknown operation 'tweak' — use one of"):
        _audit(orch_conn, operation="tweak")


@pytest.mark.parametrize(
    "after, message",
    [
        ({"ratio": float("nan")}, "after is not JSON"),
        ({"note": "a\x00b"}, "NUL character"),
        ({"x": object()}, "not JSON"),
    ],
)
def test_data_jsonb_cannot_hold_is_refused_before_the_callers_transaction_breaks(orch_conn, after, message):
    orch_conn.execute("INSERT INTO metrics (name, value) VALUES ('kept', 1)")
    with pytest.raises(AuditError, match=message):
        _audit(orch_conn, after=after)
    _audit(orch_conn, after={"note": "C:\\u0000 is just text"})  # the transaction is still usable
    orch_conn.commit()
    assert _count(orch_conn, "SELECT count(*) FROM metrics WHERE name = 'kept'") == 1
    assert _count(orch_conn) == 1


def test_a_rollback_of_the_mutation_removes_its_audit_entry(orch_conn):
    with pytest.raises(RuntimeError), orch_conn.transaction():
        orch_conn.execute("INSERT INTO metrics (name, value) VALUES ('policy_changes', 1)")
        _audit(orch_conn, operation="create")
        raise RuntimeError("the mutation failed after its audit entry was written")
    assert _count(orch_conn, "SELECT count(*) FROM metrics") == 0
    assert _count(orch_conn) == 0
    # The same mutation committed keeps both.
    with orch_conn.transaction():
        orch_conn.execute("INSERT INTO metrics (name, value) VALUES ('policy_changes', 1)")
        _audit(orch_conn, operation="create")
    assert _count(orch_conn, "SELECT count(*) FROM metrics") == 1
    assert _count(orch_conn) == 1
    assert verify_chain(orch_conn).ok


FLIP = "UPDATE policies SET enabled = %s WHERE policy_id = %s RETURNING policy_id, enabled"
WHO = {"actor": "alice", "request_id": "req-1", "operation": "update", "entity_type": "policy"}


def _policy(conn, policy_id="p1"):
    conn.execute(
        "INSERT INTO policies (policy_id, name, effect) VALUES (%s, %s, 'notify')", (policy_id, policy_id)
    )
    conn.commit()


def test_audited_runs_the_mutation_and_writes_its_entry_in_one_statement(orch_conn):
    _policy(orch_conn)
    with orch_conn.transaction():
        cur = audited(
            orch_conn, FLIP, (True, "p1"), expect_rows=1, **WHO, entity_id="p1",
            before={"enabled": False}, after={"enabled": True}, reason="token=ghp_" + "a" * 36,
        )  # fmt: skip
        assert cur.fetchall() == [("p1", True)]  # the mutation's own result
    entry = orch_conn.execute(
        "SELECT actor, entity_id, before_data, after_data, reason, chain_seq FROM audit_ledger"
    ).fetchall()
    enabled = orch_conn.execute("SELECT enabled FROM policies").fetchone()[0]
    orch_conn.rollback()
    assert enabled is True
    assert entry == [("alice", "p1", {"enabled": False}, {"enabled": True}, "token=[REDACTED]", 1)]
    assert verify_chain(orch_conn).ok


def test_audited_rolls_back_with_the_mutation(orch_conn):
    _policy(orch_conn)
    with pytest.raises(RuntimeError), orch_conn.transaction():
        audited(orch_conn, FLIP, (True, "p1"), **WHO, entity_id="p1")
        raise RuntimeError("a later step of the same change failed")
    assert _count(orch_conn) == 0
    assert _count(orch_conn, "SELECT count(*) FROM policies WHERE enabled") == 0


@pytest.mark.parametrize(
    "statement",
    [
        "-- switch it on\nWITH p AS (SELECT %s AS id) UPDATE policies SET enabled = true, name = 'on 100%%' "
        "FROM p WHERE policy_id = p.id",
        "/* a note\n spanning lines */ UPDATE policies SET enabled = true, name = 'on 100%%' WHERE policy_id = %s",
    ],
)
def test_audited_handles_leading_comments_and_literal_percent_signs(orch_conn, statement):
    _policy(orch_conn)
    with orch_conn.transaction():
        audited(orch_conn, statement, ("p1",), expect_rows=1, **WHO, entity_id="p1")
    name = orch_conn.execute("SELECT name FROM policies").fetchone()[0]
    orch_conn.rollback()
    assert name == "on 100%" and _count(orch_conn) == 1


def test_audited_refuses_a_mutation_that_touched_another_number_of_rows(orch_conn):
    _policy(orch_conn)
    with pytest.raises(AuditError, match=r"touched 0 row\(s\), expected 1 — roll the transaction back"):
        with orch_conn.transaction():
            audited(
                orch_conn, FLIP, (True, "no-such-policy"), expect_rows=1, **WHO, entity_id="no-such-policy"
            )
    assert _count(orch_conn) == 0


def test_audited_refuses_an_entry_without_identity_before_running_anything(orch_conn):
    _policy(orch_conn)
    with pytest.raises(AuditError, match="actor and request_id are required"), orch_conn.transaction():
        audited(orch_conn, FLIP, (True, "p1"), **(WHO | {"actor": " "}), entity_id="p1")
    assert _count(orch_conn, "SELECT count(*) FROM policies WHERE enabled") == 0


def test_audited_accepts_a_statement_with_its_own_with_and_named_parameters(orch_conn):
    _policy(orch_conn, "p1")
    _policy(orch_conn, "p2")
    with orch_conn.transaction():
        cur = audited(
            orch_conn,
            """with recursive wanted(id) AS (SELECT %(first)s UNION ALL SELECT 'p2' WHERE false)
               UPDATE policies SET enabled = true FROM wanted WHERE policy_id = wanted.id RETURNING policy_id""",
            {"first": "p1"},
            expect_rows=1,
            **WHO,
            entity_id="p1",
            after={"enabled": True},
        )
        assert cur.fetchone() == ("p1",)
        with pytest.raises(AuditError, match="reserved"):
            audited(orch_conn, "SELECT %(_audit_0)s", {"_audit_0": 1}, **WHO, entity_id="x")
        misspelt = {("actr" if k == "actor" else k): v for k, v in WHO.items()}
        with pytest.raises(TypeError, match=r"unknown field\(s\) \['actr'\], missing field\(s\) \['actor'\]"):
            audited(orch_conn, FLIP, (True, "p1"), **misspelt, entity_id="p1")
    assert _count(orch_conn) == 1 and verify_chain(orch_conn).ok


def test_record_audit_never_commits(orch_dsn):
    with connection(orch_dsn) as writer, connection(orch_dsn) as reader:
        _audit(writer)
        assert _count(reader) == 0  # not visible until the caller commits
        writer.rollback()
        assert _count(reader) == 0


def test_an_autocommit_connection_outside_a_transaction_is_refused(orch_dsn):
    with connection(orch_dsn, autocommit=True) as conn:
        with pytest.raises(AuditError, match="no open transaction"):
            _audit(conn)
        with conn.transaction():
            _audit(conn)
        assert conn.execute("SELECT count(*) FROM audit_ledger").fetchone()[0] == 1


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_ledger SET actor = 'mallory'", "DELETE FROM audit_ledger", "TRUNCATE audit_ledger"],
)
def test_the_guard_refuses_changes_even_from_a_superuser(orch_conn, statement):
    _audit(orch_conn)
    orch_conn.commit()
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        orch_conn.execute(statement)
    orch_conn.rollback()
    assert "audit_ledger is append-only" in str(info.value)
    assert "record_audit" in info.value.diag.message_hint
    assert _count(orch_conn, "SELECT count(*) FROM audit_ledger WHERE actor = 'alice'") == 1


def test_the_writer_role_may_only_insert_and_select(orch_conn):
    with orch_conn.transaction():
        orch_conn.execute("SET LOCAL ROLE orch_pipeline_writer")
        _audit(orch_conn)  # the SECURITY DEFINER trigger chains it
        assert orch_conn.execute("SELECT count(*) FROM audit_ledger").fetchone()[0] == 1
    refused = [
        ("UPDATE audit_ledger SET reason = 'x'", "permission denied"),
        ("DELETE FROM audit_ledger", "permission denied"),
        ("TRUNCATE audit_ledger", "permission denied"),
        ("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_append_only", "must be owner"),
        ("UPDATE audit_chain_heads SET last_seq = 0", "permission denied"),
        ("INSERT INTO audit_checkpoints VALUES (1, 0, 1, 1, '', '')", "permission denied"),
        ("UPDATE audit_checkpoints SET entries = 0", "permission denied"),
        ("DROP TABLE audit_ledger", "must be owner"),
    ]
    for statement, message in refused:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=message):
            with orch_conn.transaction():
                orch_conn.execute("SET LOCAL ROLE orch_pipeline_writer")
                orch_conn.execute(statement)
    with orch_conn.transaction():  # but it may seal entries, through the function that decides what
        orch_conn.execute("SET LOCAL ROLE orch_pipeline_writer")
        assert orch_conn.execute("SELECT checkpoint_seq, entries FROM audit_checkpoint(100)").fetchone() == (
            1,
            1,
        )
    assert guard_problems(orch_conn) == []
    assert verify_chain(orch_conn).ok


def test_verify_recomputes_awkward_content_exactly(orch_conn):
    awkward = [
        {"text": 'é\u0301 € 😀 \n\t"quote" back\\slash ~ 12:colon'},
        {"numbers": [1, 1.5, -0.0, 1e-7, 12345678901234567890, 3.14159265358979]},
        {"nested": {"z": [None, True, False, {}], "a": []}},
        {},
    ]
    with orch_conn.transaction():
        for i, after in enumerate(awkward):
            _audit(orch_conn, entity_id=f"p{i}", after=after, before=None, reason="~ 3:abc", source=None)
        _audit(orch_conn, entity_id="x" * 5000, operation="create", reason="line\nbreak")
    report = verify_chain(orch_conn)
    assert report.ok, report.as_dict()
    assert report.rows == 5 and report.chains == 1  # one transaction, one chain
    assert report.first_broken is None


def test_a_changed_entry_is_reported_with_its_id_and_both_hashes(orch_dsn):
    with connection(orch_dsn) as conn:
        with conn.transaction():
            ids = [_audit(conn, entity_id=f"p{i}", after={"n": i}) for i in range(4)]
        stored = conn.execute(
            "SELECT encode(row_hash, 'hex') FROM audit_ledger WHERE audit_id = %s", (ids[2],)
        ).fetchone()[0]
        conn.rollback()
        _tamper(orch_dsn, "UPDATE audit_ledger SET after_data = '{\"n\": 99}' WHERE audit_id = %s", (ids[2],))
        report = verify_chain(conn)
    assert not report.ok and report.broken_chains == 1
    first = report.first_broken
    assert (first.audit_id, first.kind, first.found) == (ids[2], "row_hash", stored)
    assert first.expected != stored and len(first.expected) == 64
    assert f"broken at audit_id {ids[2]}" in first.describe()


def test_a_removed_entry_breaks_the_next_link(orch_dsn):
    with connection(orch_dsn) as conn:
        with conn.transaction():
            ids = [_audit(conn, entity_id=f"p{i}") for i in range(4)]
        hashes = dict(conn.execute("SELECT audit_id, encode(row_hash, 'hex') FROM audit_ledger").fetchall())
        conn.rollback()
        _tamper(orch_dsn, "DELETE FROM audit_ledger WHERE audit_id = %s", (ids[1],))
        first = verify_chain(conn).first_broken
    assert (first.audit_id, first.kind) == (ids[2], "prev_hash")
    assert (first.expected, first.found) == (hashes[ids[0]], hashes[ids[1]])


def _transaction_of(conn, n, prefix):
    with conn.transaction():
        return [_audit(conn, entity_id=f"{prefix}{i}") for i in range(n)]


@pytest.mark.parametrize(
    "victim",
    ["the newest entry of a transaction", "a whole one-entry transaction", "a whole transaction"],
)
def test_removing_sealed_entries_is_caught_by_their_checkpoint(orch_dsn, victim):
    with connection(orch_dsn) as conn:
        three = _transaction_of(conn, 3, "a")
        one = _transaction_of(conn, 1, "b")
        run = checkpoint_ledger(conn)
        assert (run.created, run.entries, run.busy) == (1, 4, None)
        assert verify_chain(conn).ok
        gone = {
            "the newest entry of a transaction": [three[-1]],
            "a whole one-entry transaction": one,
            "a whole transaction": three,
        }[victim]
        _tamper(orch_dsn, "DELETE FROM audit_ledger WHERE audit_id = ANY(%s)", (gone,))
        report = verify_chain(conn)
    first = report.first_broken
    assert not report.ok
    assert (first.kind, first.chain_id, first.expected, first.found) == (
        "checkpoint_count",
        "checkpoint/1",
        "4",
        str(4 - len(gone)),
    )
    assert "entries removed or added" in first.describe()


def test_entries_after_the_last_checkpoint_are_reported_as_not_sealed_yet(orch_dsn):
    with connection(orch_dsn) as conn:
        _transaction_of(conn, 2, "a")
        before = verify_chain(conn)
        checkpoint_ledger(conn)
        _transaction_of(conn, 3, "b")
        after = verify_chain(conn)
        summary = ledger_summary(conn)
    assert before.ok and (before.checkpoints, before.unsealed_entries) == (0, 2)
    assert after.ok and (after.checkpoints, after.unsealed_entries, after.rows) == (1, 3, 5)
    assert (summary["entries"], summary["sealed_entries"], summary["unsealed_entries"]) == (5, 2, 3)
    assert summary["checkpoints"] == 1 and len(summary["last_checkpoint_hash"]) == 64


def test_checkpoints_chain_and_seal_in_batches(orch_dsn):
    with connection(orch_dsn) as conn:
        _transaction_of(conn, 5, "a")
        seen = []
        run = checkpoint_ledger(conn, max_entries=2, progress=lambda n, e: seen.append((n, e)))
        again = checkpoint_ledger(conn)
        ranges = conn.execute(
            "SELECT from_id, through_id, entries FROM audit_checkpoints ORDER BY checkpoint_seq"
        ).fetchall()
        conn.rollback()
        report = verify_chain(conn)
    assert (run.created, run.entries, run.checkpoint_seq) == (3, 5, 3)
    assert seen == [(1, 2), (2, 4), (3, 5)]
    assert (again.created, again.checkpoint_seq, again.checkpoint_hash) == (0, 3, run.checkpoint_hash)
    assert [r[2] for r in ranges] == [2, 2, 1]
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # contiguous
    assert report.ok and report.checkpoints == 3 and report.unsealed_entries == 0


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("UPDATE audit_checkpoints SET checkpoint_hash = sha256('x') WHERE checkpoint_seq = 1", "checkpoint"),
        ("DELETE FROM audit_checkpoints WHERE checkpoint_seq = 1", "checkpoint_link"),
        ("UPDATE audit_checkpoints SET entries = entries + 1 WHERE checkpoint_seq = 2", "checkpoint_count"),
    ],
)
def test_a_changed_or_removed_checkpoint_breaks_the_checkpoint_chain(orch_dsn, statement, kind):
    with connection(orch_dsn) as conn:
        _transaction_of(conn, 2, "a")
        checkpoint_ledger(conn)
        _transaction_of(conn, 2, "b")
        checkpoint_ledger(conn)
        _tamper(orch_dsn, statement)
        report = verify_chain(conn)
    assert not report.ok and report.first_broken.kind == kind


def test_an_entry_slipped_into_a_sealed_range_is_caught_even_with_a_valid_hash(orch_dsn):
    with connection(orch_dsn) as conn:
        kept = _transaction_of(conn, 1, "a")
        with pytest.raises(RuntimeError), conn.transaction():  # rolled back: its id stays unused
            gap = _audit(conn, entity_id="undone")
            raise RuntimeError("roll back")
        kept += _transaction_of(conn, 1, "b")
        checkpoint_ledger(conn)
        forged = {
            "audit_id": gap,
            "chain_id": "tx/1/1",
            "chain_seq": 1,
            "txn_entry": 1,
            "occurred_at": datetime.now(UTC).replace(microsecond=0),
            "org_id": None,
            "actor": "alice",
            "endpoint": None,
            "method": None,
            "request_id": "req-1",
            "operation": "grant",
            "entity_type": "policy",
            "entity_id": "p1",
            "before_data": None,
            "after_data": None,
            "reason": None,
            "source": None,
        }
        _tamper(
            orch_dsn,
            """INSERT INTO audit_ledger (audit_id, occurred_at, actor, request_id, operation, entity_type, entity_id,
                                         chain_id, chain_seq, txn_entry, prev_hash, row_hash)
               OVERRIDING SYSTEM VALUE
               VALUES (%s, %s, 'alice', 'req-1', 'grant', 'policy', 'p1', 'tx/1/1', 1, 1, %s, decode(%s, 'hex'))""",
            (gap, forged["occurred_at"], bytes(32), compute_row_hash("00" * 32, forged)),
        )
        report = verify_chain(conn)
    assert kept[0] < gap < kept[1]
    assert [b.kind for b in report.broken] == ["checkpoint_count"]  # its own chain verifies


def test_a_checkpoint_waits_for_open_writers_and_never_blocks_them(orch_dsn):
    """An open transaction with an entry keeps its id unsettled: the checkpoint waits for it, and
    gives up naming its pid; meanwhile other writers commit as usual, and nothing is half-sealed."""
    with connection(orch_dsn) as holder, connection(orch_dsn) as other, connection(orch_dsn) as conn:
        _audit(holder, entity_id="open")  # drawn first, not committed
        other.execute("SET lock_timeout = '100ms'")
        other.commit()
        _transaction_of(other, 2, "b")
        outcome: dict = {}
        checkpointer = threading.Thread(
            target=lambda: outcome.update(run=checkpoint_ledger(conn, wait_ms=300, attempts=2))
        )
        checkpointer.start()
        time.sleep(0.1)
        _transaction_of(other, 1, "c")  # while the checkpoint waits: no lock to wait for
        checkpointer.join(10)
        run = outcome["run"]
        assert run.created == 0 and f"pids {holder.info.backend_pid}" in run.busy
        assert _count(other, "SELECT count(*) FROM audit_checkpoints") == 0
        holder.commit()
        run = checkpoint_ledger(conn, wait_ms=300)
        assert run.busy is None and (run.created, run.entries) == (1, 4)
        assert verify_chain(conn).ok


def test_checkpoints_taken_while_writers_commit_and_roll_back_never_raise_a_false_alarm(orch_dsn):
    """Entries committed late, rolled back, or written in several statements: whatever order they
    settle in, every checkpoint seals exactly what its range ends up holding."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with connection(orch_dsn) as conn:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        with conn.transaction():
                            _audit(conn, entity_id=f"w{n}-{i}")
                            time.sleep(0.002 * (i % 3))  # commit late, after others drew later ids
                            if i % 2:
                                _audit(conn, entity_id=f"w{n}-{i}-second")
                            if i % 5 == 0:
                                raise RuntimeError("roll back")
                    except RuntimeError:
                        pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in pool:
        t.start()
    runs = []
    with connection(orch_dsn) as conn:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            runs.append(checkpoint_ledger(conn, max_entries=7, wait_ms=500))
        stop.set()
        for t in pool:
            t.join(30)
        runs.append(checkpoint_ledger(conn))
        report = verify_chain(conn)
    assert errors == [] and all(r.busy is None for r in runs)
    assert sum(r.created for r in runs) > 3
    assert report.ok, report.as_dict()
    assert report.unsealed_entries == 0 and report.rows == sum(r.entries for r in runs)


def test_a_second_checkpointer_stops_at_once_saying_another_is_running(orch_dsn):
    with connection(orch_dsn) as first, connection(orch_dsn) as second:
        _transaction_of(first, 1, "a")
        first.execute("LOCK TABLE audit_checkpoints IN EXCLUSIVE MODE")  # as a running checkpoint holds it
        started = time.perf_counter()
        run = checkpoint_ledger(second, attempts=2)
        first.rollback()
    assert run.busy == "another checkpoint is running" and run.created == 0
    assert time.perf_counter() - started < 2


def test_checkpoint_ledger_stops_at_the_entries_that_existed_when_it_started(orch_dsn):
    with connection(orch_dsn) as conn, connection(orch_dsn) as writer:
        _transaction_of(conn, 3, "a")

        def write_more(n, entries):
            _transaction_of(writer, 1, f"late{n}")  # a writer keeping pace with the checkpoints

        run = checkpoint_ledger(conn, max_entries=1, progress=write_more)
    assert (run.created, run.entries) == (3, 3)


def test_a_checkpoint_in_an_older_snapshot_is_refused(orch_conn):
    """In REPEATABLE READ the snapshot predates the lock, and could miss entries it then seals."""
    _audit(orch_conn)
    orch_conn.commit()
    with pytest.raises(psycopg.errors.InvalidTransactionState, match="READ COMMITTED"):
        with orch_conn.transaction():
            orch_conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            orch_conn.execute("SELECT * FROM audit_checkpoint(10)")
    assert _count(orch_conn, "SELECT count(*) FROM audit_checkpoints") == 0


def test_a_checkpoint_inside_a_transaction_that_has_written_is_refused(orch_conn):
    """It would wait for writers while holding this transaction's locks, which they may wait on."""
    with pytest.raises(psycopg.errors.InvalidTransactionState, match="transaction of its own"):
        with orch_conn.transaction():
            _audit(orch_conn)
            orch_conn.execute("SELECT * FROM audit_checkpoint(10)")
    assert _count(orch_conn, "SELECT count(*) FROM audit_checkpoints") == 0


def test_checkpoint_ledger_needs_a_connection_with_no_open_transaction(orch_conn):
    orch_conn.execute("SELECT 1")
    with pytest.raises(AuditError, match="no open transaction"):
        checkpoint_ledger(orch_conn)


def test_a_forged_entry_with_a_recomputed_hash_still_breaks_the_chain(orch_dsn):
    with connection(orch_dsn) as conn:
        with conn.transaction():
            ids = [_audit(conn, entity_id=f"p{i}") for i in range(3)]
        row = conn.execute(
            """SELECT audit_id, chain_id, chain_seq, txn_entry, occurred_at, org_id, actor, endpoint, method, request_id,
                      operation, entity_type, entity_id, before_data::text AS before_data,
                      after_data::text AS after_data, reason, source, encode(prev_hash, 'hex')
               FROM audit_ledger WHERE audit_id = %s""",
            (ids[1],),
        ).fetchone()
        conn.rollback()
        names = [
            "audit_id", "chain_id", "chain_seq", "txn_entry", "occurred_at", "org_id", "actor", "endpoint", "method",
            "request_id", "operation", "entity_type", "entity_id", "before_data", "after_data", "reason",
            "source", "prev_hash",
        ]  # fmt: skip
        forged = dict(zip(names, row, strict=True)) | {"actor": "mallory"}
        _tamper(
            orch_dsn,
            "UPDATE audit_ledger SET actor = 'mallory', row_hash = decode(%s, 'hex') WHERE audit_id = %s",
            (compute_row_hash(forged["prev_hash"], forged), ids[1]),
        )
        first = verify_chain(conn).first_broken
    assert (first.audit_id, first.kind) == (ids[2], "prev_hash")


def test_concurrent_writers_each_build_their_own_chain_and_all_verify(orch_dsn):
    writers, per_thread = 4, 40
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with connection(orch_dsn) as conn:
                barrier.wait()
                for i in range(per_thread):
                    with conn.transaction():
                        _audit(conn, entity_id=f"e{n}", request_id=f"r{n}-{i}", after={"i": i})
                        if i % 4 == 0:  # some transactions write two entries
                            _audit(conn, entity_id=f"e{n}", request_id=f"r{n}-{i}", after={"second": i})
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    pool = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert errors == []
    with connection(orch_dsn) as conn:
        lengths = conn.execute(
            "SELECT array_agg(chain_seq ORDER BY chain_seq) FROM audit_ledger GROUP BY chain_id"
        ).fetchall()
        conn.rollback()
        run = checkpoint_ledger(conn)
        report = verify_chain(conn)
    entries = writers * (per_thread + per_thread // 4)
    assert sorted(r[0] for r in lengths) == sorted(
        [[1]] * (writers * per_thread * 3 // 4) + [[1, 2]] * (entries - writers * per_thread)
    )
    assert report.ok and report.chains == writers * per_thread and report.rows == entries
    assert run.entries == entries and report.unsealed_entries == 0


def _connections_sharing_a_backend_slot(dsn, slots=32):
    """Two connections whose backends' pids are equal mod ``slots``: under day/slot chains (0004,
    0006) they wrote to the same chain and waited for each other."""
    opened, by_slot = [], {}
    try:
        while True:
            conn = psycopg.connect(dsn)
            opened.append(conn)
            pair = by_slot.setdefault(conn.info.backend_pid % slots, [])
            pair.append(conn)
            if len(pair) == 2:
                for extra in opened:
                    if extra not in pair:
                        extra.close()
                return pair
    except BaseException:
        for conn in opened:
            conn.close()
        raise


def test_writers_never_wait_for_each_other(orch_dsn):
    holder, other = _connections_sharing_a_backend_slot(orch_dsn)
    try:
        _audit(holder, entity_id="a")  # open, uncommitted
        other.execute("SET lock_timeout = '200ms'")
        other.commit()
        for i in range(3):
            with other.transaction():
                _audit(other, entity_id=f"b{i}")  # commits at once, no lock to wait for
        holder.commit()
        report = verify_chain(other)
    finally:
        holder.close()
        other.close()
    assert report.ok and report.rows == 4 and report.chains == 4


def test_a_transaction_appends_to_one_chain_whatever_it_touches(orch_conn):
    with orch_conn.transaction():
        for i in range(20):
            _audit(orch_conn, entity_type=f"type{i}", entity_id=f"e{i}")
    chains = {r[0] for r in orch_conn.execute("SELECT chain_id FROM audit_ledger")}
    orch_conn.rollback()
    assert len(chains) == 1


def test_query_answers_who_changed_what_and_when(orch_conn):
    with orch_conn.transaction():
        _audit(orch_conn, entity_id="p1", actor="alice", request_id="r1", operation="create")
        _audit(orch_conn, entity_id="p2", actor="bob", request_id="r2")
    with orch_conn.transaction():
        _audit(orch_conn, entity_type="decision_execution", entity_id="7", actor="bob", request_id="r3")

    def ids(**kw):
        return [(r["entity_type"], r["entity_id"]) for r in query_audit(orch_conn, AuditFilter(**kw))]

    assert ids(entity_type="policy", entity_id="p1") == [("policy", "p1")]
    assert ids(actor="bob") == [("decision_execution", "7"), ("policy", "p2")]
    assert ids(operation="create") == [("policy", "p1")]
    assert ids(request_id="r3") == [("decision_execution", "7")]
    assert len(ids(since=datetime.now(UTC) - timedelta(minutes=5))) == 3
    assert ids(until=datetime.now(UTC) - timedelta(minutes=5)) == []
    assert ids(limit=1) == [("decision_execution", "7")]


def test_parse_since_reads_relative_and_absolute_times():
    now = datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_since("24h", now=now) == datetime(2026, 1, 30, 12, tzinfo=UTC)
    assert parse_since("7d", now=now) == datetime(2026, 1, 24, 12, tzinfo=UTC)
    assert parse_since("2026-01-02") == datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_since("2026-01-02T03:04:05+01:00").utcoffset() == timedelta(hours=1)
    with pytest.raises(AuditError, match="use e.g. 30m, 24h, 7d"):
        parse_since("yesterday")


def test_quarantine_replay_leaves_one_replay_entry_per_examined_line(orch_conn, tmp_path):
    future = make_event(occurred_at=(datetime.now(UTC) + timedelta(days=2)).isoformat())
    Ingestor(orch_conn).ingest_paths([write_jsonl(tmp_path / "f.jsonl", [future, "{still broken"])])
    with pytest.raises(AuditError, match="actor and request_id are required"):
        replay_quarantine(orch_conn, actor="", request_id="r")
    replay_quarantine(
        orch_conn,
        actor="oncall:carol",
        request_id="inc-42",
        now=datetime.now(UTC) + timedelta(days=2),
        source="cli:quarantine replay",
    )
    rows = query_audit(orch_conn, AuditFilter(request_id="inc-42"))
    assert {r["operation"] for r in rows} == {"replay"}
    assert {r["actor"] for r in rows} == {"oncall:carol"}
    outcomes = sorted(r["after_data"]["outcome"] for r in rows)
    assert outcomes == ["accepted", "still_failing"]
    accepted = next(r for r in rows if r["after_data"]["outcome"] == "accepted")
    assert (
        accepted["entity_type"] == "quarantine" and accepted["after_data"]["event_id"] == future["event_id"]
    )
    assert accepted["before_data"]["failure_type"] == "future_timestamp"
    assert verify_chain(orch_conn).ok


def test_a_long_transaction_links_its_entries_in_one_chain_across_a_rolled_back_savepoint(orch_conn):
    with orch_conn.transaction():
        first = [_audit(orch_conn, entity_id=f"a{i}") for i in range(3)]
        with pytest.raises(RuntimeError), orch_conn.transaction():  # a savepoint that rolls back
            _audit(orch_conn, entity_id="undone")
            raise RuntimeError("roll back to the savepoint")
        rest = [_audit(orch_conn, entity_id=f"b{i}") for i in range(2)]
    rows = orch_conn.execute(
        "SELECT audit_id, chain_id, chain_seq, txn_entry FROM audit_ledger ORDER BY chain_seq"
    ).fetchall()
    orch_conn.rollback()
    assert [r[0] for r in rows] == first + rest
    assert len({r[1] for r in rows}) == 1
    assert [(r[2], r[3]) for r in rows] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    assert verify_chain(orch_conn).ok
    # The next transaction starts a chain of its own.
    with orch_conn.transaction():
        _audit(orch_conn, entity_id="c")
    chain, seq = orch_conn.execute(
        "SELECT chain_id, chain_seq FROM audit_ledger ORDER BY audit_id DESC"
    ).fetchone()
    orch_conn.rollback()
    assert chain != rows[0][1] and seq == 1
    assert verify_chain(orch_conn).ok


def test_a_savepoint_that_rolls_back_the_first_entry_leaves_the_chain_to_start_again(orch_conn):
    with orch_conn.transaction():
        with pytest.raises(RuntimeError), orch_conn.transaction():
            _audit(orch_conn, entity_id="undone")
            raise RuntimeError("roll back to the savepoint")
        _audit(orch_conn, entity_id="kept")
    seqs = [r[0] for r in orch_conn.execute("SELECT chain_seq FROM audit_ledger").fetchall()]
    orch_conn.rollback()
    assert seqs == [1] and verify_chain(orch_conn).ok


def test_a_bulk_audit_in_one_transaction_verifies(orch_conn):
    with orch_conn.transaction():
        orch_conn.execute(
            "INSERT INTO audit_ledger (actor, request_id, operation, entity_type, entity_id) "
            "SELECT 'job:rebuild', 'req-bulk', 'rebuild', 'task', 'T-' || i FROM generate_series(1, 5000) i"
        )
    report = verify_chain(orch_conn)
    assert report.ok and report.rows == 5000 and report.chains == 1


def test_a_forged_chain_setting_cannot_append_to_another_transactions_chain(orch_dsn):
    with connection(orch_dsn) as conn:
        _transaction_of(conn, 3, "p")
        chain = conn.execute("SELECT chain_id FROM audit_ledger LIMIT 1").fetchone()[0]
        conn.rollback()
        # Naming another transaction's chain: the entry still goes on this transaction's own.
        with conn.transaction():
            conn.execute("SELECT set_config('orch.audit_chain', %s, true)", (chain,))
            forged = _audit(conn, entity_id="forged")
        assert conn.execute(
            "SELECT chain_id <> %s FROM audit_ledger WHERE audit_id = %s", (chain, forged)
        ).fetchone()[0]
        conn.rollback()
        # Clearing it after an entry: the next one would take position 1 again, and is refused.
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            _audit(conn, entity_id="one")
            conn.execute("SELECT set_config('orch.audit_chain', '', true)")
            _audit(conn, entity_id="two")
        # Nonsense is ignored: the entry takes the normal path.
        with conn.transaction():
            conn.execute("SELECT set_config('orch.audit_chain', 'nonsense', true)")
            _audit(conn, entity_id="fine")
        report = verify_chain(conn)
    assert report.ok and report.rows == 5 and report.chains == 3


def test_entries_of_every_chain_trigger_verify_after_an_upgrade(databases, tmp_path):
    """0004 and 0006 chained by day and slot (with heads), 0010 by transaction: a ledger written
    by all three, then checkpointed, verifies, and tampering with an old entry is still caught."""
    import re
    import shutil

    from orchestration_pipeline.lib.db import migrate
    from orchestration_pipeline.lib.project_files import sql_dir

    old_root = tmp_path / "sql"
    shutil.copytree(sql_dir(), old_root)
    for path in (old_root / "orchestration").glob("*.sql"):
        if int(path.name[:4]) >= 10:
            path.unlink()
    dsn = databases.create("upgrade")

    def trigger_from(name):
        text = (sql_dir() / "orchestration" / name).read_text()
        # 0004 defines the function directly (with its per-field helper, which 0006 drops), 0006
        # inside a DO block that names its schema
        pattern = r"CREATE OR REPLACE FUNCTION audit_canonical_field.*?\n\$\$;\n"
        pattern += r"|CREATE OR REPLACE FUNCTION audit_ledger_chain\(\).*?\n\$\$;\n|DO \$do\$.*?\$do\$;"
        return "\n".join(m.group(0) for m in re.finditer(pattern, text, re.S))

    def write(conn, tag):
        _audit(conn, entity_id=f"{tag}-single", before={"k": "é\t"}, reason="r", org_id="o")
        conn.commit()
        with conn.transaction():
            for i in range(3):  # a transaction's later entries take the other path
                _audit(conn, entity_id=f"{tag}-multi-{i}", after={"n": i}, endpoint="/x", method="POST")

    with connection(dsn) as conn:
        migrate(conn, "orchestration", root=old_root)  # up to 0009: the 0006 trigger
        write(conn, "0006")
        conn.execute("SET LOCAL search_path = public, pg_temp")  # as the migration pins it
        conn.execute(trigger_from("0004_audit_ledger.sql"))
        conn.commit()
        write(conn, "0004")
        migrate(conn, "orchestration")  # 0010
        write(conn, "0010")
        before_checkpoint = verify_chain(conn)
        checkpoint_ledger(conn)
        report = verify_chain(conn)
        old = conn.execute(
            "SELECT audit_id FROM audit_ledger WHERE chain_id NOT LIKE 'tx/%%' LIMIT 1"
        ).fetchone()[0]
        legacy_chains = conn.execute(
            "SELECT count(DISTINCT chain_id) FROM audit_ledger WHERE chain_id NOT LIKE 'tx/%%'"
        ).fetchone()[0]
        conn.rollback()
        _tamper(dsn, "UPDATE audit_ledger SET reason = 'edited' WHERE audit_id = %s", (old,))
        tampered = verify_chain(conn)
    assert before_checkpoint.ok, before_checkpoint.as_dict()
    assert report.ok and report.rows == 12, report.as_dict()
    assert report.chains == legacy_chains + 2  # day/slot chain(s) (two if written across midnight) + 2 tx
    assert report.unsealed_entries == 0 and report.checkpoints == 1
    assert not tampered.ok and [b.kind for b in tampered.broken] == ["row_hash"]


def test_a_writer_cannot_choose_the_id_the_time_or_the_chain_of_an_entry(orch_conn):
    # An id it chose could collide on purpose (INSERT ... ON CONFLICT DO NOTHING), or land in a
    # range a checkpoint has already sealed.
    _audit(orch_conn)
    orch_conn.commit()
    for column, value in (("audit_id", 1), ("occurred_at", "2000-01-01"), ("chain_seq", 1)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), orch_conn.transaction():
            orch_conn.execute("SET LOCAL ROLE orch_pipeline_writer")
            orch_conn.execute(
                f"INSERT INTO audit_ledger ({column}, actor, request_id, operation, entity_type, entity_id) "
                "OVERRIDING SYSTEM VALUE VALUES (%s, 'mallory', 'r', 'update', 'policy', 'p') "
                "ON CONFLICT DO NOTHING",
                (value,),
            )
    assert verify_chain(orch_conn).ok


def test_objects_a_caller_creates_cannot_run_inside_the_chain_trigger(orch_conn):
    """The trigger runs as orch_audit_owner; an operator planted in public must not be picked up."""
    orch_conn.execute(
        """CREATE FUNCTION public.planted(integer, text) RETURNS text LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'planted operator ran as %', current_user; END $$"""
    )
    orch_conn.execute(
        "CREATE OPERATOR public.|| (LEFTARG = integer, RIGHTARG = text, FUNCTION = public.planted)"
    )
    orch_conn.commit()
    with orch_conn.transaction():
        orch_conn.execute("SET LOCAL search_path = public, pg_catalog")
        _audit(orch_conn, org_id="o", reason="r")  # would raise if the planted || were used
    assert verify_chain(orch_conn).ok
