"""What a token family is: a generator of :class:`Secret` values in one documented format.

``simple`` declares the common "prefix + random body" form in one line; ``family`` turns a
generator function into a family. The families themselves live in ``formats_tokens`` and
``formats_other``; ``families`` lists them all.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestration_pipeline_tests.redaction_corpus import tokens as t

TOKEN, KEYED, COMPOUND, BLOCK = "token", "keyed", "compound", "block"


@dataclass(frozen=True)
class Secret:
    value: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    name: str
    kind: str
    var: str  # the variable name such a secret usually has
    shape: str  # regular expression of the documented format
    make: Callable[[random.Random], Secret]
    doc: str


def _alternatives(prefixes: Sequence[str]) -> str:
    return "(?:" + "|".join(re.escape(p) for p in prefixes) + ")"


def simple(
    name: str,
    var: str,
    prefixes: Sequence[str],
    alphabet: str,
    length: int | tuple[int, int],
    doc: str,
    *,
    suffix: str = "",
    kind: str = TOKEN,
) -> Family:
    """A prefix (one of ``prefixes``) and a random body: the most common documented form."""
    lo, hi = (length, length) if isinstance(length, int) else length

    def make(rng: random.Random) -> Secret:
        body = t.rand(rng, alphabet, rng.randint(lo, hi))
        return Secret(rng.choice(prefixes) + body + suffix, (body,))

    shape = f"{_alternatives(prefixes)}[{re.escape(alphabet)}]{{{lo},{hi}}}{re.escape(suffix)}"
    return Family(name, kind, var, shape, make, doc)


def family(name: str, kind: str, var: str, shape: str, doc: str):
    """Decorator: a family whose generator is the decorated function."""

    def register(make: Callable[[random.Random], Secret]) -> Family:
        return Family(name, kind, var, shape, make, doc)

    return register
