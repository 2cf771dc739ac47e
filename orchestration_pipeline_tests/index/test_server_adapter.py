"""The qdrant-client adapter, against qdrant-client's local mode (and a closed port)."""

from __future__ import annotations

import dataclasses
import random
import socket
import time
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_client.http.exceptions import UnexpectedResponse

from orchestration_pipeline.lib.index.edge import SCROLL_PAGE
from orchestration_pipeline.lib.index.location import (
    IndexConfigMismatch,
    IndexedState,
    IndexUnavailable,
    SearchFilter,
    VectorIndex,
    VectorIndexLocation,
)
from orchestration_pipeline.lib.index.open import open_index
from orchestration_pipeline.lib.index.server import METADATA_KEY, ServerIndex
from orchestration_pipeline_tests.index._engine import SETTINGS, brute_force, make_points, random_vector


@pytest.fixture
def index():
    ix = ServerIndex("memory", client=QdrantClient(location=":memory:"))
    ix.ensure_collection(SETTINGS)
    yield ix
    ix.close()


def _ids(hits) -> list[str]:
    return [h.decision_id for h in hits]


def test_it_is_a_vector_index_in_local_mode(index: ServerIndex) -> None:
    assert isinstance(index, VectorIndex)
    assert index.local


def test_a_point_finds_itself_first_with_its_payload(index: ServerIndex) -> None:
    points = make_points(50)
    assert index.upsert(points).written == 50
    hits = index.search(points[17].vector, 5)
    assert hits[0].decision_id == "d17"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].payload["content_hash"] == "h17-v1" and hits[0].payload["created_at"] == 1017.0
    assert index.count() == 50


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        (SearchFilter(org_id="org-b"), lambda p: p.payload["org_id"] == "org-b"),
        (SearchFilter(policy_id="pol-1"), lambda p: p.payload["policy_id"] == "pol-1"),
        (SearchFilter(status="denied"), lambda p: p.payload["status"] == "denied"),
        (
            SearchFilter(created_from=1010.0, created_to=1020.0),
            lambda p: 1010.0 <= p.payload["created_at"] <= 1020.0,
        ),
    ],
)
def test_filters_return_exactly_the_matching_decisions(
    index: ServerIndex, filters: SearchFilter, keep
) -> None:
    points = make_points(30)
    index.upsert(points)
    expected = {p.decision_id for p in points if keep(p)}
    assert expected
    assert set(_ids(index.search(random_vector(random.Random(3)), 100, filters))) == expected


def test_local_mode_reports_no_payload_indexes(index: ServerIndex) -> None:
    """Local mode keeps none (it ignores them), and the adapter reports what the collection says."""
    assert dict(index.payload_indexes()) == {}


def test_a_lower_version_never_replaces_a_higher_one(index: ServerIndex) -> None:
    index.upsert(make_points(3, version=5))
    outcome = index.upsert(make_points(2, version=4, seed=99) + make_points(1, start=10))
    assert (outcome.written, outcome.skipped_stale, outcome.stale_ids) == (1, 2, ("d0", "d1"))
    assert {s.decision_id: s for s in index.states()}["d1"] == IndexedState("d1", 5, "h1-v5")
    batch = index.upsert(make_points(1, version=9) + make_points(1, version=8))
    assert (batch.written, batch.skipped_stale) == (1, 1)


def test_delete_keeps_a_point_with_a_higher_version(index: ServerIndex) -> None:
    index.upsert(make_points(3, version=3))
    outcome = index.delete([("d0", 2), ("d1", 3), ("d2", 7), ("never-indexed", 1)])
    assert (outcome.written, outcome.skipped_stale, outcome.stale_ids) == (3, 1, ("d0",))
    assert [s.decision_id for s in index.states()] == ["d0"]


def test_states_pages_through_every_point(index: ServerIndex) -> None:
    points = make_points(SCROLL_PAGE + 250)
    index.upsert(points)
    assert {(s.decision_id, s.content_hash) for s in index.states()} == {
        (p.decision_id, p.content_hash) for p in points
    }


def test_exact_and_quantization_switches_search_every_way(index: ServerIndex) -> None:
    points = make_points(300, seed=21)
    index.upsert(points)
    query = random_vector(random.Random(4))
    truth = brute_force(points, query, 10)
    for kwargs in ({}, {"exact": True}, {"quantization": False}, {"quantization": True}):
        assert _ids(index.search(query, 10, **kwargs)) == truth


def test_another_embedder_or_dimension_is_refused_and_settings_live_in_metadata(tmp_path: Path) -> None:
    client = QdrantClient(path=str(tmp_path / "local"))
    ix = ServerIndex("local", client=client)
    ix.ensure_collection(SETTINGS)
    assert client.get_collection("decisions").config.metadata[METADATA_KEY] == dataclasses.asdict(SETTINGS)
    for other in (
        dataclasses.replace(SETTINGS, embedder="hashing-384"),
        dataclasses.replace(SETTINGS, dimension=8),
    ):
        with pytest.raises(IndexConfigMismatch, match="orchestration-pipeline index rebuild"):
            ServerIndex("local", client=client).ensure_collection(other)
    ix.ensure_collection(dataclasses.replace(SETTINGS, hnsw_ef=32))
    assert client.get_collection("decisions").config.metadata[METADATA_KEY]["hnsw_ef"] == 32
    client.close()


def test_a_collection_without_settings_is_adopted_after_checking_its_width() -> None:
    client = QdrantClient(location=":memory:")
    client.create_collection("decisions", vectors_config=m.VectorParams(size=16, distance=m.Distance.COSINE))
    with pytest.raises(IndexConfigMismatch, match="16 dimensions"):
        ServerIndex("memory", client=client).ensure_collection(dataclasses.replace(SETTINGS, dimension=8))
    ServerIndex("memory", client=client).ensure_collection(SETTINGS)
    assert client.get_collection("decisions").config.metadata[METADATA_KEY]["embedder"] == SETTINGS.embedder


def test_data_survives_reopening_a_local_path(tmp_path: Path) -> None:
    points = make_points(20)
    first = QdrantClient(path=str(tmp_path / "local"))
    ServerIndex("local", client=first).ensure_collection(SETTINGS)
    ServerIndex("local", client=first).upsert(points)
    first.close()
    second = QdrantClient(path=str(tmp_path / "local"))
    reopened = ServerIndex("local", client=second)  # reads without ensure_collection
    assert reopened.count() == 20
    assert reopened.search(points[3].vector, 1)[0].decision_id == "d3"
    second.close()


def test_reads_before_the_collection_exists_are_empty_and_writes_say_how() -> None:
    ix = ServerIndex("memory", client=QdrantClient(location=":memory:"))
    assert (ix.count(), list(ix.states()), ix.search([1.0] * 16, 3), dict(ix.payload_indexes())) == (
        0,
        [],
        [],
        {},
    )
    ix.optimize()
    with pytest.raises(IndexUnavailable, match="ensure_collection"):
        ix.upsert(make_points(1))


def test_a_closed_port_is_unavailable_quickly_and_names_the_fix() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    index = open_index(VectorIndexLocation("server", url))
    assert isinstance(index, ServerIndex)
    started = time.monotonic()
    for call in (lambda: index.ensure_collection(SETTINGS), index.count, lambda: index.search([1.0] * 16, 1)):
        with pytest.raises(IndexUnavailable, match=rf"{url}.*QDRANT_URL"):
            call()
    assert time.monotonic() - started < 5
    index.close()


class _ServerLike:
    """A local-mode client that says it is remote, recording what the adapter asks a server for."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.inner = QdrantClient(location=":memory:")
        self.init_options = {"url": "http://qdrant.test:6333"}
        self.payload_indexes: dict[str, m.PayloadSchemaType] = {}
        self.fail_with = fail_with

    def create_payload_index(self, collection: str, field: str, schema, wait: bool = True) -> None:
        self.payload_indexes[field] = schema

    def query_points(self, *args, **kwargs):
        self.search_params = kwargs["search_params"]
        return self.inner.query_points(*args, **{**kwargs, "search_params": None})

    def collection_exists(self, name: str) -> bool:
        if self.fail_with is not None:
            raise self.fail_with
        return self.inner.collection_exists(name)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_against_a_server_it_creates_every_payload_index_and_sends_search_parameters() -> None:
    client = _ServerLike()
    index = ServerIndex("http://qdrant.test:6333", client=client)  # type: ignore[arg-type]
    index.ensure_collection(SETTINGS)
    assert {field: schema.value for field, schema in client.payload_indexes.items()} == {
        "org_id": "keyword",
        "policy_id": "keyword",
        "status": "keyword",
        "created_at": "float",
        "decision_id": "keyword",
    }
    index.upsert(make_points(5))
    index.search([1.0] * 16, 3)
    quant = client.search_params.quantization
    assert (quant.ignore, quant.rescore, quant.oversampling, client.search_params.hnsw_ef) == (
        False,
        True,
        2.0,
        128,
    )
    index.search([1.0] * 16, 3, quantization=False)
    assert client.search_params.quantization.ignore is True
    index.search([1.0] * 16, 3, exact=True)
    assert client.search_params.exact is True and client.search_params.quantization.ignore is True


def test_a_refused_api_key_names_qdrant_api_key() -> None:
    refused = UnexpectedResponse(401, "Unauthorized", b"", None)  # type: ignore[arg-type]
    index = ServerIndex("http://qdrant.test:6333", client=_ServerLike(fail_with=refused))  # type: ignore[arg-type]
    with pytest.raises(IndexUnavailable, match="QDRANT_API_KEY"):
        index.count()
