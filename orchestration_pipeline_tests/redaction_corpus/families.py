"""Token families: synthetic secrets in each vendor's documented format.

A family makes a :class:`Secret`: the ``value`` as it would be pasted somewhere, and its ``parts``,
the segments that are actually secret (the random body; not a public prefix such as ``ghp_``, a
webhook's host, a JWT's header or a PEM block's fixed DER header). The leak criterion looks for the
parts only, so an engine that keeps a harmless prefix is not counted as leaking.

Each family has a ``kind`` that decides where it can be embedded (see ``embeddings.py``):

* ``token``: recognisable by its form alone (a prefix, a fixed length and alphabet, a checksum);
  fits every embedding, including free text and a bare argv element.
* ``keyed``: random-looking but without a form of its own (an AWS secret key, a password, a
  Datadog key); only recognisable by the name it is assigned to, so it is embedded only where a
  name, flag or header says what it is.
* ``compound``: a URL or connection string with the secret inside (webhooks, DSNs); fits where a
  value fits, but not inside another URL's credentials or an Authorization header.
* ``block``: a multi-line armored private key (PEM, OpenPGP); embedded as a multi-line value.

``shape`` is a regular expression of the documented format; the corpus tests check every
generated value against it, and the checksums where the format has one.
"""

from __future__ import annotations

from orchestration_pipeline_tests.redaction_corpus import formats_other, formats_tokens
from orchestration_pipeline_tests.redaction_corpus.model import BLOCK, COMPOUND, KEYED, TOKEN, Family, Secret

__all__ = ["BLOCK", "COMPOUND", "FAMILIES", "KEYED", "TOKEN", "Family", "Secret", "by_name"]


def _declared(module) -> list[Family]:
    return [value for value in vars(module).values() if isinstance(value, Family)]


FAMILIES: tuple[Family, ...] = tuple(
    sorted(
        [*_declared(formats_tokens), *_declared(formats_other), *formats_other.SIMPLE],
        key=lambda f: f.name,
    )
)


def by_name(name: str) -> Family:
    for candidate in FAMILIES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no token family named {name!r}; the families are: {', '.join(f.name for f in FAMILIES)}")
