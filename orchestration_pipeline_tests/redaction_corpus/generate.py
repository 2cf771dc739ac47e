"""The secret corpus: every token family in every embedding it fits, plus the benign items.

Generated, not copied: each secret is built from its vendor's documented format (``families``),
each carrier from an embedding template (``embeddings``), all from one seeded random generator,
so every run measures the same corpus. ``python -m
orchestration_pipeline_tests.redaction_corpus.generate`` prints a summary and a few samples.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from orchestration_pipeline_tests.redaction_corpus.benign import benign_payloads, benign_texts
from orchestration_pipeline_tests.redaction_corpus.embeddings import EMBEDDINGS, Carrier, Names, fits
from orchestration_pipeline_tests.redaction_corpus.families import FAMILIES

SEED = 20240517
INSTANCES = 2  # samples per (family, embedding): each draws its own secret and variant


@dataclass(frozen=True)
class Sample:
    family: str
    embedding: str
    carrier: Carrier  # text, or a JSON payload
    parts: tuple[str, ...]  # what must not survive redaction


@dataclass(frozen=True)
class Corpus:
    samples: tuple[Sample, ...]
    benign: tuple[Carrier, ...]

    @property
    def families(self) -> set[str]:
        return {s.family for s in self.samples}

    @property
    def embeddings(self) -> set[str]:
        return {s.embedding for s in self.samples}


def build_corpus(seed: int = SEED, instances: int = INSTANCES) -> Corpus:
    rng = random.Random(seed)
    samples = []
    for family in FAMILIES:
        names = Names.of(family.var, family.kind)
        for emb in EMBEDDINGS:
            if not fits(family, emb):
                continue
            for _ in range(instances):
                carrier, parts = emb.embed(family.make(rng), names, rng)
                samples.append(Sample(family.name, emb.name, carrier, parts))
    benign = [*benign_texts(rng), *benign_payloads(rng)]
    return Corpus(tuple(samples), tuple(benign))


def combinations() -> dict[str, list[str]]:
    """For each embedding, the families it is generated for."""
    return {e.name: [f.name for f in FAMILIES if fits(f, e)] for e in EMBEDDINGS}


def main() -> None:
    corpus = build_corpus()
    print(
        f"{len(corpus.samples)} samples: {len(corpus.families)} families x {len(corpus.embeddings)} embeddings; "
        f"{len(corpus.benign)} benign items"
    )
    rng = random.Random(0)
    for sample in rng.sample(corpus.samples, 8):
        shown = sample.carrier if isinstance(sample.carrier, str) else json.dumps(sample.carrier)
        print(f"- {sample.family} / {sample.embedding}: {shown[:160]!r}")


if __name__ == "__main__":
    main()
