"""Counts in messages: "1 file", "2 files"."""

from __future__ import annotations


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural unless the count is exactly one.

    The plural is ``noun + "s"`` unless ``plural_noun`` is given (``plural(n, "entry", "entries")``).
    """
    word = noun if count == 1 else (plural_noun or f"{noun}s")
    return f"{count} {word}"
