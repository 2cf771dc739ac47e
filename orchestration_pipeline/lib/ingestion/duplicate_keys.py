"""Repeated keys in a JSON object: ``json.loads`` and msgspec keep the last one, silently.

``{"event_type": "decision", …, "event_type": "task_start"}`` would be stored as a ``task_start``,
and a repeated ``event_id`` would keep the second. A line with a repeated key is quarantined as
``duplicate_key``, naming it by its JSON pointer.

Finding one costs almost nothing on an ordinary line: :func:`key_tokens` counts the places in the
raw line where a key can end (a closing quote, optional blanks, a colon) with one C-level regex
scan, and :func:`decoded_keys` counts the keys of the decoded value. Every key of the line is one
such place, so when the two counts agree no key was repeated. A string value holding ``":`` (or
``\\":``) makes the first count larger; only then is the line decoded again, by
:func:`repeated_key_pointer`, to know for sure and to name the key.
"""

from __future__ import annotations

import json
import re
from typing import Any

_KEY_END = re.compile(rb'"[ \t\n\r]*:')


def key_tokens(raw: bytes) -> int:
    """An upper bound of the number of keys written in the line (exact when no string holds ``":``)."""
    if b"\t" in raw or b"\r" in raw:  # rare: blanks the counts below would miss
        return len(_KEY_END.findall(raw))
    # a key ends in '":' or, with spaces before its colon, in ' :' (which a string may hold too)
    return raw.count(b'":') + raw.count(b" :")


def decoded_keys(value: Any) -> int:
    """The number of keys in a decoded JSON value, nested objects included."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return count


def may_repeat_a_key(raw: bytes, decoded: Any, extra_keys: int = 0, *, flat: bool = False) -> bool:
    """False when the line provably repeats no key; ``extra_keys`` counts keys decoded elsewhere.

    ``flat=True`` says ``decoded`` is known to hold no nested object, so its keys are just counted.
    """
    keys = len(decoded) if flat and type(decoded) is dict else decoded_keys(decoded)
    return key_tokens(raw) != keys + extra_keys


class _Repeated(dict):
    """An object in which a key was repeated (marks where, for the pointer)."""

    repeated: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    marked = _Repeated(obj)
    marked.repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
    return marked


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def repeated_key_pointer(text: str) -> str | None:
    """The JSON pointer of the first repeated key of the (valid JSON) ``text``, or None."""
    stack: list[tuple[Any, str]] = [(json.loads(text, object_pairs_hook=_pairs), "")]
    while stack:
        item, pointer = stack.pop(0)
        if isinstance(item, _Repeated):
            return f"{pointer}/{_escape(item.repeated)}"
        if isinstance(item, dict):
            stack.extend((v, f"{pointer}/{_escape(k)}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{pointer}/{i}") for i, v in enumerate(item))
    return None
