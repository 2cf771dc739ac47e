"""The measuring stick itself: the corpus is as large, as varied and as well-formed as it claims,
and the leak criterion tells a leak from a redaction."""

import base64
import json
import random
import re

import pytest

from orchestration_pipeline_tests.redaction_corpus import embeddings, tokens
from orchestration_pipeline_tests.redaction_corpus.families import FAMILIES, by_name
from orchestration_pipeline_tests.redaction_corpus.generate import build_corpus, combinations
from orchestration_pipeline_tests.redaction_corpus.measure import WINDOW, leaked_run, strings_of


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


def test_the_corpus_is_as_large_as_required(corpus):
    assert len(FAMILIES) == len({f.name for f in FAMILIES}), "two families share a name"
    assert len(corpus.families) >= 40
    assert len(corpus.embeddings) >= 15
    assert len([item for item in corpus.benign if isinstance(item, str)]) >= 150
    assert corpus.families == {f.name for f in FAMILIES}, "a family fits no embedding"
    assert corpus.embeddings == set(embeddings.embedding_names()), "an embedding takes no family"


def test_the_corpus_is_the_same_on_every_build(corpus):
    again = build_corpus()
    assert again == corpus
    assert build_corpus(seed=1) != corpus


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_generated_value_has_its_documented_shape(family):
    rng = random.Random(family.name)
    for _ in range(25):
        secret = family.make(rng)
        assert re.fullmatch(family.shape, secret.value), (
            f"{family.name}: {secret.value!r} is not {family.shape}"
        )
        assert secret.parts, f"{family.name} names no secret part"
        for part in secret.parts:
            assert part in secret.value and len(part) >= WINDOW, (family.name, part)


def test_documented_checksums_hold():
    rng = random.Random(7)
    for name in ("github_classic_pat", "npm_token"):
        value = by_name(name).make(rng).value
        body = value.split("_", 1)[1]
        assert tokens.crc32_base62(body[:30]) == body[30:], value
    value = by_name("grafana_service_account").make(rng).value
    assert tokens.crc32_hex(value[:-9]) == value[-8:], value
    age = by_name("age_secret_key").make(rng).value
    assert tokens.bech32_valid(age) and not tokens.bech32_valid(age[:-1] + ("Q" if age[-1] != "Q" else "P"))
    armored = by_name("pgp_private_key").make(rng).value.split("\n")
    packet = base64.b64decode("".join(armored[2:-2]))
    assert armored[-2] == "=" + base64.b64encode(tokens.crc24(packet).to_bytes(3, "big")).decode()
    header, claims, _ = by_name("jwt").make(rng).value.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")).get("typ") == "JWT"
    assert "sub" in json.loads(base64.urlsafe_b64decode(claims + "=="))
    wrapped = by_name("jwt_base64").make(rng).value
    assert base64.b64decode(wrapped).decode().count(".") == 2
    user = by_name("discord_bot_token").make(rng).value.split(".")[0]
    assert base64.urlsafe_b64decode(user + "==").decode().isdigit()


def test_every_secret_part_is_in_its_carrier(corpus):
    """Otherwise a sample could never be found leaking, and would flatter the engine."""
    for sample in corpus.samples:
        text = sample.carrier if isinstance(sample.carrier, str) else strings_of(sample.carrier)
        for part in sample.parts:
            assert part in text, (sample.family, sample.embedding, part)


def _documented_table() -> dict[str, set[str]]:
    doc = embeddings.__doc__
    header = next(line for line in doc.splitlines() if line.startswith("embedding "))
    columns = {kind: header.index(kind) for kind in ("token", "keyed", "compound", "block")}
    table: dict[str, set[str]] = {}
    rows = doc.split(header, 1)[1].split("\n\n", 1)[0].splitlines()
    for row in (r for r in rows if r and not r.startswith("=")):
        kinds = {kind for kind, col in columns.items() if len(row) > col and row[col] == "x"}
        cell = row[: min(columns.values())].strip()
        names = (
            [n for n in embeddings.embedding_names() if n.startswith("assign_")]
            if cell.startswith("assign_*")
            else cell.split(", ")
        )
        for name in names:
            table[name] = kinds
    return table


def test_the_documented_combinations_are_the_generated_ones():
    documented = _documented_table()
    actual = {e.name: set(e.kinds) for e in embeddings.EMBEDDINGS}
    assert documented == actual
    generated = combinations()
    for emb in embeddings.EMBEDDINGS:
        assert set(generated[emb.name]) == {f.name for f in FAMILIES if f.kind in emb.kinds}


@pytest.mark.parametrize(
    ("output", "leaks"),
    [
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789 used", True),  # untouched
        ("token [REDACTED] used", False),
        ("token ghp_[REDACTED] used", False),  # the public prefix may stay
        ("token ghp_abcdefg[REDACTED]", False),  # 7 characters of it are not enough to find it
        ("token ghp_abcdefgh[REDACTED]", True),  # 8 are
        ("token [REDACTED]23456789", True),  # a tail cut off and kept
    ],
)
def test_the_leak_criterion(output, leaks):
    parts = ("abcdefghijklmnopqrstuvwxyz0123456789",)
    assert (leaked_run(parts, output) is not None) == leaks


def test_a_short_part_leaks_only_whole():
    assert leaked_run(("abc12",), "x abc12 y") == "abc12"
    assert leaked_run(("abc12",), "x abc1 y") is None
