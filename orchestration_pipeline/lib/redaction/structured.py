"""Redacting JSON values (by key, name/value pairs, argv lists) and raw JSON lines as they were written."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from orchestration_pipeline.lib.redaction.commands import _password_kept, redact_argv_passwords
from orchestration_pipeline.lib.redaction.keys import (
    REDACTED,
    is_placeholder,
    is_secret_key,
    keeps_value,
    secret_key_kind,
)
from orchestration_pipeline.lib.redaction.markers import may_contain_secret
from orchestration_pipeline.lib.redaction.patterns import (
    _BARE_VALUE,
    _HEADER_NAME,
    _JSON_KEY,
    _JSON_STRING,
    _PAIR_NAMES,
    _PREFIX_ONLY,
    _RAW_BARE_TAIL,
    _STRUCTURE,
    _VALUE_BOUND,
    _VALUELESS_FLAG,
)
from orchestration_pipeline.lib.redaction.text import Tally, redact_into, utf8


def _is_secret_flag(text: str) -> bool:
    """``--password``-style argv element (also ``-vaultToken``) whose next element is the secret."""
    if not text.startswith("-") or "=" in text:
        return False
    key = text[2:] if text.startswith("--") else text[1:]
    return len(key) > 1 and not _VALUELESS_FLAG.match(key) and is_secret_key(key)


def _is_name_member(key: object) -> bool:
    """The member of a pair that names it: name, key, header, ParameterKey, OptionName, …"""
    return isinstance(key, str) and (key.lower() in _PAIR_NAMES or key.lower().endswith(("key", "name")))


def _is_value_member(key: object) -> bool:
    """The member of a pair that holds its value: value, ParameterValue, OptionValue, …"""
    return isinstance(key, str) and key.lower().endswith("value")


def _raw_key_kind(key: str) -> str | None:
    """A key as written in a raw line: JSON escapes decoded where they can be (``pass\\u0077ord``)."""
    if (kind := secret_key_kind(key)) is not None or "\\" not in key:
        return kind
    try:
        return secret_key_kind(json.loads(f'"{key}"'))
    except ValueError:
        return None


def _raw_value_kept(key: str, kind: str, value: str) -> bool:
    """A raw value that stays under a secret key: redacted already, or a placeholder, a number…"""
    inner = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value.lstrip('"')
    if inner.startswith(REDACTED[:-1]) or value in ("true", "false", "null"):
        return True  # redacted already, or a JSON literal (hasPassword: true)
    return keeps_value(key, inner, kind) or (
        kind is not None and not value.startswith('"') and keeps_value(key, _plain(value), kind)
    )


def _plain(value: str) -> object:
    """A bare JSON value as Python: numbers stay numbers, for the weak keys' check."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _container_end(text: str, start: int) -> int:
    """End of the object or array opening at ``start`` (skipping strings), or the end of a cut-off line."""
    depth, i = 0, start
    while (m := _STRUCTURE.search(text, i)) is not None:  # jump from one bracket or quote to the next
        ch, i = m.group(0), m.start()
        if ch == '"':
            i = _JSON_STRING.match(text, i).end()
            continue
        depth += 1 if ch in "{[" else -1
        i += 1
        if depth == 0:
            return i
    return len(text)


def redact_raw_line(text: str, counts: Counter | None = None) -> tuple[str, int]:
    """Redact a raw line that may not be valid JSON (for quarantine).

    Every quoted key is examined, at any depth: a secret key's value is replaced whole (a string,
    a bare token, or an object or array up to its end, or to the end of a cut-off line).
    """
    if not may_contain_secret(utf8(text)):  # the usual line: one RE2 pass and done
        return text, 0
    tally = Tally(counts)
    out, pos = [], 0
    while (m := _JSON_KEY.search(text, pos)) is not None:
        start = m.end()
        if start < len(text) and text[start] in "{[" and not text.startswith(REDACTED, start):
            if _raw_key_kind(m.group(1)) is not None:
                end = _container_end(text, start)
                out.append(text[pos:start] + f'"{REDACTED}"')
                tally("secret-key")
                pos = end
            else:
                out.append(text[pos:start])
                pos = start  # look inside: nested keys are keys too
            continue
        value = _JSON_STRING.match(text, start) or _BARE_VALUE.match(text, start)
        end = value.end() if value else start
        if value and end < len(text) and text[end] == '"' and _PREFIX_ONLY.fullmatch(value.group(0)):
            end = _JSON_STRING.match(text, end).end()  # b"…": the prefix and its string
        if (
            value
            and (kind := _raw_key_kind(m.group(1))) is not None
            and not _raw_value_kept(m.group(1), kind, value.group(0))
        ):
            out.append(text[pos:start] + f'"{REDACTED}"')
            tally("secret-key")
            if end - start >= _VALUE_BOUND and value.re is _BARE_VALUE:
                end = _RAW_BARE_TAIL.match(text, end).end()  # a long bare token, whole
        else:
            out.append(text[pos:end])
        pos = end
    out.append(text[pos:])
    text = redact_into("".join(out), tally)
    text = _redact_raw_pairs(text, tally)
    return text, tally.total


# What redact_value does for {"name": "DB_PASSWORD", "value": …} and ["--password", …], on raw text.
_RAW_PAIR = re.compile(
    r'"(?i:\w{0,32}(?:name|key)|header)"\s{0,8}:\s{0,8}"(?P<name>(?:[^"\\]|\\.){1,128})"\s{0,8},\s{0,8}'
    r'"(?i:\w{0,32}value)"\s{0,8}:\s{0,8}(?P<value>"(?:[^"\\]|\\.)*"?)'
)
_RAW_FLAG = re.compile(r'"(?P<name>--?[A-Za-z][\w-]{0,63})"\s{0,8},\s{0,8}(?P<value>"(?:[^"\\]|\\.)*"?)')
_RAW_USER_FLAG = re.compile(
    r'"(?:-u|-U|--user|--proxy-user)"\s{0,8},\s{0,8}"(?P<user>[^"\\:\s]{0,256}):(?P<pw>(?:[^"\\]|\\.)++)'
)


def _redact_raw_pairs(text: str, count: Tally) -> str:
    if '"' not in text:
        return text

    def pair(match: re.Match[str], *, flag: bool) -> str:
        name, value = match["name"], match["value"].strip('"')
        secret = _is_secret_flag(name) and not (value.startswith("-") and not value.startswith("-----BEGIN"))
        if not (secret if flag else is_secret_key(name)) or not value or is_placeholder(value):
            return match[0]
        if value.startswith(REDACTED) or (not flag and keeps_value(name, value)):
            return match[0]
        count("secret-flag" if flag else "name-value-pair")
        return match[0][: match.start("value") - match.start()] + f'"{REDACTED}"'

    text = _RAW_PAIR.sub(lambda m: pair(m, flag=False), text)
    text = _RAW_FLAG.sub(lambda m: pair(m, flag=True), text)

    def user_password(match: re.Match[str]) -> str:
        if _password_kept(match["user"], match["pw"]):
            return match[0]
        count("curl-user")
        return match[0][: match.start("pw") - match.start()] + REDACTED

    if "-u" in text or "-U" in text:
        text = _RAW_USER_FLAG.sub(user_password, text)
    return text


def _redact_pairs_and_keys(value: dict, count: Tally) -> None:
    # {"name": "Authorization", "value": …}, {"ParameterKey": "DbPassword", "ParameterValue": …}
    name = next(
        (v for k, v in value.items() if _is_name_member(k) and isinstance(v, str) and is_secret_key(v)), None
    )
    if name is not None:
        for k, v in value.items():
            if _is_value_member(k) and isinstance(v, str) and v and not keeps_value(name, v):
                value[k] = REDACTED
                count("name-value-pair")
    for key, item in value.items():
        kind = secret_key_kind(key) if isinstance(key, str) else None
        if (
            kind is not None
            and item is not None
            and not isinstance(item, bool)  # hasPassword: true is not a secret
            and not keeps_value(key, item, kind)
        ):
            if isinstance(item, (dict, list)) and not item:
                continue
            value[key] = REDACTED
            count("secret-key")
        elif isinstance(item, str):  # dispatched here, not through _redact: one frame per level
            value[key] = redact_into(item, count)
        elif isinstance(item, dict):
            _redact_pairs_and_keys(item, count)
        elif isinstance(item, list):
            _redact_list(item, count)


def _redact_list(value: list, count: Tally) -> None:
    if (  # a header tuple: ["Authorization", "Basic …"], ["X-Api-Key", "…"]
        len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], str)
        and not is_placeholder(value[1])
        and _HEADER_NAME.match(value[0])
        and is_secret_key(value[0])
    ):
        value[1] = REDACTED
        count("header-tuple")
    redact_argv_passwords(value, count)
    previous = None  # the element before, as it was (not as redacted)
    for i, item in enumerate(value):
        follows_flag = isinstance(previous, str) and _is_secret_flag(previous)
        previous = item
        if item is REDACTED:  # the header tuple's value, just redacted
            continue
        if (
            follows_flag
            and isinstance(item, str)
            and not is_placeholder(item)
            and not item.startswith(REDACTED)
            and (not item.startswith("-") or item.startswith("-----BEGIN"))
        ):
            value[i] = REDACTED  # ["mysql", "--password", "…"]
            count("secret-flag")
        elif isinstance(item, str):  # dispatched here, not through _redact: one frame per level
            value[i] = redact_into(item, count)
        elif isinstance(item, dict):
            _redact_pairs_and_keys(item, count)
        elif isinstance(item, list):
            _redact_list(item, count)


def _redact(value: Any, count: Tally) -> Any:
    if isinstance(value, dict):
        _redact_pairs_and_keys(value, count)
        return value
    if isinstance(value, list):
        _redact_list(value, count)
        return value
    if isinstance(value, str):
        return redact_into(value, count)
    return value


def redact_value(value: Any, counts: Counter | None = None) -> tuple[Any, int]:
    """Redact a decoded JSON value in place where possible; returns (value, redactions).
    ``counts``, when given, is increased by the redactions of each rule id."""
    tally = Tally(counts)
    value = _redact(value, tally)
    return value, tally.total


def redact_json_text(text: str, counts: Counter | None = None) -> str:
    """JSON text as it may be stored: re-encoded with its secrets redacted, or ``text`` itself
    (the same object) when it has none."""
    if not may_contain_secret(utf8(text)):
        return text
    redacted, count = redact_value(json.loads(text), counts)
    return json.dumps(redacted, allow_nan=False) if count else text


def redacted_copy(value: Any, counts: Counter | None = None) -> Any:
    """``value`` as it may be stored: a copy with its secrets redacted, or ``value`` itself when it
    has none (it is never changed). A value that is not JSON is returned as it is, for the writer
    to refuse."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return value
    stored = redact_json_text(text, counts)
    return value if stored is text else json.loads(stored)
