"""The audit ledger: same-transaction writes, the append-only guard, privileges, hash chains."""

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from orchestration_pipeline.errors import AuditError
from orchestration_pipeline.lib.audit import (
    AuditFilter,
    compute_row_hash,
    guard_problems,
    parse_since,
    query_audit,
    record_audit,
    verify_chain,
)
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingest import Ingestor
from orchestration_pipeline.lib.quarantine import replay_quarantine
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
    assert row[12].startswith(datetime.now(UTC).strftime("%Y-%m-%d") + "/") and row[13] == 1
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
        _audit(orch_conn)  # the SECURITY DEFINER trigger advances the chain head for it
        assert orch_conn.execute("SELECT count(*) FROM audit_ledger").fetchone()[0] == 1
    refused = [
        ("UPDATE audit_ledger SET reason = 'x'", "permission denied"),
        ("DELETE FROM audit_ledger", "permission denied"),
        ("TRUNCATE audit_ledger", "permission denied"),
        ("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_append_only", "must be owner"),
        ("UPDATE audit_chain_heads SET last_seq = 0", "permission denied"),
        ("DROP TABLE audit_ledger", "must be owner"),
    ]
    for statement, message in refused:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=message):
            with orch_conn.transaction():
                orch_conn.execute("SET LOCAL ROLE orch_pipeline_writer")
                orch_conn.execute(statement)
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


def test_removing_the_newest_entries_is_caught_by_the_chain_head(orch_dsn):
    with connection(orch_dsn) as conn:
        with conn.transaction():
            ids = [_audit(conn, entity_id=f"p{i}") for i in range(3)]
        conn.rollback()
        _tamper(orch_dsn, "DELETE FROM audit_ledger WHERE audit_id = %s", (ids[2],))
        first = verify_chain(conn).first_broken
    assert (first.kind, first.audit_id, first.chain_seq) == ("head", ids[2], 3)


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


SLOTS = 32  # chains per day: the writing backend's pid mod 32


def _connections_sharing_a_slot(dsn, wanted):
    """``wanted`` connections whose backends write to the same chain, plus one that does not."""
    opened, by_slot = [], {}
    try:
        while True:
            conn = psycopg.connect(dsn)
            opened.append(conn)
            slot = conn.execute("SELECT pg_backend_pid() %% %s", (SLOTS,)).fetchone()[0]
            conn.rollback()
            by_slot.setdefault(slot, []).append(conn)
            full = [group for group in by_slot.values() if len(group) >= wanted]
            if full and len(by_slot) > 1:
                same = full[0][:wanted]
                other = next(g[0] for g in by_slot.values() if g[0] not in same)
                for extra in opened:
                    if extra not in same and extra is not other:
                        extra.close()
                return same, other
            assert len(opened) <= wanted * SLOTS + 1, "pigeonhole: cannot happen"
    except BaseException:
        for conn in opened:
            conn.close()
        raise


def test_concurrent_writers_in_one_chain_build_one_unbroken_sequence(orch_dsn):
    same, other = _connections_sharing_a_slot(orch_dsn, 3)
    writers, per_thread = [*same, other], 40
    barrier = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def writer(n: int, conn) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with conn.transaction():
                    _audit(conn, entity_id=f"e{n}", request_id=f"r{n}-{i}", after={"i": i})
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    pool = [threading.Thread(target=writer, args=(n, c)) for n, c in enumerate(writers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    for conn in writers:
        conn.close()
    assert errors == []
    with connection(orch_dsn) as conn:
        per_chain = conn.execute(
            "SELECT chain_id, array_agg(chain_seq ORDER BY chain_seq) FROM audit_ledger GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        conn.rollback()
        report = verify_chain(conn)
    shared_chain_seqs = max(per_chain, key=lambda r: len(r[1]))[1]
    assert shared_chain_seqs == list(range(1, 3 * per_thread + 1))  # three writers, one gapless chain
    assert len(per_chain) == 2
    assert report.ok and report.chains == 2 and report.rows == 4 * per_thread


def test_writers_of_different_chains_do_not_wait_for_each_other(orch_dsn):
    (holder, same), other = _connections_sharing_a_slot(orch_dsn, 2)
    try:
        _audit(holder, entity_id="a")  # holds its chain's head lock until it commits
        other.execute("SET lock_timeout = '2s'")
        other.commit()
        with other.transaction():
            _audit(other, entity_id="b")  # another chain: commits at once
        # The same chain waits: with a short lock timeout the second writer gives up.
        same.execute("SET lock_timeout = '200ms'")
        same.commit()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            with same.transaction():
                _audit(same, entity_id="c")
        holder.commit()
        with same.transaction():
            _audit(same, entity_id="c")
        report = verify_chain(other)
    finally:
        for conn in (holder, same, other):
            conn.close()
    assert report.ok and report.rows == 3 and report.chains == 2


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


def test_a_long_transaction_links_its_entries_and_moves_the_head_once_at_commit(orch_conn):
    with orch_conn.transaction():
        first = [_audit(orch_conn, entity_id=f"a{i}") for i in range(3)]
        with pytest.raises(RuntimeError), orch_conn.transaction():  # a savepoint that rolls back
            _audit(orch_conn, entity_id="undone")
            raise RuntimeError("roll back to the savepoint")
        rest = [_audit(orch_conn, entity_id=f"b{i}") for i in range(2)]
        # Until commit the head still names the transaction's first entry.
        assert orch_conn.execute("SELECT last_id FROM audit_chain_heads").fetchone()[0] == first[0]
    rows = orch_conn.execute(
        "SELECT audit_id, chain_seq, txn_entry FROM audit_ledger ORDER BY chain_seq"
    ).fetchall()
    head = orch_conn.execute("SELECT last_id, last_seq FROM audit_chain_heads").fetchone()
    orch_conn.rollback()
    assert [r[0] for r in rows] == first + rest
    assert [(r[1], r[2]) for r in rows] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    assert head == (rest[-1], 5)
    assert verify_chain(orch_conn).ok
    # The next transaction starts again at txn_entry 1 and links to the last entry.
    with orch_conn.transaction():
        _audit(orch_conn, entity_id="c")
    assert orch_conn.execute(
        "SELECT chain_seq, txn_entry FROM audit_ledger ORDER BY audit_id DESC"
    ).fetchone() == (6, 1)
    orch_conn.rollback()
    assert verify_chain(orch_conn).ok


def test_a_bulk_audit_in_one_transaction_verifies(orch_conn):
    with orch_conn.transaction():
        orch_conn.execute(
            "INSERT INTO audit_ledger (actor, request_id, operation, entity_type, entity_id) "
            "SELECT 'job:rebuild', 'req-bulk', 'rebuild', 'task', 'T-' || i FROM generate_series(1, 5000) i"
        )
    report = verify_chain(orch_conn)
    assert report.ok and report.rows == 5000 and report.chains == 1


def test_a_forged_chain_setting_cannot_fork_a_chain(orch_dsn):
    with connection(orch_dsn) as conn:
        with conn.transaction():
            ids = [_audit(conn, entity_id=f"p{i}") for i in range(3)]
        chain = conn.execute("SELECT chain_id FROM audit_ledger LIMIT 1").fetchone()[0]
        conn.rollback()
        # Pointing at an entry that already has a successor: the position is taken, the insert fails.
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("SELECT set_config('orch.audit_chain', %s, true)", (f"{chain}|1|1",))
            _audit(conn, entity_id="forged")
        # Nonsense is ignored: the entry takes the normal path.
        with conn.transaction():
            conn.execute("SELECT set_config('orch.audit_chain', 'nonsense', true)")
            _audit(conn, entity_id="fine")
        report = verify_chain(conn)
    assert report.ok and report.rows == 4 and ids


def test_entries_from_the_first_and_the_current_chain_trigger_form_one_verifiable_chain(orch_conn):
    """0006 replaced 0004's trigger for speed; both must write the same canonical rows and hashes."""
    import re

    from orchestration_pipeline.lib.project_files import sql_dir

    def trigger_from(name):
        text = (sql_dir() / "orchestration" / name).read_text()
        # 0004 defines the function directly; 0006 inside a DO block that names its schema
        # (0004's trigger calls its per-field helper, which 0006 drops: bring that back too)
        pattern = r"CREATE OR REPLACE FUNCTION audit_canonical_field.*?\n\$\$;\n"
        pattern += r"|CREATE OR REPLACE FUNCTION audit_ledger_chain\(\).*?\n\$\$;\n|DO \$do\$.*?\$do\$;"
        return "\n".join(m.group(0) for m in re.finditer(pattern, text, re.S))

    def write(tag):
        _audit(orch_conn, entity_id=f"{tag}-single", before={"k": "é\t"}, reason="r", org_id="o")
        orch_conn.commit()
        with orch_conn.transaction():
            for i in range(3):  # a transaction's later entries take the other path
                _audit(orch_conn, entity_id=f"{tag}-multi-{i}", after={"n": i}, endpoint="/x", method="POST")

    for name in ("0004_audit_ledger.sql", "0006_audit_chain_fast.sql", "0004_audit_ledger.sql"):
        orch_conn.execute("SET LOCAL search_path = public, pg_temp")  # as the migration pins it
        orch_conn.execute(trigger_from(name))
        orch_conn.commit()
        write(name[:4])
    report = verify_chain(orch_conn)
    assert report.ok, report.as_dict()
    assert report.rows == 12 and report.chains == 1


def test_a_writer_cannot_choose_the_id_the_time_or_the_chain_of_an_entry(orch_conn):
    # An id it chose could collide on purpose: INSERT ... ON CONFLICT DO NOTHING would skip the
    # entry after the trigger had advanced the chain head.
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


def test_a_forged_entry_count_in_the_chain_setting_cannot_leave_the_head_behind(orch_conn):
    _audit(orch_conn, entity_id="first")
    orch_conn.commit()
    chain, seq = orch_conn.execute("SELECT chain_id, chain_seq FROM audit_ledger").fetchone()
    orch_conn.rollback()
    with orch_conn.transaction():
        orch_conn.execute("SET LOCAL ROLE orch_pipeline_writer")
        # "|0": the next entry would count as the transaction's first and skip the head catch-up
        orch_conn.execute("SELECT set_config('orch.audit_chain', %s, true)", (f"{chain}|{seq}|0",))
        _audit(orch_conn, entity_id="forged")
    with orch_conn.transaction():  # the chain goes on; no UniqueViolation on a stale head
        _audit(orch_conn, entity_id="next")
    report = verify_chain(orch_conn)
    assert report.ok and report.rows == 3, report.as_dict()


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
