"""A cheap pre-check: the markers without which a raw line cannot hold a secret that redaction finds.

The markers are the token rules' keywords (and the pattern of a rule without any), the key hints,
``://``, ``bearer``, the command-line forms, the JSON escapes that can spell any of them (``\\u``,
``\\/``) and the non-ASCII letters that the key rules read as ASCII ones. ``SECRET_MARKERS`` and
``FORM_PATTERNS`` spell them out (the literal ones and the patterns, matched in any case); the
check itself is one RE2 search (``matcher.MARKERS``), at hundreds of megabytes a second.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence

from orchestration_pipeline.lib.redaction.matcher import (
    CASE_FOLDED_LETTERS,
    COMMAND_MARKERS,
    MARKERS,
)
from orchestration_pipeline.lib.redaction.rules import RULES

_CASE_FOLDED_LETTERS = CASE_FOLDED_LETTERS

# What may_contain_secret looks for in a line's lowercased bytes: these literals, and (any case)
# FORM_PATTERNS. The tests hold the two definitions and the RE2 search equal.
SECRET_MARKERS = tuple(
    dict.fromkeys(
        (
            *(h.encode() for h in RULES.keys.hints),
            b"bearer",
            b"://",
            b"\\u",
            b"\\/",
            *(k.encode() for rule in RULES.tokens for k in rule.keywords),
            *(letter.encode() for letter in CASE_FOLDED_LETTERS),
        )
    )
)
FORM_PATTERNS = tuple(
    re.compile(pattern.encode(), re.IGNORECASE)
    for pattern in (
        *COMMAND_MARKERS,
        *(rule.pattern.replace("(?P<secret>", "(?:") for rule in RULES.tokens if not rule.keywords),
    )
)


def may_contain_secret(raw: bytes) -> bool:
    """Fast pre-check on the raw bytes of a line."""
    return MARKERS.search(raw) is not None


def lines_with_markers(data: bytes, spans: Sequence[tuple[int, int]]) -> set[int]:
    """The indexes of the lines for which :func:`may_contain_secret` is true.

    ``spans`` are the lines' (start, end) in ``data``, in order and not overlapping. The same
    answer as calling may_contain_secret on each ``data[start:end]``, found with one search over
    the whole of ``data`` that skips to the next line after each find.
    """
    starts = [start for start, _ in spans]
    marked: set[int] = set()
    pos = 0
    while (found := MARKERS.search(data, pos)) is not None:
        start, end = found.span()
        # the line holding the match's last byte; a command marker may begin with the newline
        # before its line (what "the start of the line" is when the line is checked alone)
        i = bisect_right(starts, end - 1) - 1
        if i >= 0 and end <= spans[i][1] and (start >= spans[i][0] or data[start:end].lstrip()[:1] == b"-"):
            marked.add(i)
            if i + 1 == len(starts):
                break
            pos = max(spans[i][1], starts[i + 1] - 1)  # the rest of line i needs no second look
        else:
            pos = start + 1
    return marked
