"""Forgeries the chains alone cannot see: a superuser rewrite (caught only against a checkpoint
kept outside the database), and times a writer could choose (stamped by the database instead)."""

import json
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from orchestration_pipeline.errors import AuditError
from orchestration_pipeline.lib.audit.chain import (
    CheckpointHead,
    checkpoint_ledger,
    head_break,
    parse_head,
    verify_chain,
)
from orchestration_pipeline.lib.audit.guard import guard_problems
from orchestration_pipeline.lib.audit.ledger import record_audit
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.project_files import sql_dir
from orchestration_pipeline_tests.audit_forgery import forge_as_superuser
from orchestration_pipeline_tests.conftest import clean_env

pytestmark = pytest.mark.db

CLI = str(Path(sys.executable).parent / "orchestration-pipeline")
WHO = {"actor": "alice", "request_id": "req-1", "operation": "update", "entity_type": "policy"}


def _write(dsn, *entity_ids):
    """One transaction per entity id; returns their audit ids."""
    ids = []
    for entity_id in entity_ids:
        with connection(dsn) as conn, conn.transaction():
            ids.append(record_audit(conn, **WHO, entity_id=entity_id, after={"on": True}))
    return ids


def _seal(dsn, **options):
    with connection(dsn) as conn:
        run = checkpoint_ledger(conn, **options)
    return CheckpointHead(run.checkpoint_seq, run.checkpoint_hash)


# --- the rewrite, and the expected head -------------------------------------------------------


def test_a_superuser_rewrite_passes_verify_but_not_against_the_head_kept_outside(orch_dsn):
    ids = _write(orch_dsn, "p1", "p2", "p3")
    kept = _seal(orch_dsn)
    forge_as_superuser(orch_dsn, ids[1])
    with connection(orch_dsn) as conn:
        alone = verify_chain(conn)
        report = verify_chain(conn, expect_head=kept)
        actor = conn.execute("SELECT actor FROM audit_ledger WHERE audit_id = %s", (ids[1],)).fetchone()[0]
    assert actor == "mallory"
    assert alone.ok, alone.as_dict()  # every hash recomputes: the chains alone cannot tell
    assert not report.ok and report.broken_chains == 1
    lost = report.head_break
    assert (lost.kind, lost.chain_id, lost.chain_seq, lost.audit_id) == ("anchor", "checkpoint/1", 1, ids[2])
    assert lost.expected == str(kept) and lost.found == report.newest_checkpoint
    assert lost.found.startswith("1:") and lost.found != str(kept)
    assert report.first_broken is lost
    assert f"expected {kept}, found {lost.found}" in lost.describe()
    assert report.as_dict()["expected_head"] == str(kept)


def test_the_head_may_be_followed_by_later_checkpoints_but_must_hold_its_place(orch_dsn):
    _write(orch_dsn, "p1", "p2")
    first = _seal(orch_dsn)
    _write(orch_dsn, "p3")
    second = _seal(orch_dsn)
    with connection(orch_dsn) as conn:
        older = verify_chain(conn, expect_head=first)
        newest = verify_chain(conn, expect_head=second)
        by_hash = verify_chain(conn, expect_head=CheckpointHead(None, first.hash))
        misplaced = verify_chain(conn, expect_head=CheckpointHead(2, first.hash))
        beyond = verify_chain(conn, expect_head=CheckpointHead(3, first.hash))
        unknown = verify_chain(conn, expect_head=CheckpointHead(None, "ab" * 32))
    assert (first.seq, second.seq) == (1, 2)
    assert older.ok and newest.ok and by_hash.ok, older.as_dict()
    assert newest.newest_checkpoint == str(second)
    assert misplaced.head_break.found == str(second)
    assert beyond.head_break.found == f"no checkpoint 3 (the newest is {second})"
    assert unknown.head_break.found == f"no checkpoint with that hash (the newest is {second})"
    assert unknown.head_break.chain_id == "checkpoint/anchor"


def test_a_ledger_restored_from_before_the_head_is_caught(orch_dsn):
    _write(orch_dsn, "p1")
    kept = _seal(orch_dsn)
    with connection(orch_dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM audit_checkpoints")
        conn.execute("DELETE FROM audit_ledger")
        conn.commit()
        assert verify_chain(conn).ok  # an empty ledger verifies
        lost = head_break(conn, kept)
    assert lost.found == "no checkpoint 1 (there are no checkpoints)"


def test_head_break_is_a_lookup_that_leaves_the_connection_idle(orch_dsn):
    _write(orch_dsn, "p1")
    kept = _seal(orch_dsn)
    with connection(orch_dsn) as conn:
        assert head_break(conn, kept) is None
        assert head_break(conn, CheckpointHead(1, "00" * 32)).found == str(kept)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # a checkpoint may follow
        assert checkpoint_ledger(conn).created == 0


@pytest.mark.parametrize(
    "text, head",
    [
        ("7:" + "AB" * 32, CheckpointHead(7, "ab" * 32)),
        ("  " + "0f" * 32 + "\n", CheckpointHead(None, "0f" * 32)),
    ],
)
def test_parse_head_reads_seq_and_hash_or_the_hash_alone(text, head):
    assert parse_head(text) == head
    assert parse_head(str(head)) == head


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "0:" + "ab" * 32,
        "x:" + "ab" * 32,
        "ab" * 31,
        "ab" * 33,
        "-1:" + "ab" * 32,
        "9" * 19 + ":" + "ab" * 32,
    ],
)
def test_parse_head_refuses_anything_else_naming_the_format(text):
    with pytest.raises(AuditError, match="give SEQ:HASH"):
        parse_head(text)


def test_an_expected_head_with_one_chain_is_refused(orch_conn):
    with pytest.raises(AuditError, match="verify the whole ledger, or drop the expected head"):
        verify_chain(orch_conn, chain_id="tx/1/1", expect_head=CheckpointHead(1, "ab" * 32))


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def cli(orch_dsn, tasks_dsn, tmp_path):
    env = clean_env(
        ORCH_HOME=str(tmp_path / "home"), ORCH_DATABASE_URL=orch_dsn, TASKS_DATABASE_URL=tasks_dsn
    )

    def _run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, "audit", *args], env=env, capture_output=True, text=True, timeout=120)

    return _run


def test_audit_verify_expect_head_exits_1_naming_what_was_expected_and_found(orch_dsn, cli):
    ids = _write(orch_dsn, "p1", "p2")
    sealed = cli("checkpoint")
    kept = re.search(r"newest checkpoint (1:[0-9a-f]{64}) \(keep it outside the database", sealed.stdout)[1]
    ok = cli("verify", "--expect-head", kept)
    assert ok.returncode == 0, ok.stderr
    assert f"expected head {kept} is in the checkpoint chain" in ok.stdout
    assert f"newest checkpoint: {kept}" in ok.stdout

    forge_as_superuser(orch_dsn, ids[0])
    assert cli("verify").returncode == 0  # the rewrite recomputed every hash
    forged = cli("verify", "--expect-head", kept)
    with connection(orch_dsn) as conn:
        now = verify_chain(conn).newest_checkpoint
    assert forged.returncode == 1
    assert f"expected {kept}, found {now}" in forged.stderr and "runbooks/audit.md" in forged.stderr
    report = json.loads(cli("verify", "--expect-head", kept, "--json").stdout)
    assert report["ok"] is False and report["expected_head"] == kept
    assert (report["first_broken"]["kind"], report["first_broken"]["found"]) == ("anchor", now)


def test_audit_verify_refuses_an_unreadable_head_or_one_chain_with_a_head(cli):
    bad = cli("verify", "--expect-head", "12:nothex")
    assert bad.returncode == 2 and "--expect-head" in bad.stderr and "give SEQ:HASH" in bad.stderr
    both = cli("verify", "--chain", "tx/1/1", "--expect-head", "ab" * 32)
    assert both.returncode == 2 and "drop one of them" in both.stderr


# --- times stamped by the database ------------------------------------------------------------


def test_an_entry_written_late_in_a_long_transaction_gets_the_time_it_was_written(orch_dsn):
    with connection(orch_dsn) as conn, conn.transaction():
        began = conn.execute("SELECT now()").fetchone()[0]
        time.sleep(0.3)
        audit_id = record_audit(conn, **WHO, entity_id="late")
        written = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    with connection(orch_dsn) as conn:
        query = "SELECT occurred_at FROM audit_ledger WHERE audit_id = %s"
        at = conn.execute(query, (audit_id,)).fetchone()[0]
        conn.rollback()
        assert verify_chain(conn).ok  # the hash covers the time as stamped
    assert began + timedelta(milliseconds=250) < at <= written


def test_a_checkpoint_is_stamped_after_every_entry_it_seals(orch_dsn):
    """The checkpointer's transaction began before the entry was written; its row must not say so."""
    with connection(orch_dsn) as checkpointer:
        checkpointer.execute("SELECT 1")  # the transaction (and now()) starts here
        time.sleep(0.05)
        (audit_id,) = _write(orch_dsn, "p1")
        checkpointer.execute("SELECT * FROM audit_checkpoint(100, 2000)").fetchone()
        checkpointer.commit()
        sealed_at, written_at = checkpointer.execute(
            "SELECT (SELECT created_at FROM audit_checkpoints), "
            "(SELECT occurred_at FROM audit_ledger WHERE audit_id = %s)",
            (audit_id,),
        ).fetchone()
    assert written_at < sealed_at


def test_a_writer_cannot_supply_a_time_and_an_owners_is_overwritten(orch_conn):
    orch_conn.execute(
        "INSERT INTO audit_ledger (occurred_at, actor, request_id, operation, entity_type, entity_id) "
        "VALUES ('2000-01-01', 'owner', 'r', 'update', 'policy', 'p')"
    )
    at = orch_conn.execute("SELECT occurred_at, clock_timestamp() FROM audit_ledger").fetchone()
    orch_conn.commit()
    assert abs(at[1] - at[0]) < timedelta(minutes=1)
    privileges = orch_conn.execute(
        """SELECT has_column_privilege('orch_pipeline_writer', 'audit_ledger', 'occurred_at', 'INSERT'),
                  has_column_privilege('orch_pipeline_writer', 'audit_checkpoints', 'created_at', 'INSERT')"""
    ).fetchone()
    assert privileges == (False, False)


def test_the_guard_names_an_older_function_that_stamps_the_transaction_start(orch_dsn):
    older = (sql_dir() / "orchestration" / "0010_audit_transaction_chains.sql").read_text()
    with connection(orch_dsn) as conn:
        assert guard_problems(conn) == []
        conn.execute(older)  # reapplied by hand, as an older runbook said
        conn.commit()
        problems = guard_problems(conn)
    assert len(problems) == 2, problems
    assert all("reapply sql/orchestration/0016_audit_database_clock.sql" in p for p in problems)
    assert "audit_ledger_chain() does not stamp an entry's occurred_at with clock_timestamp()" in problems[0]
    assert "a checkpoint's created_at" in problems[1]
    with connection(orch_dsn) as conn:
        conn.execute((sql_dir() / "orchestration" / "0016_audit_database_clock.sql").read_text())
        conn.commit()
        assert guard_problems(conn) == []
