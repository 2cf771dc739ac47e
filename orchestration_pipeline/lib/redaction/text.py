"""Redacting secrets in free text: keyed values, headers, connection strings, known token forms, command lines."""

from __future__ import annotations

import re

from orchestration_pipeline.lib.redaction.patterns import (
    _ARGV_ID_OR_VARIABLE,
    _ARGV_KEPT_PASSWORD,
    _ARGV_MYSQL,
    _ARGV_PORT_MAPPING,
    _ARGV_SSHPASS,
    _ARGV_USER_FLAGS,
    _AUTH_HEADER,
    _BARE_TAIL,
    _BEARER,
    _COLON_TAIL,
    _FLAG_SECRET,
    _FLAG_VALUE,
    _GLUED_SECRET,
    _KNOWN_TOKEN,
    _KV_SECRET,
    _LINE_TAIL,
    _MYSQL_COMMAND,
    _MYSQL_PASSWORD,
    _PEM_PRIVATE_KEY,
    _PLAIN_WORD,
    _QUOTE_TAILS,
    _REST_OF_LINE,
    _SECRET_KEY,
    _SECRET_KEY_HINT,
    _SSHPASS,
    _STRING_PREFIX,
    _URL_PASSWORD,
    _USER_FLAG,
    _USER_FLAG_BUNDLE,
    _VALUE_AFTER_COLON,
    _VALUE_AFTER_EQUALS,
    _VALUE_BOUND,
    _VALUELESS_FLAG,
    REDACTED,
    _keep_pre,
)


def _normalise_key(key: str) -> str:
    key = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key.strip())
    return key.replace("-", "_").replace(" ", "_").replace(".", "_").lower()


def is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret (``api_key``, ``GithubToken``, ``db-password``,
    ``db.password``), also written glued (``PGPASSWORD``, ``GITHUBTOKEN``), and ``SSHPASS`` (what
    ``sshpass -e`` reads; only so spelled: ``sshpass: command not found`` is no secret)."""
    if _SECRET_KEY_HINT.search(key) is None:  # most keys: one C search, not _normalise_key
        return False
    return bool(
        _SECRET_KEY.match(_normalise_key(key))
        or _GLUED_SECRET.search(key.strip())
        or key.strip() == "SSHPASS"
    )


def _keeps_value(key: str, value: object) -> bool:
    """``PWD`` holding a path is the working directory (environment dumps), not a password."""
    return key.strip().lower() == "pwd" and isinstance(value, str) and value.startswith(("/", "~"))


def _split_quoted(value: str) -> tuple[str, str, bool] | None:
    """(quote, inner text, closed) of a quoted value (also JSON-escaped quotes); None if bare."""
    for quote in ('\\"', '"', "'"):
        if value.startswith(quote):
            closed = len(value) >= 2 * len(quote) and value.endswith(quote)
            return quote, value[len(quote) : -len(quote)] if closed else value[len(quote) :], closed
    return None


def _redacted_value(value: str) -> str | None:
    """The value with its content replaced (quotes kept), or None when there is nothing to redact."""
    if (quoted := _split_quoted(value)) is not None:
        quote, inner, closed = quoted
        if not inner.strip() or inner.startswith(REDACTED):
            return None
        return f"{quote}{REDACTED}{quote}" if closed else f"{quote}{REDACTED}"
    if value[0] in "|>" and "\n" in value:  # a YAML block, lines and all
        return REDACTED + ("\n" if value.endswith("\n") else "")
    return None if value.startswith(REDACTED) else REDACTED


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


def _kept_length(value: str) -> int:
    """How much of a value with nothing to redact (empty, or already redacted) to step over."""
    if (quoted := _split_quoted(value)) is not None:
        quote, inner, closed = quoted
        if closed and inner.strip() in ("", REDACTED):
            return len(value)
        return len(quote) + (len(REDACTED) if inner.startswith(REDACTED) else 0)
    return len(REDACTED) if value.startswith(REDACTED) else 0


def _is_secret_flag(text: str) -> bool:
    """``--password``-style argv element whose next element is the secret."""
    if not text.startswith("--") or "=" in text:
        return False
    key = text[2:]
    return bool(key) and not _VALUELESS_FLAG.match(key) and is_secret_key(key)


def _password_kept(user: str, password: str) -> bool:
    """What ``-u user:password`` holds that is no password (as _USER_FLAG sees it): ``uid:gid``
    (``docker -u 1000:1000``, ``-u ${UID}:${GID}``), a URL (``-u https://host``), a ``date -u
    +%H:%M`` format; and a password already redacted."""
    return (
        (
            _ARGV_ID_OR_VARIABLE.fullmatch(user) is not None
            and _ARGV_ID_OR_VARIABLE.fullmatch(password) is not None
        )
        or _ARGV_KEPT_PASSWORD.match(password) is not None
        or user.startswith("+")
    )


def _redact_command_lines(text: str) -> tuple[str, int]:
    """curl -u user:pw, mysql -pPASSWORD and sshpass -p PASSWORD in free text; each rule runs only
    when its trigger is in the text."""
    count, low = 0, text.lower()

    def mysql_command(match: re.Match[str]) -> str:
        nonlocal count
        command, n = _MYSQL_PASSWORD.subn(_keep_pre, match[0])
        count += n
        return command

    # A value redacted here may have held a ";", "|" or "&" that ended a mysql command: the mysql
    # rule runs last, on what the others left, so that a second pass finds the same commands.
    if "-u" in low or _USER_FLAG_BUNDLE.search(text) is not None:
        text, n = _USER_FLAG.subn(_keep_pre, text)
        count += n
    if "sshpass" in low:
        text, n = _SSHPASS.subn(_keep_pre, text)
        count += n
    if "mysql" in low or "mariadb" in low:
        # one command at a time, each scanned once: linear however many commands a text holds
        text = _MYSQL_COMMAND.sub(mysql_command, text)
    return text, count


def _redact_sshpass_argv(argv: list, start: int) -> int:
    """The password of ``sshpass [-v] [-P prompt] -p PW`` whose options begin at ``start``."""
    i = start
    while i < len(argv) and isinstance(item := argv[i], str) and item.startswith("-"):
        if item == "-p":
            if (
                i + 1 < len(argv)
                and isinstance(pw := argv[i + 1], str)
                and pw
                and not pw.startswith(REDACTED)
            ):
                argv[i + 1] = REDACTED
                return 1
            return 0
        if item.startswith("-p"):
            if item[2:].startswith(REDACTED):
                return 0
            argv[i] = "-p" + REDACTED
            return 1
        i += 2 if item in ("-P", "-f", "-d") else 1  # the options that take a value
    return 0


def _redact_argv_passwords(argv: list) -> int:
    """["curl", "-u", "user:pw"], ["mysql", "-pPASSWORD"] (also after ``sudo``, ``docker exec db``)
    and ["sshpass", "-p", "PW"], in place; returns the redactions."""
    count = 0
    mysql = False  # a mysql or mariadb program came before: its -pPASSWORD follow
    for i, item in enumerate(argv):
        if not isinstance(item, str):
            continue
        if i and (
            argv[i - 1] in _ARGV_USER_FLAGS
            or (isinstance(argv[i - 1], str) and _USER_FLAG_BUNDLE.fullmatch(argv[i - 1]) is not None)
        ):
            user, colon, password = item.partition(":")  # the user may be empty: -u :token
            if colon and password and not _password_kept(user, password):
                argv[i] = f"{user}:{REDACTED}"
                count += 1
        elif (
            mysql
            and len(item) > 2
            and item.startswith("-p")
            and not item[2:].startswith(REDACTED)
            and not _ARGV_PORT_MAPPING.fullmatch(item[2:])
        ):
            argv[i] = "-p" + REDACTED
            count += 1
        elif _ARGV_MYSQL.fullmatch(item):
            mysql = True
        elif _ARGV_SSHPASS.fullmatch(item):
            count += _redact_sshpass_argv(argv, i + 1)
    return count


def redact_text(text: str) -> tuple[str, int]:
    """Redact secrets inside free text; returns the new text and the number of redactions."""
    count = 0

    def sub(pattern: re.Pattern[str], repl: str, value: str) -> str:
        nonlocal count
        value, n = pattern.subn(repl, value)
        count += n
        return value

    def keyed(pattern: re.Pattern[str], value: str, *, flag: bool) -> str:
        nonlocal count
        out, pos = [], 0
        while (match := pattern.search(value, pos)) is not None:
            key = match["key"]
            low = key.lower()
            if flag:
                value_pattern, tail = _FLAG_VALUE, _BARE_TAIL
            elif low in ("cookie", "set-cookie", "set_cookie"):
                value_pattern, tail = _REST_OF_LINE, _LINE_TAIL  # every cookie of the header
            elif match["sep"] == ":":
                value_pattern, tail = _VALUE_AFTER_COLON, _COLON_TAIL
            else:
                value_pattern, tail = _VALUE_AFTER_EQUALS, _BARE_TAIL
            start = match.end()
            if (prefix := _STRING_PREFIX.match(value, start)) is not None:
                start = prefix.end()
            if (
                (low.endswith("authorization") and not flag)  # _AUTH_HEADER's, scheme and all
                or (flag and _VALUELESS_FLAG.match(key))
                or (
                    not flag and value[match.start() - 1 : match.start()] == ":" and match["sep"] == ":"
                )  # arn:…:secret:x
                or low == "publickeytoken"  # a .NET assembly's public key hash
                or not is_secret_key(key)
                or _PLAIN_WORD.match(value, start)
                or _keeps_value(key, value[start : start + 1])  # PWD=/path: decided by its first character
                or value.startswith(REDACTED, start)  # done already: no need to read the value
                or (secret := value_pattern.match(value, start)) is None
            ):
                out.append(value[pos : match.end()])
                pos = match.end()
                continue
            if (replacement := _redacted_value(secret[0])) is None:
                # empty or already redacted: step over just that, then scan on
                step = start + _kept_length(secret[0])
                out.append(value[pos:step])
                pos = max(step, match.end())
                continue
            count += 1
            end = secret.end()
            if len(secret[0]) >= _VALUE_BOUND:
                replacement, end = _past_bound(value, secret, tail, replacement)
            out.append(value[pos:start] + replacement)
            pos = end
        out.append(value[pos:])
        return "".join(out)

    if "-----BEGIN" in text:
        text = sub(_PEM_PRIVATE_KEY, REDACTED, text)
    text = sub(_KNOWN_TOKEN, REDACTED, text)
    text, n = _redact_command_lines(text)
    count += n
    text = sub(_BEARER, rf"\1 {REDACTED}", text)
    text = sub(_AUTH_HEADER, rf"\1{REDACTED}", text)
    if "@" in text:
        text = sub(_URL_PASSWORD, rf"\1{REDACTED}\3", text)
    if "--" in text:
        text = keyed(_FLAG_SECRET, text, flag=True)
    if ":" in text or "=" in text:
        text = keyed(_KV_SECRET, text, flag=False)
    return text, count
