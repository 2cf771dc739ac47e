"""The qdrant-edge adapter against real shards in tmp_path."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from orchestration_pipeline.lib.index.edge import SCROLL_PAGE, EdgeIndex, read_sidecar
from orchestration_pipeline.lib.index.location import (
    FILTER_FIELDS,
    IndexConfigMismatch,
    IndexedState,
    IndexPoint,
    IndexUnavailable,
    SearchFilter,
    VectorIndex,
)
from orchestration_pipeline_tests.index._engine import SETTINGS, brute_force, make_points, random_vector


@pytest.fixture
def index(tmp_path: Path):
    ix = EdgeIndex(tmp_path / "qdrant")
    ix.ensure_collection(SETTINGS)
    yield ix
    ix.close()


def _ids(hits) -> list[str]:
    return [h.decision_id for h in hits]


def test_it_is_a_vector_index(index: EdgeIndex) -> None:
    assert isinstance(index, VectorIndex)


def test_a_point_finds_itself_first_with_its_payload(index: EdgeIndex) -> None:
    points = make_points(50)
    assert index.upsert(points).written == 50
    hits = index.search(points[17].vector, 5)
    assert hits[0].decision_id == "d17"
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[0].payload == {
        "decision_id": "d17",
        "version": 1,
        "content_hash": "h17-v1",
        "org_id": "org-c",
        "policy_id": "pol-2",
        "status": "approved",
        "created_at": 1017.0,
    }
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert index.count() == 50


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        (SearchFilter(org_id="org-b"), lambda p: p.payload["org_id"] == "org-b"),
        (SearchFilter(policy_id="pol-1"), lambda p: p.payload["policy_id"] == "pol-1"),
        (SearchFilter(status="denied"), lambda p: p.payload["status"] == "denied"),
        (SearchFilter(created_from=1010.0), lambda p: p.payload["created_at"] >= 1010.0),
        (SearchFilter(created_to=1010.0), lambda p: p.payload["created_at"] <= 1010.0),
        (
            SearchFilter(org_id="org-a", status="approved", created_from=1003.0, created_to=1020.0),
            lambda p: (
                p.payload["org_id"] == "org-a"
                and p.payload["status"] == "approved"
                and 1003.0 <= p.payload["created_at"] <= 1020.0
            ),
        ),
    ],
)
def test_filters_return_exactly_the_matching_decisions(index: EdgeIndex, filters: SearchFilter, keep) -> None:
    points = make_points(30)
    index.upsert(points)
    expected = {p.decision_id for p in points if keep(p)}
    assert expected  # the case filters something real
    hits = index.search(random_vector(random.Random(3)), 100, filters)
    assert set(_ids(hits)) == expected


def test_every_filter_field_has_its_payload_index(index: EdgeIndex) -> None:
    assert dict(index.payload_indexes()) == dict(FILTER_FIELDS)


def test_a_lower_version_never_replaces_a_higher_one(index: EdgeIndex) -> None:
    newer = make_points(3, version=5)
    older = make_points(3, version=4, seed=99)
    index.upsert(newer)
    outcome = index.upsert(older[:2] + make_points(1, start=10))
    assert (outcome.written, outcome.skipped_stale, outcome.stale_ids) == (1, 2, ("d0", "d1"))
    states = {s.decision_id: s for s in index.states()}
    assert states["d0"] == IndexedState("d0", 5, "h0-v5")
    assert index.search(newer[0].vector, 1)[0].decision_id == "d0"  # the vector is still v5's
    again = index.upsert(newer[:1])  # the same version rewrites (idempotent retry)
    assert (again.written, again.skipped_stale) == (1, 0)


def test_a_batch_keeps_the_highest_version_of_a_decision(index: EdgeIndex) -> None:
    v2, v3 = make_points(1, version=2)[0], make_points(1, version=3)[0]
    outcome = index.upsert([v3, v2])
    assert (outcome.written, outcome.skipped_stale, outcome.stale_ids) == (1, 1, ("d0",))
    assert list(index.states()) == [IndexedState("d0", 3, "h0-v3")]


def test_delete_keeps_a_point_with_a_higher_version(index: EdgeIndex) -> None:
    index.upsert(make_points(3, version=3))
    outcome = index.delete([("d0", 2), ("d1", 3), ("d2", 7), ("never-indexed", 1)])
    assert (outcome.written, outcome.skipped_stale, outcome.stale_ids) == (3, 1, ("d0",))
    assert [s.decision_id for s in index.states()] == ["d0"]
    # deleting at the stored version removes the point
    assert index.delete([("d0", 3)]).written == 1
    assert index.count() == 0


def test_states_pages_through_every_point(index: EdgeIndex) -> None:
    points = make_points(SCROLL_PAGE * 2 + 37)
    for start in range(0, len(points), 500):
        index.upsert(points[start : start + 500])
    states = list(index.states())
    assert len(states) == len(points)
    assert {(s.decision_id, s.version, s.content_hash) for s in states} == {
        (p.decision_id, 1, p.content_hash) for p in points
    }


def test_another_embedder_or_dimension_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    with EdgeIndex(path) as ix:
        ix.ensure_collection(SETTINGS)
        ix.upsert(make_points(3))
    for other in (
        dataclasses.replace(SETTINGS, embedder="all-MiniLM-L6-v2"),
        dataclasses.replace(SETTINGS, dimension=32),
    ):
        with (
            EdgeIndex(path) as ix,
            pytest.raises(IndexConfigMismatch, match="orchestration-pipeline index rebuild"),
        ):
            ix.ensure_collection(other)
    with EdgeIndex(path) as ix:  # refusing changed nothing
        ix.ensure_collection(SETTINGS)
        assert ix.count() == 3


def test_a_shard_without_its_settings_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    with EdgeIndex(path) as ix:
        ix.ensure_collection(SETTINGS)
    (path / "index.json").unlink()
    with EdgeIndex(path) as ix, pytest.raises(IndexConfigMismatch, match="embedder that built it is unknown"):
        ix.ensure_collection(SETTINGS)


def test_search_time_settings_are_adopted_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    with EdgeIndex(path) as ix:
        ix.ensure_collection(SETTINGS)
        ix.upsert(make_points(5))
        ix.ensure_collection(dataclasses.replace(SETTINGS, hnsw_ef=64, oversampling=3.0))
        assert ix.count() == 5
    stored = json.loads((path / "index.json").read_text())
    assert (stored["hnsw_ef"], stored["oversampling"], stored["embedder"]) == (64, 3.0, "test-16")


def test_reopening_after_close_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    points = make_points(40)
    with EdgeIndex(path) as ix:
        ix.ensure_collection(SETTINGS)
        ix.upsert(points)
        ix.delete([("d3", 1)])
    reopened = EdgeIndex(path)  # without ensure_collection: reads open the shard on disk
    try:
        assert reopened.count() == 39
        assert reopened.settings == SETTINGS
        assert reopened.search(points[9].vector, 1)[0].decision_id == "d9"
        assert dict(reopened.payload_indexes()) == dict(FILTER_FIELDS)
    finally:
        reopened.close()


def test_a_second_open_of_the_same_shard_is_unavailable(index: EdgeIndex) -> None:
    index.upsert(make_points(2))
    with pytest.raises(IndexUnavailable, match="open in another process"):
        EdgeIndex(index.path).count()


def test_reads_before_the_shard_exists_are_empty_and_writes_say_how(tmp_path: Path) -> None:
    ix = EdgeIndex(tmp_path / "nothing")
    assert (ix.count(), list(ix.states()), ix.search([1.0] * 16, 3), dict(ix.payload_indexes())) == (
        0,
        [],
        [],
        {},
    )
    ix.optimize()
    with pytest.raises(IndexUnavailable, match="ensure_collection"):
        ix.upsert(make_points(1))


def test_a_vector_of_the_wrong_width_is_refused(index: EdgeIndex) -> None:
    with pytest.raises(ValueError, match="has 3 dimensions"):
        index.upsert([IndexPoint("x", 1, "h", [1.0, 0.0, 0.0])])
    with pytest.raises(ValueError, match="limit"):
        index.search([1.0] * 16, 0)


@pytest.mark.parametrize("quantization", [True, False])
def test_hnsw_and_quantization_find_the_exact_neighbours(tmp_path: Path, quantization: bool) -> None:
    """With a tiny indexing threshold, optimize() builds the graph (and int8 vectors) over 2,000 points."""
    settings = dataclasses.replace(SETTINGS, quantization=quantization)
    points = make_points(2000, seed=11)
    with EdgeIndex(tmp_path / "qdrant", indexing_threshold_kb=1) as ix:
        ix.ensure_collection(settings)
        for start in range(0, len(points), 500):
            ix.upsert(points[start : start + 500])
        assert ix.info()["indexed_vectors"] == 0
        ix.optimize()
        assert ix.info()["indexed_vectors"] == 2000
        rng = random.Random(5)
        recall = []
        for _ in range(20):
            query = random_vector(rng)
            truth = brute_force(points, query, 10)
            assert _ids(ix.search(query, 10, exact=True)) == truth
            for per_query in (None, False, True):
                found = _ids(ix.search(query, 10, quantization=per_query))
                recall.append(len(set(found) & set(truth)) / 10)
        assert sum(recall) / len(recall) >= 0.95
        assert ix.search(points[123].vector, 1)[0].decision_id == "d123"


def test_exact_search_matches_brute_force_before_optimize(index: EdgeIndex) -> None:
    points = make_points(300, seed=21)
    index.upsert(points)
    rng = random.Random(8)
    for _ in range(10):
        query = random_vector(rng)
        assert _ids(index.search(query, 15, exact=True)) == brute_force(points, query, 15)
        assert _ids(index.search(query, 15, exact=True, quantization=True))[:1] == brute_force(
            points, query, 1
        )


def test_turning_quantization_on_later_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    points = make_points(500)
    with EdgeIndex(path, indexing_threshold_kb=1) as ix:
        ix.ensure_collection(dataclasses.replace(SETTINGS, quantization=False))
        ix.upsert(points)
        ix.ensure_collection(SETTINGS)
        ix.optimize()
        assert ix.search(points[42].vector, 1)[0].decision_id == "d42"
    assert read_sidecar(path) == SETTINGS
