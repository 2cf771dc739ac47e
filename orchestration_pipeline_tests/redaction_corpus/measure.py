"""Measuring redaction against the corpus, through the public API only.

**Leak criterion.** A sample leaks when any run of ``WINDOW`` (8) consecutive characters of one of
its secret parts is still in the redacted output (a part shorter than that leaks when it survives
whole). Eight characters of a random token are enough to find the rest in a log search and far too
many to occur by chance in the text around it; an engine that keeps a public prefix (``ghp_``, a
webhook's host) does not leak, one that cuts a value short and keeps its tail does.

**Paths.** Every sample is measured on each path that stores it: text carriers through
``redact_text``, through ``redact_value`` as an event's ``{"message": …}`` and through
``redact_raw_line`` as a cut-off event line (what quarantine stores); payload carriers through
``redact_value`` and ``redact_raw_line``. A JSON output is read as the strings it holds (keys and
values), a raw line as written.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from orchestration_pipeline.lib.redaction import redact_raw_line, redact_text, redact_value
from orchestration_pipeline_tests.redaction_corpus.embeddings import Carrier
from orchestration_pipeline_tests.redaction_corpus.generate import Sample

WINDOW = 8
PATHS = ("text", "value", "raw")

# The targets the tests hold redaction to.
MAX_LEAK_OVERALL = 0.02  # of all measurements, and of each path's
MAX_LEAK_PER_FAMILY = 0.10
MAX_BENIGN_ALTERED = 0.05


def strings_of(value: Any) -> str:
    """Every string in a JSON value (keys too), one per line."""
    out: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for key, sub in item.items():
                out.append(str(key))
                walk(sub)
        elif isinstance(item, list):
            for sub in item:
                walk(sub)

    walk(value)
    return "\n".join(out)


def leaked_run(parts: Iterable[str], output: str) -> str | None:
    """The first run of a secret part still in ``output`` (None: nothing leaked)."""
    for part in parts:
        size = min(WINDOW, len(part))
        for i in range(len(part) - size + 1):
            if part[i : i + size] in output:
                return part[i : i + size]
    return None


def raw_line(payload: dict) -> str:
    """An event line holding ``payload``, cut off before its last brace (as quarantine gets it)."""
    return json.dumps({"event_type": "decision", "session_id": "s-1", "payload": payload})[:-1]


def as_payload(carrier: Carrier) -> dict:
    return carrier if isinstance(carrier, dict) else {"message": carrier}


@dataclass(frozen=True)
class Run:
    """One path of one carrier: what went in, what came out, and the output as searchable text."""

    path: str
    given: Any
    output: Any
    searchable: str
    redact: Callable[[Any], Any]

    def again(self) -> Any:
        return self.redact(self.output)


def text_path(carrier: str) -> str:
    return redact_text(carrier)[0]


def value_path(payload: dict) -> dict:
    return redact_value(copy.deepcopy(payload))[0]  # redact_value may change its argument in place


def raw_path(line: str) -> str:
    return redact_raw_line(line)[0]


def runs(carrier: Carrier) -> Iterator[Run]:
    if isinstance(carrier, str):
        out = text_path(carrier)
        yield Run("text", carrier, out, out, text_path)
    payload = as_payload(carrier)
    out = value_path(payload)
    yield Run("value", payload, out, strings_of(out), value_path)
    line = raw_line(payload)
    out = raw_path(line)
    yield Run("raw", line, out, out, raw_path)


@dataclass(frozen=True)
class Measurement:
    family: str
    embedding: str
    run: Run
    leaked: str | None  # the surviving run of a secret part, if any

    @property
    def path(self) -> str:
        return self.run.path

    @property
    def output(self) -> str:
        return self.run.searchable


def measure(samples: Iterable[Sample]) -> list[Measurement]:
    return [
        Measurement(sample.family, sample.embedding, run, leaked_run(sample.parts, run.searchable))
        for sample in samples
        for run in runs(sample.carrier)
    ]


def rate(items: list[Measurement]) -> float:
    return sum(m.leaked is not None for m in items) / len(items) if items else 0.0


def group(items: Iterable[Measurement], key: Callable[[Measurement], str]) -> dict[str, list[Measurement]]:
    groups: dict[str, list[Measurement]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return dict(groups)


def table(items: list[Measurement], key: Callable[[Measurement], str], title: str, limit: int = 80) -> str:
    """Rows sorted worst first: leaked/total, rate, and where it leaks most."""
    rows = sorted(group(items, key).items(), key=lambda kv: (-rate(kv[1]), kv[0]))
    lines = [f"{title:<32} {'leaked':>11} {'rate':>7}  leaks most in"]
    for name, members in rows[:limit]:
        leaks = [m for m in members if m.leaked]
        where = group(leaks, lambda m: m.embedding if key(m) != m.embedding else m.family)
        worst = ", ".join(f"{w}:{len(ms)}" for w, ms in sorted(where.items(), key=lambda kv: -len(kv[1]))[:4])
        lines.append(f"{name:<32} {len(leaks):>5}/{len(members):<5} {rate(members):>6.1%}  {worst}")
    return "\n".join(lines)


def examples(items: list[Measurement], count: int = 12) -> str:
    """A few leaking outputs, one per family, to show what survives."""
    seen, out = set(), []
    for m in items:
        if m.leaked and m.family not in seen:
            seen.add(m.family)
            out.append(f"  {m.family} / {m.embedding} / {m.path}: kept {m.leaked!r} in {m.output[:140]!r}")
        if len(out) == count:
            break
    return "\n".join(out)


def benign_runs(benign: Iterable[Carrier]) -> list[Run]:
    return [run for carrier in benign for run in runs(carrier)]


def altered(items: Iterable[Run]) -> list[Run]:
    """The runs whose output is not what went in."""
    return [run for run in items if run.output != run.given]
