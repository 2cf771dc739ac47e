"""Redacting secrets in free text: tokens known by their form, keyed values, headers, connection strings, command lines.

One RE2 pass (:func:`~orchestration_pipeline.lib.redaction.matcher.stages_of`) tells which kinds
of secret a text may hold; a text with none comes back as it is, and otherwise only the stages it
names run. Placeholders (``${VAR}``, ``<password>``, ``changeme``, ``[REDACTED]``, …) are kept
wherever a value would be redacted, which also keeps redaction idempotent.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from orchestration_pipeline.lib.redaction.commands import redact_command_lines
from orchestration_pipeline.lib.redaction.keys import (
    NAMING,
    REDACTED,
    WEAK,
    is_glued_only,
    is_placeholder,
    keeps_value,
    secret_key_kind,
)
from orchestration_pipeline.lib.redaction.matcher import (
    STAGE_BEARER,
    STAGE_COMMANDS,
    STAGE_KEYS,
    STAGE_TOKENS,
    STAGE_URL,
    redact_tokens,
    spans_of,
    stages_of,
)
from orchestration_pipeline.lib.redaction.patterns import (
    _AUTH_HEADER,
    _BARE_TAIL,
    _BEARER,
    _CALL_ARGUMENT,
    _COLON_TAIL,
    _FLAG_SECRET,
    _FLAG_VALUE,
    _KV_SECRET,
    _LINE_TAIL,
    _NEXT_ARGUMENT,
    _PLAIN_WORD,
    _QUOTE_TAILS,
    _REST_OF_LINE,
    _SETTER,
    _SPACED_PAIR,
    _STRING_PREFIX,
    _URL_PASSWORD,
    _VALUE_AFTER_COLON,
    _VALUE_AFTER_EQUALS,
    _VALUE_BOUND,
    _VALUELESS_FLAG,
    _XML_ELEMENT,
    _XML_PAIR,
    _YAML_PAIR,
    KV_CANDIDATES,
)
from orchestration_pipeline.lib.redaction.rules import RULES


class Tally:
    """Counts redactions, in total and (when given a Counter) by rule id."""

    __slots__ = ("counts", "total")

    def __init__(self, counts: Counter | None = None) -> None:
        self.counts = counts
        self.total = 0

    def __call__(self, rule_id: str, n: int = 1) -> None:
        if n:
            self.total += n
            if self.counts is not None:
                self.counts[rule_id] += n


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def redact_text(text: str, counts: Counter | None = None) -> tuple[str, int]:
    """Redact secrets inside free text; returns the new text and the number of redactions.
    ``counts``, when given, is increased by the redactions of each rule id."""
    tally = Tally(counts)
    return redact_into(text, tally), tally.total


def redact_into(text: str, count: Tally) -> str:
    """:func:`redact_text`, counting into ``count``."""
    if not text:
        return text
    data = utf8(text)
    stages = stages_of(data)
    if stages is None:
        return text
    if STAGE_TOKENS in stages and (redacted := redact_tokens(data, count)) is not None:
        text = redacted.decode("utf-8", "surrogatepass")
    if STAGE_COMMANDS in stages:
        text = redact_command_lines(text, count)
    if STAGE_BEARER in stages:
        text = _BEARER.sub(lambda m: _bearer(m, count), text)
    if STAGE_KEYS in stages:
        text = _AUTH_HEADER.sub(lambda m: _authorization(m, count), text)
    if STAGE_URL in stages and "@" in text:
        text = _URL_PASSWORD.sub(lambda m: _url_password(m, count), text)
    if STAGE_KEYS in stages:
        text = _redact_keyed(text, count)
    return text


def _bearer(match: re.Match[str], count: Tally) -> str:
    if is_placeholder(match[2]):
        return match[0]
    count("bearer")
    return f"{match[1]} {REDACTED}"


def _authorization(match: re.Match[str], count: Tally) -> str:
    credential = match[2]
    kept = _trimmed(credential)
    if is_placeholder(kept):
        return match[0]
    count("authorization")
    return match[1] + REDACTED + credential[len(kept) :]


def _url_password(match: re.Match[str], count: Tally) -> str:
    if is_placeholder(match[2]):
        return match[0]
    count("url-password")
    return match[1] + REDACTED + match[3]


_CLOSERS = {")": "(", "]": "[", "}": "{"}
_TRIMMED_LAST = frozenset(")]}`")
# The separators after which _skips_key has something to look at (None: a key, blanks, a quote).
_CHECKED_SEPARATORS = frozenset((":", None))
_QUOTE_STARTS = frozenset("\"'\\")
# The first characters of a string prefix (b"…", @"…") and of a plain word (true, None, …).
_PREFIX_STARTS = frozenset(c for p in RULES.grammar.string_prefixes for c in (p[0].lower(), p[0].upper()))
_PLAIN_STARTS = frozenset("tTfFnNyY")
# A bare value that is code reading the secret, not the secret: os.environ['DB_PASSWORD'],
# os.getenv("TOKEN"), ENV.fetch(…): a name, then "[" or "(" opening what the value does not close.
_EXPRESSION = re.compile(r"[A-Za-z_][\w.]{0,127}[\[(](?:\\?[\"']|\Z)")
# What may follow a token in the same value (a longer variant of its format): "[REDACTED]_x".
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_+/=.~-]")


def _trimmed(value: str) -> str:
    """A bare value without the closing brackets it did not open and an unpaired trailing
    backtick: those belong to the text around it (``f(password=x)``, ``{token: x}``)."""
    while value:
        last = value[-1]
        if last in _CLOSERS and value.count(last) > value.count(_CLOSERS[last]):
            value = value[:-1]
        elif last == "`" and value.count("`") % 2:
            value = value[:-1]
        else:
            break
    return value


def _split_quoted(value: str) -> tuple[str, str, bool] | None:
    """(quote, inner text, closed) of a quoted value (also JSON-escaped quotes); None if bare."""
    first = value[:1]
    if first == "\\" and value.startswith('\\"'):
        quote = '\\"'
    elif first == '"' or first == "'":
        quote = first
    else:
        return None
    closed = len(value) >= 2 * len(quote) and value.endswith(quote)
    return quote, value[len(quote) : -len(quote)] if closed else value[len(quote) :], closed


def _is_kept(value: str, kind: str | None) -> bool:
    """A value (quotes off) that stays: empty, a placeholder, or no credential under a weak key."""
    return not value or is_placeholder(value) or (kind in (WEAK, NAMING) and keeps_value("", value, kind))


def _redacted_value(value: str, kind: str | None, quoted: tuple[str, str, bool] | None = None) -> str | None:
    """The value with its content replaced (quotes kept), or None when there is nothing to redact
    (empty, a placeholder, already redacted, or no credential under a weak key)."""
    if not value:
        return None
    if quoted is None:
        quoted = _split_quoted(value)
    if quoted is not None:
        quote, inner, closed = quoted
        if _is_kept(inner.strip(), kind):
            return None
        return f"{quote}{REDACTED}{quote}" if closed else f"{quote}{REDACTED}"
    if value[0] in "|>" and "\n" in value:  # a YAML block, lines and all
        return REDACTED + ("\n" if value.endswith("\n") else "")
    return None if _is_kept(value, kind) else REDACTED


def _past_bound(text: str, secret: re.Match[str], tail: re.Pattern[str], replacement: str) -> tuple[str, int]:
    """A value being redacted that filled its pattern's bound: the replacement and the end of the
    whole value (the rest of a bare run, or of an opened quote up to its closing quote)."""
    value, end = secret[0], secret.end()
    if (quoted := _split_quoted(value)) is None:
        if value[0] in "|>" and "\n" in value:  # a YAML block: bounded by lines, not characters
            return replacement, end
        return replacement, tail.match(text, end).end()
    quote, _, closed = quoted
    if closed:
        return replacement, end
    end = _QUOTE_TAILS[quote].match(text, end).end()
    if end > secret.end() and text.endswith(quote, 0, end):
        return f"{quote}{REDACTED}{quote}", end
    return replacement, end


def _value_at(
    text: str, start: int, key: str, kind: str, value_pattern: re.Pattern[str], tail: re.Pattern[str]
) -> tuple[str, int] | int:
    """The value of ``key`` at ``start``: (replacement, end) to redact it, or where to go on from
    (past a value that stays: a flag, a placeholder, an empty or redacted one)."""
    first = text[start : start + 1]
    if first in _PREFIX_STARTS and (prefix := _STRING_PREFIX.match(text, start)) is not None:
        start = prefix.end()
    elif (first in _PLAIN_STARTS and _PLAIN_WORD.match(text, start)) or (
        first in "/~" and key.lower() == "pwd"
    ):
        return start  # a flag, or PWD holding the working directory (an environment dump)
    if (secret := value_pattern.match(text, start)) is None:
        return start
    value, end = secret[0], secret.end()
    if len(value) >= _VALUE_BOUND:
        replacement = _redacted_value(value, kind) or REDACTED
        return _past_bound(text, secret, tail, replacement)
    if value[0] in _QUOTE_STARTS or value[0] in "|>":  # quoted, or a YAML block
        replacement = _redacted_value(value, kind)
        return end if replacement is None else (replacement, end)
    if value[-1] in _TRIMMED_LAST:
        value = _trimmed(value)
        end = start + len(value)
        if not value:
            return start
    if ("[" in value or "(" in value) and _EXPRESSION.match(value):
        return end  # code that reads the secret: os.environ['X']
    if value[0] == "[" and value.startswith(REDACTED):  # what another rule redacted already
        if _TOKEN_TAIL.match(value, len(REDACTED)):
            return REDACTED, end  # a token rule's: the rest of the value goes too
        return start + len(REDACTED)  # a URL's password: the host after it stays
    return end if _is_kept(value, kind) else (REDACTED, end)


def _redact_keyed(text: str, count: Tally) -> str:
    if "-" in text:
        text = _keyed(_FLAG_SECRET, text, count, flag=True)
    if ":" in text or "=" in text or '"' in text or "'" in text:
        text = _keyed(_KV_SECRET, text, count, flag=False)
    if "setenv" in text or "config" in text:
        text = _spaced_pairs(text, count)
    if "<" in text:
        text = _XML_PAIR.sub(lambda m: _named_value(m, count, "name-value-pair"), text)
        text = _XML_ELEMENT.sub(lambda m: _named_value(m, count, "keyed-value", name="tag"), text)
    if "value:" in text:
        text = _YAML_PAIR.sub(lambda m: _named_value(m, count, "name-value-pair"), text)
    if "(" in text:
        text = _call_arguments(text, count)
        text = _SETTER.sub(lambda m: _named_value(m, count, "keyed-value"), text)
    return text


def _spaced_pairs(text: str, count: Tally) -> str:
    """setenv NAME VALUE and config set KEY VALUE, where the key names a secret."""
    out, pos = [], 0
    while (match := _SPACED_PAIR.search(text, pos)) is not None:
        start = match.end()
        if (kind := secret_key_kind(match["key"])) is None:
            out.append(text[pos:start])
            pos = start
            continue
        found = _value_at(text, start, match["key"], kind, _VALUE_AFTER_EQUALS, _BARE_TAIL)
        if found.__class__ is int:
            out.append(text[pos:found])
            pos = max(found, start)
            continue
        replacement, end = found
        count("setenv" if match["command"] == "setenv" else "config-set")
        out.append(text[pos:start])
        out.append(replacement)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _call_arguments(text: str, count: Tally) -> str:
    """set("db.password", "…"), also as later arguments: config.set("auth", "token", "…")."""
    out, pos = [], 0
    while (match := _CALL_ARGUMENT.search(text, pos)) is not None:
        if _NEXT_ARGUMENT.match(text, match.end()):  # the value names the next one
            out.append(text[pos : match.start("sep")])
            pos = match.start("sep")
            continue
        out.append(text[pos : match.start()] + _named_value(match, count, "keyed-value"))
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def _named_value(match: re.Match[str], count: Tally, rule_id: str, name: str = "name") -> str:
    """A value whose key stands apart from it (XML, YAML name/value, a call's arguments)."""
    if (kind := secret_key_kind(match[name])) is None:
        return match[0]
    value = match["value"]
    stripped = value.strip()
    if (replacement := _redacted_value(stripped, kind, _split_quoted(stripped))) is None:
        return match[0]
    count(rule_id)
    offset, start, end = match.start(), match.start("value"), match.end("value")
    if stripped is not value:  # keep the blanks around it
        start += len(value) - len(value.lstrip())
        end -= len(value) - len(value.rstrip())
    return match[0][: start - offset] + replacement + match[0][end - offset :]


def _skips_key(text: str, match: re.Match[str], key: str, low: str, flag: bool) -> bool:
    """A key-like word that takes no secret value here."""
    if flag:
        return bool(_VALUELESS_FLAG.match(key))
    sep = match["sep"]
    start = match.start("key")
    if low.endswith("authorization"):
        return True  # _AUTH_HEADER's, scheme and all
    if sep is None:  # password "x": only as a line's first word (config files), not in prose
        before = text[max(0, start - 64) : start].rstrip(" \t")  # a bounded look: linear
        return not (before.endswith("\n") or (not before and start <= 64))
    if sep == ":":
        if text[start - 1 : start] in (":", "$"):
            return True  # arn:…:secret:x, and a shell variable before a colon: -u $API_KEY:
        if match.end() == match.end("sep") and ("." in key or is_glued_only(key)):
            return True  # a Maven coordinate: io.jsonwebtoken:jjwt-jackson:0.11.2
    return False


_KV_CANDIDATE_SPANS = spans_of(KV_CANDIDATES, anchored=False)


def _key_finder(pattern: re.Pattern[str], text: str) -> Callable[[int], re.Match[str] | None]:
    """``find(pos)``: the next match of ``pattern`` at or after ``pos``. For _KV_SECRET on ASCII text,
    RE2's candidates (KV_CANDIDATES) say where to look: the Python pattern runs only there, each
    run bounded by its candidate, so the whole stays linear."""
    if pattern is not _KV_SECRET or not text.isascii():
        return lambda pos: pattern.search(text, pos)
    data, size = text.encode("ascii"), len(text)

    def find(pos: int) -> re.Match[str] | None:
        while (spans := _KV_CANDIDATE_SPANS(data, pos)) is not None:
            start, end = spans[0]
            if (match := pattern.search(text, start, min(size, end + 33))) is not None:  # + the blanks
                return match
            pos = max(end, start + 1)
        return None

    return find


def _keyed(pattern: re.Pattern[str], text: str, count: Tally, *, flag: bool) -> str:
    out, pos = [], 0
    find = _key_finder(pattern, text)
    while (match := find(pos)) is not None:
        key, start = match["key"], match.end()
        if (kind := secret_key_kind(key)) is None or (
            (flag or match["sep"] in _CHECKED_SEPARATORS or key[-1] in "nN")  # …authorization
            and _skips_key(text, match, key, key.lower(), flag)
        ):
            out.append(text[pos:start])
            pos = start
            continue
        if flag:
            value_pattern, tail = _FLAG_VALUE, _BARE_TAIL
        elif key[-1] in "eE" and key.lower() in ("cookie", "set-cookie", "set_cookie"):
            value_pattern, tail = _REST_OF_LINE, _LINE_TAIL  # every cookie of the header
        elif match["sep"] == ":":
            value_pattern, tail = _VALUE_AFTER_COLON, _COLON_TAIL
        else:
            value_pattern, tail = _VALUE_AFTER_EQUALS, _BARE_TAIL
        found = _value_at(text, start, key, kind, value_pattern, tail)
        if found.__class__ is int:  # a value that stays: step over it, then scan on
            out.append(text[pos:found])
            pos = max(found, start)
            continue
        replacement, end = found
        if text[start] in _PREFIX_STARTS and (prefix := _STRING_PREFIX.match(text, start)) is not None:
            start = prefix.end()
        count("keyed-value")
        out.append(text[pos:start])
        out.append(replacement)
        pos = end
    out.append(text[pos:])
    return "".join(out)
