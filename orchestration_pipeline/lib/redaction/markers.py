"""A cheap pre-check: the byte markers without which a line cannot hold a secret that redaction finds."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence

# The only characters outside ASCII that the full path treats as ASCII letters: a key's
# str.lower() turns the Kelvin sign into "k" ("TO\u212aEN" is a token), and case-insensitive
# patterns match "\u017f" (long s) as "s" and dotted and dotless I as "i" ("pa\u017f\u017fword=").
# Their UTF-8 bytes are markers too, so such a spelling cannot slip past the pre-check; a test
# derives this list from str.lower() and re again.
_CASE_FOLDED_LETTERS = ("\u0130", "\u0131", "\u017f", "\u212a")

# Markers of the secrets known by their form or their command line: every text that _KNOWN_TOKEN,
# _USER_FLAG (also in an argv list, and after a JSON-escaped tab), _MYSQL_COMMAND or _SSHPASS
# matches contains one of them.
# Each starts with a literal, which `re` finds with a fast C search: one scan per pattern costs
# about what one `find` does, where a single alternation of them all would cost ten times more.
FORM_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        rb"gh[pousr]_",
        rb"github_pat_",
        rb"glpat-",
        rb"akia",
        rb"asia",
        rb"xox[abposr]-",
        rb"xoxe[-.]",
        rb"xapp-",
        rb"k_(?:live|test)_",
        rb"aiza",
        rb"npm_",
        rb"sk-(?:proj|ant|svcacct|admin)-",
        rb"sk-[a-z0-9]{48}",
        rb"eyj",
        rb"-u(?:[ \t=\"'\\]|ser)",  # -u/-U then a blank, "=", a quote or a JSON escape; --user, --proxy-user
        rb"-[skfvqiglnjor46]{1,8}u[ \t=\"'\\]",  # the same after a bundle of switches (-su, -ksu)
        # -uuser:pw after a blank or quote (raw: also an escaped \t, \n, \r); a decoded user of 256
        # characters is at most 1024 bytes raw (UTF-8). No run can hold the next start: linear.
        rb"-u(?:(?<![^ \t\n\r\"']-u)|(?<=\\[tnr]-u))[^\s\"'/=:\\]{1,1024}:",
        rb"mysql",
        rb"mariadb",
        rb"sshpass",
    )
)

# What may_contain_secret looks for, in its (lowercased) bytes, besides FORM_PATTERNS; the tests
# hold the two equal.
SECRET_MARKERS = (
    b"\\u",
    b"\\/",
    b"pass",
    b"pwd",
    b"secret",
    b"token",
    b"key",
    b"auth",
    b"bearer",
    b"credential",
    b"cookie",
    b"jwt",
    b"://",
    *(letter.encode() for letter in _CASE_FOLDED_LETTERS),
)
_NON_ASCII_MARKERS = tuple(m for m in SECRET_MARKERS if not m.isascii())
_ASCII_MARKERS = tuple(m for m in SECRET_MARKERS if m.isascii())


def may_contain_secret(raw: bytes) -> bool:
    """Fast pre-check on the raw bytes of a line."""
    # Chained `in` tests use C substring search: several times faster than a regex alternation
    # (no common prefix to optimise) or any() over a generator, on every line ingested.
    low = raw.lower()
    return (
        b"\\u" in low  # a JSON escape can spell any key or URL; always walk such lines
        or b"\\/" in low
        or b"pass" in low
        or b"pwd" in low
        or b"secret" in low
        or b"token" in low
        or b"key" in low
        or b"auth" in low
        or b"bearer" in low
        or b"credential" in low
        or b"cookie" in low
        or b"jwt" in low
        or b"://" in low
        or any(pattern.search(low) for pattern in FORM_PATTERNS)
        # Non-ASCII letters that the full path reads as ASCII ones (see _CASE_FOLDED_LETTERS)
        or (not raw.isascii() and any(marker in raw for marker in _NON_ASCII_MARKERS))
    )


def lines_with_markers(data: bytes, spans: Sequence[tuple[int, int]]) -> set[int]:
    """The indexes of the lines for which :func:`may_contain_secret` is true.

    ``spans`` are the lines' (start, end) in ``data``, in order and not overlapping. The same
    answer as calling may_contain_secret on each ``data[start:end]``, found with one C search
    per marker over the whole of ``data`` instead of one per marker per line: about half the cost.
    """
    low = data.lower()
    starts = [start for start, _ in spans]
    marked: set[int] = set()
    # One C pass tells an all-ASCII block (nearly every block) it cannot hold the other markers.
    for marker in _ASCII_MARKERS if data.isascii() else SECRET_MARKERS:
        at = low.find(marker)
        while at != -1:
            i = bisect_right(starts, at) - 1
            if i >= 0 and at + len(marker) <= spans[i][1]:
                marked.add(i)
            if i + 1 == len(starts):
                break
            at = low.find(marker, starts[i + 1])  # the rest of line i needs no second look
    for pattern in FORM_PATTERNS:
        found = pattern.search(low)
        while found is not None:
            i = bisect_right(starts, found.start()) - 1
            if i >= 0 and found.end() <= spans[i][1]:
                marked.add(i)
            if i + 1 == len(starts):
                break
            found = pattern.search(low, starts[i + 1])
    return marked
