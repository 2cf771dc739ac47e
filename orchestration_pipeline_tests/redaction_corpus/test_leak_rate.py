"""Redaction measured against the generated corpus: how many secrets leak, how many benign texts
are altered, and whether redacting twice changes anything.

Targets: at most 2% of the secrets leak overall (and on each path), at most 10% in any one token
family, at most 5% of the benign items are altered. The leak criterion (any 8 characters of a
secret part still there) and the paths are described in ``measure.py``. A failure prints the
figures per family, per embedding and per path, and a few leaking outputs.
"""

import pytest

from orchestration_pipeline_tests.redaction_corpus.generate import build_corpus
from orchestration_pipeline_tests.redaction_corpus.measure import (
    MAX_BENIGN_ALTERED,
    MAX_LEAK_OVERALL,
    MAX_LEAK_PER_FAMILY,
    altered,
    benign_runs,
    examples,
    group,
    measure,
    rate,
    table,
)


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


@pytest.fixture(scope="module")
def measurements(corpus):
    return measure(corpus.samples)


@pytest.fixture(scope="module")
def benign(corpus):
    return benign_runs(corpus.benign)


def _report(measurements) -> str:
    return "\n\n".join(
        [
            f"overall: {rate(measurements):.1%} of {len(measurements)} leaked",
            table(measurements, lambda m: m.path, "path"),
            table(measurements, lambda m: m.family, "family"),
            table(measurements, lambda m: m.embedding, "embedding"),
            "examples:\n" + examples(measurements),
        ]
    )


def test_secrets_do_not_leak(measurements):
    families = group(measurements, lambda m: m.family)
    paths = group(measurements, lambda m: m.path)
    problems = []
    if rate(measurements) > MAX_LEAK_OVERALL:
        problems.append(f"overall leak rate {rate(measurements):.1%} > {MAX_LEAK_OVERALL:.0%}")
    problems += [
        f"path {name}: {rate(items):.1%} > {MAX_LEAK_OVERALL:.0%}"
        for name, items in sorted(paths.items())
        if rate(items) > MAX_LEAK_OVERALL
    ]
    over = sorted(name for name, items in families.items() if rate(items) > MAX_LEAK_PER_FAMILY)
    if over:
        problems.append(f"{len(over)} families leak more than {MAX_LEAK_PER_FAMILY:.0%}: {', '.join(over)}")
    assert not problems, "\n".join(problems) + "\n\n" + _report(measurements)


def test_benign_items_come_through_unchanged(benign):
    changed = altered(benign)
    share = len(changed) / len(benign)
    shown = "\n".join(f"  {run.path}: {run.given!r} -> {run.output!r}" for run in changed[:40])
    assert share <= MAX_BENIGN_ALTERED, (
        f"{len(changed)} of {len(benign)} benign measurements altered "
        f"({share:.1%} > {MAX_BENIGN_ALTERED:.0%}):\n{shown}"
    )


def test_redaction_is_idempotent(measurements, benign):
    """Redacting what was already redacted changes nothing, on every path, for every item."""
    labelled = [(f"{m.family}/{m.embedding}", m.run) for m in measurements] + [("benign", r) for r in benign]
    changed = []
    for label, run in labelled:
        again = run.again()
        if again != run.output:
            changed.append(f"  {label} ({run.path}): {run.output!r} -> {again!r}")
    assert not changed, f"{len(changed)} outputs change when redacted again:\n" + "\n".join(changed[:30])
