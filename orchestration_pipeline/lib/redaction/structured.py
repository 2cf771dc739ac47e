"""Redacting JSON values (by key, name/value pairs, argv lists) and raw JSON lines as they were written."""

from __future__ import annotations

import json
import re
from typing import Any

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
    REDACTED,
)
from orchestration_pipeline.lib.redaction.text import (
    _is_secret_flag,
    _keeps_value,
    _password_kept,
    _redact_argv_passwords,
    is_secret_key,
    redact_text,
)


def _raw_key_is_secret(key: str) -> bool:
    """A key as written in a raw line: JSON escapes decoded where they can be (``pass\\u0077ord``)."""
    if is_secret_key(key):
        return True
    if "\\" not in key:
        return False
    try:
        return is_secret_key(json.loads(f'"{key}"'))
    except ValueError:
        return False


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


def redact_raw_line(text: str) -> tuple[str, int]:
    """Redact a raw line that may not be valid JSON (for quarantine).

    Every quoted key is examined, at any depth: a secret key's value is replaced whole (a string,
    a bare token, or an object or array up to its end, or to the end of a cut-off line).
    """
    pairs, out, pos = 0, [], 0
    while (m := _JSON_KEY.search(text, pos)) is not None:
        start = m.end()
        if start < len(text) and text[start] in "{[" and not text.startswith(REDACTED, start):
            if _raw_key_is_secret(m.group(1)):
                end = _container_end(text, start)
                out.append(text[pos:start] + f'"{REDACTED}"')
                pairs += 1
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
            and _raw_key_is_secret(m.group(1))
            and not value.group(0).lstrip('"').startswith(REDACTED[:-1])
        ):
            out.append(text[pos:start] + f'"{REDACTED}"')
            pairs += 1
            if end - start >= _VALUE_BOUND and value.re is _BARE_VALUE:
                end = _RAW_BARE_TAIL.match(text, end).end()  # a long bare token, whole
        else:
            out.append(text[pos:end])
        pos = end
    out.append(text[pos:])
    text, n_text = redact_text("".join(out))
    text, n_pairs = _redact_raw_pairs(text)
    return text, pairs + n_text + n_pairs


# What redact_value does for {"name": "DB_PASSWORD", "value": …} and ["--password", …], on raw text.
_RAW_PAIR = re.compile(
    r'"(?i:name|key|header)"\s{0,8}:\s{0,8}"(?P<name>(?:[^"\\]|\\.){1,128})"\s{0,8},\s{0,8}'
    r'"(?i:value)"\s{0,8}:\s{0,8}(?P<value>"(?:[^"\\]|\\.)*"?)'
)
_RAW_FLAG = re.compile(r'"(?P<name>--[A-Za-z][\w-]{0,63})"\s{0,8},\s{0,8}(?P<value>"(?:[^"\\]|\\.)*"?)')
_RAW_USER_FLAG = re.compile(
    r'"(?:-u|-U|--user|--proxy-user)"\s{0,8},\s{0,8}"(?P<user>[^"\\:\s]{0,256}):(?P<pw>(?:[^"\\]|\\.)++)'
)


def _redact_raw_pairs(text: str) -> tuple[str, int]:
    if '"' not in text:
        return text, 0
    count = 0

    def pair(match: re.Match[str], *, flag: bool) -> str:
        nonlocal count
        name, value = match["name"], match["value"].strip('"')
        secret = _is_secret_flag(name) and not (value.startswith("-") and not value.startswith("-----BEGIN"))
        if not (secret if flag else is_secret_key(name)) or not value or value.startswith(REDACTED):
            return match[0]
        count += 1
        return match[0][: match.start("value") - match.start()] + f'"{REDACTED}"'

    text = _RAW_PAIR.sub(lambda m: pair(m, flag=False), text)
    text = _RAW_FLAG.sub(lambda m: pair(m, flag=True), text)

    def user_password(match: re.Match[str]) -> str:
        nonlocal count
        if _password_kept(match["user"], match["pw"]):
            return match[0]
        count += 1
        return match[0][: match.start("pw") - match.start()] + REDACTED

    if "-u" in text or "-U" in text:
        text = _RAW_USER_FLAG.sub(user_password, text)
    return text, count


def redact_value(value: Any) -> tuple[Any, int]:
    """Redact a decoded JSON value in place where possible; returns (value, redactions)."""
    if isinstance(value, dict):
        total = 0
        if any(
            isinstance(k, str) and k.lower() in _PAIR_NAMES and isinstance(v, str) and is_secret_key(v)
            for k, v in value.items()
        ):  # {"name": "Authorization", "value": …}, any capitalisation
            for k, v in value.items():
                if isinstance(k, str) and k.lower() == "value" and isinstance(v, str) and v != REDACTED:
                    value[k] = REDACTED
                    total += 1
        for key, item in value.items():
            if (
                isinstance(key, str)
                and is_secret_key(key)
                and item is not None
                and not isinstance(item, bool)  # hasPassword: true is not a secret
                and item != REDACTED
                and not _keeps_value(key, item)
            ):
                if isinstance(item, (dict, list)) and not item:
                    continue
                value[key] = REDACTED
                total += 1
            else:
                new, n = redact_value(item)
                if n:
                    value[key] = new
                    total += n
        return value, total
    if isinstance(value, list):
        total = 0
        if (  # a header tuple: ["Authorization", "Basic …"], ["X-Api-Key", "…"]
            len(value) == 2
            and isinstance(value[0], str)
            and isinstance(value[1], str)
            and value[1] != REDACTED
            and _HEADER_NAME.match(value[0])
            and is_secret_key(value[0])
        ):
            value[1] = REDACTED
            total += 1
        total += _redact_argv_passwords(value)
        previous = None  # the element before, as it was (not as redacted)
        for i, item in enumerate(value):
            follows_flag = isinstance(previous, str) and _is_secret_flag(previous)
            previous = item
            if item is REDACTED:  # the header tuple's value, just redacted
                continue
            if (
                follows_flag
                and isinstance(item, str)
                and not item.startswith(REDACTED)
                and (not item.startswith("-") or item.startswith("-----BEGIN"))
            ):
                value[i] = REDACTED  # ["mysql", "--password", "…"]
                total += 1
                continue
            new, n = redact_value(item)
            if n:
                value[i] = new
                total += n
        return value, total
    if isinstance(value, str):
        return redact_text(value)
    return value, 0


def redact_json_text(text: str) -> str:
    """JSON text as it may be stored: re-encoded with its secrets redacted, or ``text`` itself
    (the same object) when it has none."""
    if not may_contain_secret(text.encode()):
        return text
    redacted, count = redact_value(json.loads(text))
    return json.dumps(redacted, allow_nan=False) if count else text


def redacted_copy(value: Any) -> Any:
    """``value`` as it may be stored: a copy with its secrets redacted, or ``value`` itself when it
    has none (it is never changed). A value that is not JSON is returned as it is, for the writer
    to refuse."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return value
    stored = redact_json_text(text)
    return value if stored is text else json.loads(stored)
