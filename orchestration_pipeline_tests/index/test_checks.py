"""Each index check passes on a healthy index and fails on the bad data it exists to catch."""

import pytest
from qdrant_client import QdrantClient

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.index import checks, outbox
from orchestration_pipeline.lib.index.decisions import put_decisions
from orchestration_pipeline.lib.index.embedders import HashingEmbedder
from orchestration_pipeline.lib.index.location import CollectionSettings, IndexUnavailable
from orchestration_pipeline.lib.index.reconcile import reconcile_index
from orchestration_pipeline.lib.index.server import ServerIndex
from orchestration_pipeline.lib.index.sync import SyncSettings, sync_outbox
from orchestration_pipeline_tests.index._support import RATIONALES, Unreachable, WritesFail, edge_index

pytestmark = pytest.mark.db


@pytest.fixture
def index(tmp_path):
    idx = edge_index(tmp_path / "qdrant")
    yield idx
    idx.close()


def _seed(conn, n: int = 30) -> None:
    put_decisions(
        conn,
        [{"decision_id": f"c{i}", "rationale": f"{RATIONALES[i % len(RATIONALES)]} #{i}", "org_id": "acme"}
         for i in range(n)],
    )  # fmt: skip
    conn.commit()


def test_index_drift_zero_fails_without_a_run_and_when_drift_remains(orch_dsn, index):
    with connection(orch_dsn) as conn:
        assert not checks.index_drift_zero(conn).passed  # never reconciled
        _seed(conn)
        settings = SyncSettings(retry=outbox.RetryPolicy(max_attempts=2, base_delay_s=0))
        reconcile_index(conn, WritesFail(index), HashingEmbedder(), settings)
        verdict = checks.index_drift_zero(conn)
        assert not verdict.passed and verdict.metadata["remaining_drift"] == 30
        assert "c0" in str(verdict.metadata["remaining_samples"])
        with pytest.raises(IndexUnavailable):
            reconcile_index(conn, Unreachable(index), HashingEmbedder(), settings)
        down = checks.index_drift_zero(conn)
        assert (
            not down.passed and "could not finish" in down.description and "127.0.0.1:1" in down.description
        )
        reconcile_index(conn, index, HashingEmbedder())
        assert checks.index_drift_zero(conn).passed


def test_no_dead_letters_fails_on_one_and_passes_after_replay(orch_dsn):
    with connection(orch_dsn, autocommit=True) as conn:
        assert checks.no_dead_letters(conn).passed
        _seed(conn, 2)
        claim = outbox.claim(conn, "s", 10, 60)
        failures = [
            outbox.Failure(w, "ResponseHandlingException", "timed out after 5.0s") for w in claim.winners
        ]
        outbox.fail(conn, "s", failures, outbox.RetryPolicy(max_attempts=1))
        verdict = checks.no_dead_letters(conn)
        assert not verdict.passed and verdict.metadata["dead_letters"] == 2
        assert verdict.metadata["by_error"][0]["count"] == 2 and "timed out" in verdict.description
        outbox.replay_dead_letters(conn, actor="oncall:c", request_id="INC-1", reason="network fixed")
        assert checks.no_dead_letters(conn).passed


def test_outbox_freshness_fails_when_items_were_late_or_are_still_pending(orch_dsn, index):
    with connection(orch_dsn) as conn:
        _seed(conn, 20)
        sync_outbox(conn, index, HashingEmbedder())
        assert checks.outbox_freshness(conn).passed
        # two of twenty became searchable only after 45 s: 90% on time, under 95%
        conn.execute(
            "UPDATE search_outbox SET enqueued_at = searchable_at - interval '45 seconds' "
            "WHERE entity_id IN ('c1', 'c2')"
        )
        conn.commit()
        late = checks.outbox_freshness(conn)
        assert not late.passed and late.metadata["on_time"] == 18 and late.metadata["freshness_p95_s"] >= 45
        # a pending item older than the limit counts as late too
        assert checks.outbox_freshness(conn, min_share=0.5).passed
        put_decisions(conn, [{"decision_id": f"new{i}", "rationale": "waiting"} for i in range(30)])
        conn.execute(
            "UPDATE search_outbox SET enqueued_at = now() - interval '2 minutes' WHERE done_at IS NULL"
        )
        conn.commit()
        stuck = checks.outbox_freshness(conn, min_share=0.5)
        assert not stuck.passed and stuck.metadata["pending_late"] == 30


def test_payload_indexes_present_passes_on_edge_and_fails_where_they_are_missing(index):
    assert checks.payload_indexes_present(index).passed
    # qdrant-client's local mode keeps no payload indexes: exactly the state the check must catch
    local = ServerIndex("http://local-mode", None, client=QdrantClient(location=":memory:"))
    local.ensure_collection(CollectionSettings(dimension=384, embedder="hashing-384"))
    verdict = checks.payload_indexes_present(local)
    local.close()
    assert not verdict.passed and "org_id" in verdict.metadata["missing"]


class _BrokenGraph:
    """Approximate search returning the worst matches (a corrupt graph); exact search is honest."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def search(self, vector, limit, filters=None, *, exact=False, quantization=None):
        if exact:
            return self.inner.search(vector, limit, filters, exact=True, quantization=quantization)
        everything = self.inner.search(vector, 1000, filters, exact=True, quantization=False)
        return list(reversed(everything))[:limit]


def test_search_slo_fails_on_latency_and_on_recall(orch_dsn, index):
    with connection(orch_dsn) as conn:
        assert checks.search_slo(conn, index, HashingEmbedder()).passed  # nothing to probe yet
        _seed(conn, 60)
        sync_outbox(conn, index, HashingEmbedder())
        good = checks.search_slo(conn, index, HashingEmbedder(), probes=10, seed=1)
        assert good.passed and good.metadata["recall_at_k"] == 1.0
        slow = checks.search_slo(conn, index, HashingEmbedder(), probes=10, seed=1, p95_ms=0.001)
        assert not slow.passed and "p95" in slow.description
        broken = checks.search_slo(conn, _BrokenGraph(index), HashingEmbedder(), probes=10, seed=1)
        assert not broken.passed and broken.metadata["recall_at_k"] < 0.5
