"""Secret redaction, applied before anything is stored (events, quarantine, error groups, audit).

Five kinds of secret are replaced with ``"[REDACTED]"``:

* values under keys that name a secret (``password``, ``api_key``, ``github_token``, …), matched
  on whole ``_``-separated words so that ``token_count`` or ``tokens_used`` are left alone, or
  glued or dotted (``PGPASSWORD``, ``db.password``); booleans are kept (``hasPassword: true``).
  Also the ``value`` of a ``{"name": "Authorization", "value": …}`` pair (any capitalisation), the
  value of a header tuple (``["X-Api-Key", "…"]``), and the argument after a ``--password``-style
  flag in an argv list;
* inside strings: bearer tokens and other ``Authorization:`` credentials (Basic, Token, …), PEM
  private keys, and ``key=value``, ``key: value`` or ``key => value`` where the key names a secret
  (``api_key=…``, ``"password": "…"`` inside a string, ``X-Api-Key: …``, ``--token …``,
  ``-Dgpg.passphrase=…``, ``:_authToken=…``). A quoted value is redacted to its closing quote (or to
  the end of the line when it is never closed), a YAML block (``|``) whole, a ``Cookie`` header to
  its end, a value after ``:`` to the end of the line. Patterns read at most 512 characters of a
  value (so a scan that only steps over one stays linear); a value being redacted is then taken to
  its real end, so a longer secret leaves no tail behind;
* passwords inside connection strings (``postgresql://user:pw@host``, also with an empty user
  or with ``@``, ``?``, ``#`` or ``/`` inside the password, and ``password=pw``); ``host:8080/x@y``
  and ``image:tag@sha256:…`` are not passwords;
* credentials recognisable by their form alone, with no key in front of them: GitHub
  (``ghp_…``, ``github_pat_…``), GitLab (``glpat-…``), Slack (``xoxb-…``), Stripe (``sk_live_…``),
  npm (``npm_…``), Google API (``AIza…``), OpenAI and Anthropic (``sk-proj-…``, ``sk-ant-…``) keys,
  AWS access key ids (``AKIA…``) and JWTs (``eyJ….eyJ….…``);
* command-line passwords: ``curl -u user:pw`` (also ``--user``, ``--proxy-user``, ``-U``,
  ``-u'user:pw'``, ``-uuser:pw``, ``-u :token``, -u ending a bundle of switches as in ``-sSu``,
  ``-u 'CORP/alice:pw'``; the user is kept, and ``uid:gid`` as in
  ``docker -u 1000:1000``, a URL as in ``ffuf -u https://…`` or ``date -u +%H:%M`` is no password),
  ``mysql -pPASSWORD`` (mysql and mariadb tools, ``-p'my pw'``, not ``docker -p3306:3306``) and
  ``sshpass [-v] [-P prompt] -p PASSWORD`` (and ``SSHPASS=…``), in text (quoted values whole, lines
  continued with a backslash), in a list's repr (``['sshpass', '-p', 'pw']``) and in argv lists (also
  after ``sudo`` or ``docker exec db``).

Over-redacting a word of prose (``password: must be 8 characters``) is accepted; leaking is not.
Each pattern stays linear in the length of the text, and redacting twice changes nothing.
Not covered: a secret with neither a key nor a known form (a bare 40-character AWS secret key); a
connection-string password over 512 characters, and a mysql password more than 2,048 characters
into its command (the bounds that keep those scans linear).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

REDACTED = "[REDACTED]"

_SECRET_WORDS = (
    "password|passwd|passphrase|pwd|secret|token|apikey|api_key|access_key|secret_key|private_key"
    "|client_secret|authorization|credential|credentials|cookie|session_key|signing_key|jwt"
)
_SECRET_KEY = re.compile(rf"^(?:.*_)?(?:{_SECRET_WORDS})$")
# Every key is_secret_key accepts holds one of these (case-insensitively, as _GLUED_SECRET reads
# them: the Kelvin sign is a "k" here too). Checked first, it spares the other keys the costly
# normalising: `text` of a megabyte of "x=1 " holds 260,000 keys.
_SECRET_KEY_HINT = re.compile(r"(?i)pass|pwd|secret|token|key|auth|credential|cookie|jwt")
# Bounded repeats keep every pattern linear on megabyte-long lines (no catastrophic backtracking).
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*")
# The password runs to the last "@" of the authority, so one containing "@" (or "?", "#", "/") is
# redacted whole; "host:8080/path@x" (a port, then a path) is not a password.
_URL_PASSWORD = re.compile(
    r"(\b[A-Za-z][A-Za-z0-9+.\-]{0,31}://(?!\[)[^:/\s@\"']{0,256}:)(?!\[REDACTED\])(?!\d{1,5}(?:/|$|[?#][^@\s]{0,256}=))"
    r"(?=[^\s\"']{1,512}@)([^\s\"'/]{1,512}|[^\s\"'?#]{1,512})(@)(?!sha\d{1,3}:)(?=[^@\s\"'/?#]{0,256}(?:[/\s\"'?#]|$))"
)
# A value after "key=" or "key: ": quoted (to the matching quote, JSON-escaped quotes too, across
# lines; an unclosed quote runs to the end of the line), a YAML block (| or > then indented lines),
# or bare: to a delimiter, and after ":" to the end of the line ("password: two words").
_QUOTED = (
    r"\"(?:[^\"\\]|\\[\s\S]){0,512}\""
    r"|\\\"(?:[^\"\\]|\\(?!\")){0,512}\\\""
    r"|\\\"(?:[^\"\\\n]|\\(?!\")){0,512}"
    r"|'[^']{0,512}'"
    r"|[\"'][^\n]{0,512}"
    r"|[|>][-+]?[ \t]*\n(?:[ \t]+[^\n]*(?:\n|$)){1,64}"
)
_VALUE_AFTER_EQUALS = re.compile(rf"{_QUOTED}|(?!--[A-Za-z])(?:[^\s;&|\"',}}\\]|\\(?![nrt\"\\]))" + "{1,512}")
_VALUE_AFTER_COLON = re.compile(rf"{_QUOTED}|(?!--[A-Za-z])(?:[^\n;&|\"',}}\\]|\\(?![nrt\"\\]))" + "{1,512}")
_FLAG_VALUE = re.compile(rf"{_QUOTED}|(?!-)(?:[^\s;&|\"',}}\\]|\\(?![nrt\"\\]))" + "{1,512}")
# The rest of a value longer than its pattern's bound (512 characters). The bound keeps the scan
# linear where a value is only stepped over (already redacted); a value being redacted is never
# scanned again, so it is taken to its end: no secret's tail is left behind.
_BARE_TAIL = re.compile(r"(?:[^\s;&|\"',}\\]|\\(?![nrt\"\\]))*+")
_COLON_TAIL = re.compile(r"(?:[^\n;&|\"',}\\]|\\(?![nrt\"\\]))*+")
_LINE_TAIL = re.compile(r"[^\n]*+")
_QUOTE_TAILS = {
    '"': re.compile(r'(?:[^"\\\n]|\\.)*+"?'),
    "'": re.compile(r"[^'\n]*+'?"),
    '\\"': re.compile(r'(?:[^"\\\n]|\\(?!"))*+(?:\\")?'),
}
_VALUE_BOUND = 512
# A key and its separator, for any key-like word (also a Java -Dkey=value property); the value is
# matched after it only for a key that names a secret, so the scan goes on inside other values
# ("reason: password=…") and stays linear.
_KV_SECRET = re.compile(
    r"(?:(?<=-D)|(?<=\s-)(?!D[A-Za-z_])|(?<=\A-)(?!D[A-Za-z_])|(?<=:)|(?<![\w.:-]))(?P<key>[A-Za-z_][\w.-]{0,127})"
    r"(?:\\?[\"'])?[ \t]{0,32}(?P<sep>=>|[:=])[ \t]{0,32}"
)
# A string prefix before a quoted value (b'…', u'…', f"…"), kept as it is.
_STRING_PREFIX = re.compile(r"[bBuUrRfF]{1,2}(?=[\"'])")
_PREFIX_ONLY = re.compile(r"[bBuUrRfF]{1,2}")
# Bare values that are never secrets: flags and empties (automountServiceAccountToken: false),
# also closing a parenthesis: MySQL's "(using password: YES)", a repr's "Config(password=None)".
_PLAIN_WORD = re.compile(r"(?i)(?:true|false|null|none|yes|no)(?=[\s;&|,})\]\"']|$)")
_FLAG_SECRET = re.compile(r"(?<![\w-])--(?P<key>[A-Za-z][\w-]{0,63})(?:=|\s+)")
# Flags that never take a value although they name a secret (--no-password, --with-token).
_VALUELESS_FLAG = re.compile(r"(?i)^(?:no|with|without|ask|prompt|show|skip)[_-]")
# Secret words a key may end with when written glued, without a separator (PGPASSWORD, db.password).
_GLUED_SECRET = re.compile(
    r"(?i)(?:password|passwd|passphrase|secret|token|apikey|accesskey|accountkey|privatekey)$"
)
_AUTH_HEADER = re.compile(
    r"(?i)((?<![A-Za-z])authorization\b(?:\\?[\"'])?\s{0,8}[:=]\s{0,8}\\?[\"']?"
    r"(?:(?:basic|bearer|token|digest|negotiate)\s+)?+)(?!\[REDACTED\])"
    r"(?!(?:true|false|null|none|yes|no|enabled|disabled)(?=[\s;&,}\]\"']|$))([^\s;&\"',}\\]++)"
)
# A PEM private key, armour and all (to the end of the text when it was cut off).
_PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----(?:(?!-----END)[\s\S]){0,65536}(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----)?"
)
_REST_OF_LINE = re.compile(r"[^\n]{1,2048}")
# Credentials known by their form (see the module docstring). Each ends where its alphabet ends,
# and never starts inside a longer word, so a redacted token leaves no half behind to match later.
# What may come just before one: no letter, digit, "_" or "-", or else the escape that ends in a
# letter or digit: JSON's \n, \t, … and \u0022 (a raw line, or JSON logged inside a string:
# "line\nghp_…") and a URL's %3D or %22 (?key%3DAIza…).
_KNOWN_TOKEN = re.compile(
    r"(?:(?<![A-Za-z0-9_-])|(?<=\\[nrtbf])|(?<=\\u[0-9A-Fa-f]{4})|(?<=%[0-9A-Fa-f]{2}))(?:"
    r"gh[pousr]_[A-Za-z0-9]{36,251}(?![A-Za-z0-9])"
    r"|github_pat_[A-Za-z0-9_]{22,244}(?![A-Za-z0-9_])"
    r"|glpat-[A-Za-z0-9_-]{20,64}(?![A-Za-z0-9_-])"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|xox[abposr]-[A-Za-z0-9-]{10,251}(?![A-Za-z0-9-])"
    r"|xoxe(?:\.xox[bp])?-[A-Za-z0-9-]{10,251}(?![A-Za-z0-9-])"  # Slack refresh tokens
    r"|xapp-[0-9]{1,4}-[A-Za-z0-9-]{10,251}(?![A-Za-z0-9-])"  # Slack app-level tokens
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,247}(?![A-Za-z0-9])"
    r"|AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"
    r"|npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"
    r"|sk-(?:proj|ant|svcacct|admin)-[A-Za-z0-9_-]{20,512}(?![A-Za-z0-9_-])"
    r"|sk-[A-Za-z0-9]{48}(?![A-Za-z0-9_-])"  # OpenAI's older user keys
    r"|eyJ[A-Za-z0-9_-]{8,4096}\.eyJ[A-Za-z0-9_-]{8,8192}\.[A-Za-z0-9_-]{0,4096}(?![A-Za-z0-9_-])"
    r")"
)
# A command-line value (a password) as written after its flag, in a shell line, in a list's repr
# (['sshpass', '-p', 'pw']) or on a raw JSON line (["sshpass", "-p", "pw"], "-p \"pw\""):
# opened by " (a JSON string: escapes are part of it), ' or \" it runs to its closing quote, spaces
# and all ("my pw"; in '…' a " too); bare, to a blank, a quote or a JSON escape (\t, \n, \r, \")
# that ends it on a raw line. Never a quote's \" half: a raw line's escapes stay whole. A quote
# then "," or "]" closes a list's element (['mysql', '-p', 'db']): no value.
_CLI_QUOTE = r"""(?:(?:(?P<dq>")|(?P<sq>')|(?P<eq>\\"))(?!\s{0,8}[,\]]))?"""
_CLI_VALUE = (
    r"""(?(dq)(?:[^"\n\\]|\\.)|(?(sq)[^'\n]|(?(eq)(?:[^"\n\\]|\\(?!"))"""
    r"""|(?:[^\s"'\\]|\\(?![tnr"])))))"""
)
# Between a flag and its value (or between two arguments): blanks, a raw line's escaped tabs, or a
# list's "', '" (its second quote is the value's, left to _CLI_QUOTE).
_CLI_SEP = r"""(?:[ \t]{1,32}|(?:\\t){1,8}|\\?["']\s{0,8},\s{0,8}(?=\\?["']))"""
# What -u user:password holds that is no password (_password_kept says the same of argv lists):
# uid:gid (docker -u 1000:1000, -u ${UID}:${GID}: each half a number or a shell variable), a URL
# (-u https://host: a user "https" and a password "//host"), a date format (date -u +%H:%M); and
# what a rule redacted already: "[REDACTED]", and the header rule's "authorization:[REDACTED]"
# ("-ua:authorization://" was a URL until that rule ran; redacting it again would not be idempotent).
_ID_OR_VARIABLE = r"(?:\d{1,32}|\$\{?[A-Za-z_]\w{0,63}\}?)"
_URL_START = r"(?:[A-Za-z][\w+.-]{0,31}:)?//"
_KEPT_PASSWORD = rf"(?:{_URL_START}|\[REDACTED\]|(?i:authorization)[ \t]{{0,8}}[:=][ \t]{{0,8}}\[REDACTED\])"


# Every command-line pattern below decides in itself what is a password (no test in Python per
# match: 10^5 of them in a megabyte) and puts what it keeps in "pre", the password right after.
def _keep_pre(match: re.Match[str]) -> str:
    return match["pre"] + REDACTED


# curl -u user:password (--user, --proxy-user, -U): the password after the first ':'; the user,
# perhaps empty (-u :token), is kept. The value follows a blank, "=", a list's "', '" or nothing:
# -u"user:pw", and -uuser:pw after a blank or a quote (that user starts with a word character, "$",
# "@", ".", "%" or "~" and holds no "\", control character, bracket or shell operator: not the ")"
# of "$(id -u):$(id -g)", and nothing the pre-check would not see). Every user run stops at what
# separates the next flag from its value ("=" included), so runs do not overlap: linear. A user
# after an escaped tab has no "\": it could hold the next "\t-u".
# -u at the end of a bundle of curl's switches (-su, -sSLu, -ku) takes the user:password too.
_USER_BUNDLE = r"-[sSkLfvqiIgGjlnNOR46]{1,8}[uU]"
_USER_FLAG_BUNDLE = re.compile(_USER_BUNDLE)
_USER_FLAG = re.compile(
    r"(?:(?<![\w-])|(?<=\\[tnr]))(?P<pre>(?:--user|--proxy-user|-[uU]|" + _USER_BUNDLE + ")"
    r"""(?>[ \t]{1,32}|(?P<esc>\\t){1,8}|=|\\?["']\s{0,8},\s{0,8}(?=\\?["'])|(?=\\?["'])"""
    r"""|(?P<att>(?:(?<![^ \t\n\r"']-u)|(?<=\\[tnr]-u))(?<=-u)(?=[\w$@.%~])))"""
    + _CLI_QUOTE
    + rf"""(?!\+|{_ID_OR_VARIABLE}:{_ID_OR_VARIABLE}(?:[\s"'\\]|$))"""
    + r"""(?(esc)[^\s:"'/=\\]{0,256}+|(?(att)[^\s:"'/=\\\x00-\x1f()<>;|&,\[\]]{1,256}+"""
    + r"""|(?(sq)[^\s:'=]{0,256}+|(?(dq)[^\s:"'=]{0,256}+|(?(eq)[^\s:"'=]{0,256}+|[^\s:"'/=]{0,256}+))))):)"""
    + rf"(?!{_KEPT_PASSWORD})"
    + _CLI_VALUE
    + r"++"  # to the value's end: each match takes its whole value, so runs never overlap
)
# A mysql or mariadb command, to the end of its line (a line continued by "\" goes on) or its
# pipeline step; inside it, -pPASSWORD (-p'my pw', "-ppw"), but not docker's -p3306:3306.
_MYSQL_COMMAND = re.compile(
    r"(?i)(?:\b|(?<=\\[tnr]))(?:mysql|mariadb)[\w-]{0,16}\b(?:[^\n;&|\\]|\\(?:\r?\n|.)){0,2048}"
)
_PORT_MAPPING = r"[\d.]{1,64}:[\d.:]{1,64}(?:/(?:tcp|udp))?"
_MYSQL_PASSWORD = re.compile(
    r"""(?:(?<=[\s"'])|(?<=\\[tnr]))(?P<pre>-p(?!\\?["']?\[REDACTED\])"""
    + rf"""(?!{_PORT_MAPPING}(?![^\s"'\\]))"""
    + _CLI_QUOTE
    + ")"
    + _CLI_VALUE
    + r"++"
)
# sshpass [-v] [-P prompt] -p PASSWORD (also -pPASSWORD, -p 'my pw', and as a list).
_SSHPASS_ARG_SEP = r"""(?:[ \t]{1,32}|(?:\\t){1,8}|\\?["']\s{0,8},\s{0,8}\\?["'])"""
_SSHPASS = re.compile(
    r"(?:\b|(?<=\\[tnr]))(?P<pre>(?i:sshpass)"
    rf"""(?:{_SSHPASS_ARG_SEP}(?:-v|-P{_SSHPASS_ARG_SEP}?\\?["']?[^\s"'\\]{{1,64}}\\?["']?)){{0,4}}"""
    rf"{_SSHPASS_ARG_SEP}-p{_CLI_SEP}?+"
    r"(?!\\?[\"']?\[REDACTED\])" + _CLI_QUOTE + ")" + _CLI_VALUE + r"++"
)
_ARGV_MYSQL = re.compile(r"(?i)(?:[^/\\]*[/\\])*(?:mysql|mariadb)[\w.-]{0,16}")
_ARGV_SSHPASS = re.compile(r"(?i)(?:[^/\\]*[/\\])*sshpass(?:\.exe)?")
_ARGV_PORT_MAPPING = re.compile(_PORT_MAPPING)
_ARGV_ID_OR_VARIABLE = re.compile(_ID_OR_VARIABLE)
_ARGV_KEPT_PASSWORD = re.compile(_KEPT_PASSWORD)
_ARGV_USER_FLAGS = ("-u", "-U", "--user", "--proxy-user")
_PAIR_NAMES = ("name", "key", "header")
# A header name as written in a [name, value] tuple: Authorization, Cookie, or dashed (X-Api-Key).
_HEADER_NAME = re.compile(
    r"(?i)(?:(?:proxy-)?authorization|cookie|set-cookie|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+)$"
)  # {"name": "Authorization", "value": "…"}
# For raw text that is not valid JSON: a quoted key (any characters, escapes included) and its colon,
# then the value: a string (perhaps cut off), or a bare token.
# A key's opening quote never follows a backslash: starting at every \" of a long \"\"\"… run, each
# scanning 128 escapes ahead, was quadratic-like (3 s a megabyte); now the runs do not overlap.
_JSON_KEY = re.compile(r'(?<!\\)"((?:[^"\\]|\\.){1,128}+)"\s{0,8}:\s{0,8}')
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')
_BARE_VALUE = re.compile(r"[^,}\]\s\"]{1,512}")
_RAW_BARE_TAIL = re.compile(r"[^,}\]\s\"]*+")
_STRUCTURE = re.compile(r'["{}\[\]]')
# A cheap pre-filter: lines without any of these substrings cannot hold a secret we redact.
# (pass, pwd, secret, token, key, auth, bearer, credential, cookie, ://)


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
