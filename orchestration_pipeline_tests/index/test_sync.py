"""The outbox sync and the reconciler against a real qdrant-edge shard and a real PostgreSQL."""

import threading

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.index import outbox
from orchestration_pipeline.lib.index.decisions import delete_decision, put_decisions
from orchestration_pipeline.lib.index.embedders import HashingEmbedder
from orchestration_pipeline.lib.index.location import IndexPoint
from orchestration_pipeline.lib.index.reconcile import compare, reconcile_index
from orchestration_pipeline.lib.index.search import search_decisions, search_filter
from orchestration_pipeline.lib.index.sync import SyncSettings, sync_outbox
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl
from orchestration_pipeline_tests.index._support import (
    RATIONALES,
    PoisonEmbedder,
    Serialized,
    Unreachable,
    edge_index,
)

pytestmark = pytest.mark.db

WHO = {"actor": "oncall:bob", "request_id": "INC-9"}
FAST_RETRY = SyncSettings(retry=outbox.RetryPolicy(max_attempts=3, base_delay_s=0))


@pytest.fixture
def index(tmp_path):
    idx = edge_index(tmp_path / "qdrant")
    yield idx
    idx.close()


def _decisions(n: int, prefix: str = "d") -> list[dict]:
    orgs, statuses = ("acme", "globex", "initech"), ("approved", "rejected", "rolled_back")
    return [
        {"decision_id": f"{prefix}{i}", "rationale": f"{RATIONALES[i % len(RATIONALES)]} (case {i})",
         "org_id": orgs[i % 3], "policy_id": f"pol-{i % 5}", "status": statuses[i % 3]}
        for i in range(n)
    ]  # fmt: skip


def _indexed(index) -> dict[str, int]:
    return {s.decision_id: s.version for s in index.states()}


def _current(conn) -> dict[str, int]:
    return dict(conn.execute("SELECT decision_id, version FROM decisions").fetchall())


def test_ingested_decisions_become_searchable_with_filters(orch_dsn, tmp_path, index):
    events = [
        make_event("decision", minutes_ago=5, source="claude-code",
                   payload={"decision_id": f"agent-{i}", "rationale": text, "org_id": "acme" if i % 2 else "globex",
                            "policy_id": "deploy", "status": "approved"})
        for i, text in enumerate(RATIONALES)
    ]  # fmt: skip
    with connection(orch_dsn) as conn:
        Ingestor(conn).ingest_paths([write_jsonl(tmp_path / "land" / "agent.jsonl", events)])
        report = sync_outbox(conn, index, HashingEmbedder())
        embedder = HashingEmbedder()
        hits = search_decisions(conn, index, embedder, "rolled back payments api latency", k=3).results
        acme = search_decisions(conn, index, embedder, "registry 503 deploy retry", k=10,
                                filters=search_filter(org="acme")).results  # fmt: skip
        freshness = conn.execute(
            "SELECT count(*) FROM search_outbox WHERE outcome = 'indexed' AND searchable_at >= enqueued_at"
        ).fetchone()[0]
        metrics = {r[0] for r in conn.execute("SELECT name FROM metrics WHERE name LIKE 'index.%'")}
    assert report.indexed == len(RATIONALES) and report.claimed == len(RATIONALES)
    assert hits[0].decision_id == "agent-2" and hits[0].rationale == RATIONALES[2]
    assert hits[0].payload["version"] >= 1 and hits[0].current
    assert acme and all(h.payload["org_id"] == "acme" for h in acme)
    assert freshness == len(RATIONALES)
    assert {"index.freshness.p95_s", "index.backlog.pending", "index.sync.items_per_s"} <= metrics


def test_updates_and_deletes_reach_the_index_at_the_highest_version(orch_dsn, index):
    with connection(orch_dsn) as conn:
        put_decisions(conn, _decisions(5))
        conn.commit()
        sync_outbox(conn, index, HashingEmbedder())
        put_decisions(conn, [{**_decisions(5)[1], "rationale": "Reverted: the flag was wrong"}])
        put_decisions(conn, [{**_decisions(5)[1], "rationale": "Re-applied after the fix"}])
        delete_decision(conn, "d3", reason="duplicate of d2", **WHO)
        conn.commit()
        report = sync_outbox(conn, index, HashingEmbedder())
        assert _indexed(index) == _current(conn)
    assert report.indexed == 1 and report.deleted == 1 and report.superseded == 1
    assert "d3" not in _indexed(index)


def test_a_poison_item_does_not_block_the_other_99(orch_dsn, index):
    rows = _decisions(100)
    rows[37]["rationale"] = "POISON " + rows[37]["rationale"]
    embedder = PoisonEmbedder()
    with connection(orch_dsn) as conn:
        put_decisions(conn, rows)
        conn.commit()
        first = sync_outbox(conn, index, embedder, FAST_RETRY)
        assert first.indexed == 99 and first.retrying == 1
        assert set(_indexed(index)) == {r["decision_id"] for r in rows} - {"d37"}
        for _ in range(2):
            last = sync_outbox(conn, index, embedder, FAST_RETRY)
        dead = conn.execute("SELECT entity_id, attempts, error_class FROM search_dead_letters").fetchall()
    assert last.dead_lettered == 1
    assert dead == [("d37", 3, "ValueError")]
    # isolating one item in 100 takes about 2·log2(100) calls, not 100
    assert embedder.calls < 30


def test_an_unreachable_index_retries_bounded_then_dead_letters_and_reconcile_recovers(orch_dsn, index):
    down = Unreachable(index)
    with connection(orch_dsn) as conn:
        put_decisions(conn, _decisions(20))
        conn.commit()
        reports = [sync_outbox(conn, down, HashingEmbedder(), FAST_RETRY) for _ in range(2)]
        assert [r.retrying for r in reports] == [20, 20] and not any(r.dead_lettered for r in reports)
        assert conn.execute("SELECT count(*) FROM search_dead_letters").fetchone()[0] == 0
        conn.rollback()
        third = sync_outbox(conn, down, HashingEmbedder(), FAST_RETRY)
        assert third.dead_lettered == 20
        assert (
            down.calls == 3
        )  # one call per sync for the whole batch: nothing to isolate when the index is down
        assert len(_current(conn)) == 20  # nothing lost: Postgres still has every decision
        conn.rollback()
        # the backend is back: the reconciler finds all 20 missing and repairs them
        result = reconcile_index(conn, index, HashingEmbedder(), FAST_RETRY)
        assert result.found.counts["missing_in_index"] == 20 and result.remaining_drift == 0
        assert _indexed(index) == _current(conn)


def test_reconcile_finds_each_drift_class_and_repairs_it(orch_dsn, index):
    embedder = HashingEmbedder()
    with connection(orch_dsn) as conn:
        put_decisions(conn, _decisions(6))
        conn.commit()
        sync_outbox(conn, index, embedder)
        index.delete([("d0", 10**12)])  # lost from the index
        vector = embedder.embed(["old text"])[0]
        index.upsert([IndexPoint("ghost", 1, "x" * 64, vector, {"org_id": "acme"})])  # an orphan
        conn.execute(
            "ALTER TABLE decisions DISABLE TRIGGER decisions_enqueue_update"
        )  # a write that skipped the outbox
        conn.execute("UPDATE decisions SET rationale = 'changed behind the outbox' WHERE decision_id = 'd1'")
        conn.execute("ALTER TABLE decisions ENABLE TRIGGER decisions_enqueue_update")
        conn.commit()
        found = compare(conn, index)
        assert found.counts == {"missing_in_index": 1, "stale_version": 1, "orphan_in_index": 1}
        assert found.ids["stale_version"] == ["d1"] and found.ids["orphan_in_index"] == ["ghost"]
        conn.rollback()
        result = reconcile_index(conn, index, embedder)
        causes = conn.execute("SELECT cause, count(*) FROM search_outbox GROUP BY 1 ORDER BY 1").fetchall()
        assert result.repairs_enqueued == 3 and result.remaining_drift == 0
        assert _indexed(index) == _current(conn)
    assert ("repair", 3) in causes


def test_a_decision_written_during_reconcile_is_in_flight_not_drift(orch_dsn, index):
    with connection(orch_dsn) as conn:
        put_decisions(conn, _decisions(3))
        conn.commit()
        drift = compare(conn, index)
    assert drift.total == 0 and drift.in_flight == 3


def test_two_syncs_at_once_index_each_item_once_at_the_highest_version(orch_dsn, index):
    shared = Serialized(index)
    with connection(orch_dsn) as conn:
        put_decisions(conn, _decisions(300))
        conn.commit()
    reports, errors = [], []

    def run():
        try:
            with connection(orch_dsn) as conn:
                reports.append(sync_outbox(conn, shared, HashingEmbedder(), SyncSettings(batch_size=20)))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    def writer():
        with connection(orch_dsn) as conn:
            for round_ in range(5):
                put_decisions(
                    conn, [{**d, "rationale": f"{d['rationale']} r{round_}"} for d in _decisions(300)[:40]]
                )
                conn.commit()

    threads = [threading.Thread(target=run), threading.Thread(target=run), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with connection(orch_dsn) as conn:
        sync_outbox(conn, index, HashingEmbedder())  # whatever the writer added after both finished
        settled_twice = conn.execute(
            "SELECT count(*) FROM search_outbox WHERE done_at IS NULL OR outcome IS NULL"
        ).fetchone()[0]
        assert _indexed(index) == _current(conn)
    assert settled_twice == 0
    assert sum(r.claimed for r in reports) >= 300
