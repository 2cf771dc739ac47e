"""Decisions and the search outbox in PostgreSQL: versions, outbox rows in the same transaction,
claims, retries, dead letters, replay and pruning (no index involved)."""

from datetime import timedelta

import psycopg
import pytest
from pydantic import ValidationError

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.index import outbox
from orchestration_pipeline.lib.index.decisions import delete_decision, load_decisions, put_decisions
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = pytest.mark.db

WHO = {"actor": "oncall:alice", "request_id": "INC-42"}


def _outbox(conn) -> list[tuple]:
    return conn.execute(
        "SELECT entity_id, version, op, cause FROM search_outbox ORDER BY outbox_id"
    ).fetchall()


def _decision_event(minutes_ago: float, **payload) -> dict:
    return make_event("decision", minutes_ago=minutes_ago, session_id="run-7", payload=payload)


def test_ingested_decisions_version_and_enqueue_with_their_events(orch_dsn, tmp_path):
    # Shapes of two producers: an agent framework that names its decisions, and a CI
    # orchestrator that does not (the event id becomes the decision id).
    agent = [
        _decision_event(30, decision_id="plan-step-3", rationale="Chose the cached wheel: PyPI timed out twice",
                        org_id="acme", policy_id="deps.cache", status="approved"),
        _decision_event(20, decision_id="plan-step-3", rationale="Rebuilt from source: the cached wheel was yanked",
                        org_id="acme", policy_id="deps.cache", status="rolled_back"),
        # an older event of the same decision, arriving later: changes nothing
        _decision_event(40, decision_id="plan-step-3", rationale="initial guess", org_id="acme"),
    ]  # fmt: skip
    ci = make_event("decision", minutes_ago=10, source="buildkite", status="skipped",
                    payload={"rationale": "Skipped integration tests: docs-only change"})  # fmt: skip
    path = write_jsonl(tmp_path / "landing" / "a.jsonl", [*agent, ci])
    with connection(orch_dsn) as conn:
        Ingestor(conn).ingest_paths([path])
        decisions = load_decisions(conn, ["plan-step-3", ci["event_id"]])
        rows = _outbox(conn)
    step = decisions["plan-step-3"]
    assert step.rationale == "Rebuilt from source: the cached wheel was yanked"
    assert step.status == "rolled_back" and step.org_id == "acme" and step.session_id == "run-7"
    assert decisions[ci["event_id"]].status == "skipped"  # the event's own status, when the payload has none
    # one outbox row per decision written by the batch (the newest event of each), none for the old one
    assert sorted(r[0] for r in rows) == sorted(["plan-step-3", ci["event_id"]])
    assert all(r[2] == "upsert" and r[3] == "write" for r in rows)


def test_the_same_line_twice_makes_no_new_version(orch_dsn, tmp_path):
    event = _decision_event(5, decision_id="d-1", rationale="Paused rollout: error budget at 92%")
    with connection(orch_dsn) as conn:
        Ingestor(conn).ingest_paths([write_jsonl(tmp_path / "a.jsonl", [event])])
        Ingestor(conn).ingest_paths([write_jsonl(tmp_path / "b.jsonl", [event])])  # a re-sent file
        assert conn.execute("SELECT count(*) FROM search_outbox").fetchone()[0] == 1
        put_decisions(conn, [{"decision_id": "d-1", "rationale": "Paused rollout: error budget at 92%",
                              "session_id": "run-7", "created_at": load_decisions(conn, ["d-1"])["d-1"].created_at}])  # fmt: skip
        assert conn.execute("SELECT count(*) FROM search_outbox").fetchone()[0] == 1


def test_versions_grow_across_delete_and_recreate(orch_dsn):
    with connection(orch_dsn) as conn:
        put_decisions(conn, [{"decision_id": "x", "rationale": "first"}])
        put_decisions(conn, [{"decision_id": "x", "rationale": "second"}])
        assert delete_decision(conn, "x", reason="wrong tenant", **WHO)
        put_decisions(conn, [{"decision_id": "x", "rationale": "third"}])
        rows = _outbox(conn)
        audit = conn.execute(
            "SELECT operation, entity_type, reason FROM audit_ledger WHERE entity_id = 'x'"
        ).fetchall()
    assert [r[2] for r in rows] == ["upsert", "upsert", "delete", "upsert"]
    versions = [r[1] for r in rows]
    assert versions == sorted(versions) and len(set(versions)) == 4
    assert audit == [("delete", "decision", "wrong tenant")]


def test_outbox_rows_roll_back_with_the_decision(orch_dsn):
    with connection(orch_dsn) as conn:
        put_decisions(conn, [{"decision_id": "y", "rationale": "kept?"}])
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM search_outbox").fetchone()[0] == 0
        assert load_decisions(conn, ["y"]) == {}


def test_a_bad_decision_is_refused_whole_naming_the_field(orch_dsn):
    with connection(orch_dsn) as conn:
        with pytest.raises(ValidationError, match="rationale"):
            put_decisions(
                conn, [{"decision_id": "ok", "rationale": "fine"}, {"decision_id": "bad", "rationale": ""}]
            )
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0
        with pytest.raises(ValidationError, match="org_id"):
            put_decisions(conn, [{"decision_id": "n", "rationale": "r", "org_id": 42}])


def test_claims_collapse_per_entity_and_never_overlap(orch_dsn):
    with connection(orch_dsn, autocommit=True) as a, connection(orch_dsn, autocommit=True) as b:
        with a.transaction():
            for i in range(3):
                put_decisions(a, [{"decision_id": "hot", "rationale": f"v{i}"}])
            put_decisions(a, [{"decision_id": f"d{i}", "rationale": "r"} for i in range(10)])
        first = outbox.claim(a, "sync-a", limit=5, lease_s=60)
        second = outbox.claim(b, "sync-b", limit=100, lease_s=60)
    hot = [w for w in first.winners if w.entity_id == "hot"]
    assert len(hot) == 1 and len(first.superseded) == 2
    assert hot[0].version > max(s.version for s in first.superseded)
    ids_a = {i.outbox_id for i in first.winners + first.superseded}
    ids_b = {i.outbox_id for i in second.winners + second.superseded}
    assert not ids_a & ids_b and len(ids_a | ids_b) == 13


def test_retries_are_bounded_then_dead_lettered_and_deduplicated(orch_dsn):
    policy = outbox.RetryPolicy(max_attempts=3, base_delay_s=0)
    with connection(orch_dsn, autocommit=True) as conn:
        put_decisions(conn, [{"decision_id": f"p{i}", "rationale": "r"} for i in range(2)])
        for attempt in range(3):
            claim = outbox.claim(conn, "s", 10, 60)
            assert len(claim.winners) == 2, f"attempt {attempt + 1} should find both items due again"
            failures = [
                outbox.Failure(
                    w, "ProviderError", f"429 Too Many Requests (retry after {7 + i}s) req {w.outbox_id}"
                )
                for i, w in enumerate(claim.winners)
            ]
            retrying, dead = outbox.fail(conn, "s", failures, policy)
        assert (retrying, dead) == (0, 2)
        assert outbox.claim(conn, "s", 10, 60).winners == []
        groups = conn.execute("SELECT count, message_template FROM search_dead_letter_errors").fetchall()
        dead_rows = conn.execute("SELECT entity_id, attempts FROM search_dead_letters ORDER BY 1").fetchall()
    assert groups == [(2, "<n> Too Many Requests (retry after <n>s) req <n>")]
    assert dead_rows == [("p0", 3), ("p1", 3)]


def test_backoff_grows_with_jitter_and_is_capped():
    policy = outbox.RetryPolicy(max_attempts=6, base_delay_s=2, max_delay_s=20)
    delays = [policy.delay_s(n) for n in range(1, 7)]
    assert all(d >= 1.0 for d in delays)
    assert delays[3] > delays[0] and max(delays) <= 20
    assert len({round(policy.delay_s(3), 6) for _ in range(20)}) > 1  # jitter


def test_dead_letters_are_kept_and_replayed_once_audited(orch_dsn):
    policy = outbox.RetryPolicy(max_attempts=1, base_delay_s=0)
    with connection(orch_dsn, autocommit=True) as conn:
        put_decisions(conn, [{"decision_id": "z", "rationale": "r"}])
        claim = outbox.claim(conn, "s", 10, 60)
        outbox.fail(conn, "s", [outbox.Failure(claim.winners[0], "ValueError", "bad vector")], policy)
        for statement in ("DELETE FROM search_dead_letters", "TRUNCATE search_dead_letters",
                          "UPDATE search_dead_letters SET error_text = 'x'"):  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="replay-dead-letters"):
                conn.execute(statement)
        with pytest.raises(ValueError, match="reason"):
            outbox.replay_dead_letters(conn, reason=" ", **WHO)
        replayed = outbox.replay_dead_letters(conn, reason="embedding provider fixed", **WHO)
        again = outbox.replay_dead_letters(conn, reason="twice", **WHO)
        pending = conn.execute(
            "SELECT entity_id, cause, attempts FROM search_outbox WHERE done_at IS NULL"
        ).fetchall()
        audit = conn.execute(
            "SELECT operation, entity_type, reason FROM audit_ledger WHERE entity_type = 'search_dead_letter'"
        ).fetchall()
        kept = conn.execute(
            "SELECT count(*) FROM search_dead_letters WHERE replayed_at IS NOT NULL"
        ).fetchone()[0]
    assert len(replayed) == 1 and again == []
    assert pending == [("z", "replay", 0)]
    assert audit == [("replay", "search_dead_letter", "embedding provider fixed")]
    assert kept == 1


def test_prune_removes_only_old_done_rows(orch_dsn):
    with connection(orch_dsn, autocommit=True) as conn:
        put_decisions(conn, [{"decision_id": f"q{i}", "rationale": "r"} for i in range(3)])
        claim = outbox.claim(conn, "s", 2, 60)
        outbox.settle(conn, "s", [(w.outbox_id, "indexed") for w in claim.winners])
        conn.execute("UPDATE search_outbox SET done_at = now() - interval '8 days' WHERE entity_id = %s",
                     (claim.winners[0].entity_id,))  # fmt: skip
        assert outbox.prune(conn, timedelta(days=7)) == 1
        left = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE done_at IS NULL) FROM search_outbox"
        ).fetchone()
    assert left == (2, 1)


def test_settle_ignores_rows_whose_lease_was_taken_over(orch_dsn):
    with connection(orch_dsn, autocommit=True) as conn:
        put_decisions(conn, [{"decision_id": "l", "rationale": "r"}])
        claim = outbox.claim(conn, "slow", 10, lease_s=0.01)
        conn.execute("SELECT pg_sleep(0.05)")
        taken = outbox.claim(conn, "fast", 10, lease_s=60)
        assert [w.entity_id for w in taken.winners] == ["l"]
        assert outbox.settle(conn, "slow", [(claim.winners[0].outbox_id, "indexed")]) == []
        assert len(outbox.settle(conn, "fast", [(taken.winners[0].outbox_id, "indexed")])) == 1
