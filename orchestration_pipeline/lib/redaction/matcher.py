"""The compiled scans (RE2, linear time in the length of the text): the pre-check, the token rules.

All three read UTF-8 bytes as Latin-1 (one byte, one character), so any input, valid UTF-8 or not,
is scanned in one pass:

* :data:`STAGES` (an RE2 set) tells in one pass which kinds of secret a text may hold: token
  keywords, key hints, URLs, command lines, bearer tokens. A text with none skips redaction;
  otherwise only the stages it names run.
* :data:`MARKERS` is the same, plus the JSON escapes that can spell any of them (``\\u``,
  ``\\/``): the pre-check on raw lines (``markers.py``).
* :func:`redact_tokens` runs every ``[[token]]`` rule at once: one alternation, each rule with its
  boundaries, searched from left to right.

Why RE2 (``google-re2``) rather than Hyperscan, measured on this machine (2 cores, shared; 1 MiB
of ordinary event lines, best of several runs): on the keyword pre-check RE2 searched about
240 MB/s and Hyperscan about 220 MB/s; per short line RE2 cost about 1 µs, Hyperscan 0.4 µs.
Both are linear. RE2 also returns leftmost, non-overlapping matches with their extent and groups,
which the token rules need (a webhook's path, not its host); Hyperscan reports every end offset of
every match and would need a second pass to find extents, and one dependency does both here.
Captures over the ~90 alternatives cost about 20 µs a match (the scan alone 2.4 µs, 0.8 µs through
the C matcher), hence the two steps of :class:`_Scan`. With the pre-check in front, ordinary lines
go through ``redact_text`` at about 37 MB/s and ``redact_raw_line`` at about 26 MB/s, against
about 3.5 MB/s before (``benchmarks/redaction.py``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import re2

from orchestration_pipeline.lib.redaction.rules import RULES, TokenRule, latin1_options

REDACTED_BYTES = b"[REDACTED]"
# Non-ASCII letters that Python's case-insensitive patterns (and str.lower()) read as ASCII ones:
# the key rules see "pa\u017f\u017fword" as "password" and "TO\u212aEN" as "token".
CASE_FOLDED_LETTERS = ("\u0130", "\u0131", "\u017f", "\u212a")

STAGE_TOKENS, STAGE_KEYS, STAGE_URL, STAGE_COMMANDS, STAGE_BEARER = range(5)


def _options(*, case_sensitive: bool) -> re2.Options:
    return latin1_options(case_sensitive=case_sensitive)


def _literal(text: str) -> str:
    return re2.escape(text)


def _token_keywords() -> list[str]:
    """The pre-check of the token rules: their keywords, or the pattern of a rule without any."""
    parts = []
    for rule in RULES.tokens:
        if rule.keywords:
            parts.extend(_literal(k) for k in rule.keywords)
        else:
            parts.append(f"(?:{rule.pattern.replace('(?P<secret>', '(?:')})")
    return parts


# Command lines (the curl, mysql and sshpass rules): -u/-U then a blank, "=", a quote or a JSON
# escape, and --user, --proxy-user; -u ending a bundle of switches (-su, -sSLu); -uuser:pw glued
# after a blank, a quote or an escaped \t, \n, \r; and the tools by name.
COMMAND_MARKERS = (
    r"""-u(?:[ \t="'\\]|ser)""",
    r"""-[skfvqiglnjor46]{1,8}u[ \t="'\\]""",
    r"""(?:\A|[ \t\n\r"']|\\[tnr])-u[^ \t\n\r\f\v"'/=:\\]+:""",
    "mysql",
    "mariadb",
    "sshpass",
    "login",
    "pass:",
    "redis-cli",
    "password-stdin",
    "with-token",
    "securestring",
)
_NON_ASCII = "(?-i:" + "|".join("".join(f"\\x{b:02X}" for b in c.encode()) for c in CASE_FOLDED_LETTERS) + ")"
_STAGE_PATTERNS = {
    STAGE_TOKENS: _token_keywords(),
    STAGE_KEYS: [*(_literal(h) for h in RULES.keys.hints), _NON_ASCII],
    STAGE_URL: ["://"],
    STAGE_COMMANDS: list(COMMAND_MARKERS),
    STAGE_BEARER: ["bearer"],
}
# The escapes of a raw JSON line that can spell any marker: "\u0070assword", "https:\/\/".
ESCAPE_MARKERS = (r"\\u", r"\\/")


def _stage_set() -> re2.Set:
    stages = re2.Set.SearchSet(_options(case_sensitive=False))
    for index in sorted(_STAGE_PATTERNS):
        if stages.Add("|".join(_STAGE_PATTERNS[index]).encode("latin-1")) != index:
            raise RuntimeError("the stages of the pre-check were not numbered in order")
    stages.Compile()
    return stages


STAGES = _stage_set()
_MARKER_PATTERNS = [p for parts in _STAGE_PATTERNS.values() for p in parts if p != _NON_ASCII]
MARKERS = re2.compile(
    "|".join([*_MARKER_PATTERNS, *ESCAPE_MARKERS, _NON_ASCII]).encode("latin-1"),
    _options(case_sensitive=False),
)


def stages_of(data: bytes) -> list[int] | None:
    """Which stages ``data`` (a text's UTF-8 bytes) needs, or None: nothing to redact."""
    return STAGES.Match(data)


# --- the token rules ----------------------------------------------------------------------


def _alternative(rule: TokenRule, *, left: bool = True) -> str:
    """One rule in the alternation: its left boundary (or a JSON or URL escape just before it),
    the pattern as a group, its right boundary. Boundaries are consumed, so the scan resumes at
    the end of the token itself (its right neighbour may be the next token's left boundary)."""
    pattern = rule.pattern.replace("(?P<secret>", "(")
    if not rule.boundary:
        return f"({pattern})"
    # Before a token, "+", "/" and "=" are separators (a URL's "https://ghp_…", "key=…").
    before = "".join(c for c in rule.boundary if c not in "+/=")
    start = rf"(?:\A|[^{before}]|\\[nrtbf]|\\u[0-9A-Fa-f]{{4}}|%[0-9A-Fa-f]{{2}})" if left else ""
    # After a token, "_" and "-" are separators: what another rule may rewrite ("ghp_…-----BEGIN"
    # is a token before a private key) must not decide whether the token is one.
    right = rule.boundary.replace("_", "")
    right = right[:-1] if right.endswith("-") else right
    return f"{start}({pattern})(?:[^{right}]|\\z)" if right else f"{start}({pattern})"


_NO_MATCH = (-1, -1)


def spans_of(pattern: re2._Regexp, *, anchored: bool):
    """``spans(data, pos)``: the spans of every group of the first match of ``pattern`` at or after
    ``pos`` (or at ``pos`` when ``anchored``), or None. google-re2's C matcher returns them in one
    call; its Python wrapper builds a Match object around them for three times the cost, which a
    line holding a token every 20 bytes pays 50,000 times a megabyte. Where the package no longer
    exposes that matcher, the wrapper is used."""
    inner = getattr(pattern, "_regexp", None)
    anchors = getattr(re2, "_Anchor", None)
    if inner is not None and anchors is not None and hasattr(inner, "Match"):
        match, anchor = inner.Match, anchors.ANCHOR_START if anchored else anchors.UNANCHORED

        def spans(data: bytes, pos: int) -> list[tuple[int, int]] | None:
            found = match(anchor, data, pos, len(data))
            return None if found[0] == _NO_MATCH else found

        return spans
    call = pattern.match if anchored else pattern.search

    def wrapped(data: bytes, pos: int) -> list[tuple[int, int]] | None:
        found = call(data, pos)
        return None if found is None else [found.span(g) for g in range(pattern.groups + 1)]

    return wrapped


class _Scan:
    """All token rules in one alternation, with or without their left boundaries.

    The alternation finds where a token is without capturing (captures over ~90 rules cost tens
    of microseconds a match); an RE2 set over the same alternatives then tells which rule it was,
    and that rule's own small pattern gives the token's and the secret's extent."""

    def __init__(self, *, left: bool) -> None:
        options = _options(case_sensitive=True)
        alternatives = [_alternative(rule, left=left).encode("latin-1") for rule in RULES.tokens]
        self.rules = [
            (rule, spans_of(re2.compile(alt, options), anchored=True))
            for rule, alt in zip(RULES.tokens, alternatives, strict=True)
        ]
        options.never_capture = True
        self.pattern = re2.compile(b"|".join(alternatives), options)
        self.search = spans_of(self.pattern, anchored=False)
        self.match = spans_of(self.pattern, anchored=True)
        self.which = re2.Set.FullMatchSet(options)
        for alternative in alternatives:
            self.which.Add(alternative)
        self.which.Compile()

    def found(self, data: bytes, start: int, end: int) -> tuple[TokenRule | None, list[tuple[int, int]]]:
        """The rule of the alternative that matched ``data[start:end]``, and the spans of its groups."""
        for index in sorted(self.which.Match(data[start:end]) or ()):
            rule, spans_at = self.rules[index]
            if (spans := spans_at(data, start)) is not None and spans[0][1] == end:
                return rule, spans
        return None, []


_SCAN = _Scan(left=True)
# The same rules without their left boundary, matched right where a redaction ended: there the
# text will read "]" once redacted, so a token that starts straight after one is a token (a
# second pass would find it otherwise: "-----END PRIVATE KEY-----ghp_…").
_SCAN_AT = _Scan(left=False)
TOKEN_SCAN = _SCAN.pattern


def entropy(data: bytes) -> float:
    """Shannon entropy in bits per character."""
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in Counter(data).values()) if n else 0.0


def redact_tokens(data: bytes, count: Callable[[str], None]) -> bytes | None:
    """``data`` with every credential that a token rule finds replaced, or None when there is none.
    ``count(rule_id)`` is called once per redaction."""
    out: list[bytes] = []
    pos = last = 0
    after_redaction = False
    while True:
        scan, where = _SCAN_AT, (_SCAN_AT.match(data, pos) if after_redaction else None)
        if where is None:
            scan, where = _SCAN, _SCAN.search(data, pos)
            if where is None:
                break
        rule, spans = scan.found(data, *where[0])
        if rule is None:  # cannot happen: the set holds the very alternatives the scan matched
            pos, after_redaction = where[0][0] + 1, False
            continue
        start, end = spans[1]
        secret_start, secret_end = spans[2] if rule.has_secret_group else (start, end)
        if start < last or (
            rule.entropy is not None and entropy(data[secret_start:secret_end]) < rule.entropy
        ):
            pos, after_redaction = max(start + 1, pos), False  # not this one; another may start inside
            continue
        out.append(data[last:secret_start])
        out.append(REDACTED_BYTES)
        last = secret_end
        count(rule.id)
        pos, after_redaction = end, secret_end == end
    if not out:
        return None
    out.append(data[last:])
    return b"".join(out)
