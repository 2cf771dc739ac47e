"""Command-line passwords: ``curl -u user:pw``, ``mysql -pPW``, ``sshpass -p PW``, in text and in argv lists.

The curl rule keeps the user and redacts the password after the first ``:``; ``curl -u TOKEN:``
(an API token as the user, with an empty password) has the token redacted. ``uid:gid`` as in
``docker -u 1000:1000``, a URL as in ``ffuf -u https://…`` or ``date -u +%H:%M`` is no password.
The mysql rule reads ``-pPASSWORD`` inside mysql and mariadb commands (``-p'my pw'``, not
``docker -p3306:3306``), the sshpass rule ``sshpass [-v] [-P prompt] -p PASSWORD``: in text (quoted
values whole, lines continued with a backslash), in a list's repr (``['sshpass', '-p', 'pw']``) and
in argv lists (also after ``sudo`` or ``docker exec db``). A mysql password more than 2,048
characters into its command is not found (the bound that keeps that scan linear).

Other tools' passwords, each found only in its command: openssl's ``-passin pass:PW`` (``env:``
and ``file:`` kept), ``redis-cli -a PW``, ``vault login TOKEN``, ``docker login -p PW`` (text and
argv lists); ``echo PW | docker login --password-stdin`` and PowerShell's ``ConvertTo-SecureString
'PW' -AsPlainText`` (text; a quoted value is found up to 512 characters, a bare one whole).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from orchestration_pipeline.lib.redaction.keys import REDACTED, is_placeholder

Count = Callable[[str, int], None]

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
# A variable, <password> or *** standing for the password is kept too (a placeholder, whole).
_PLACEHOLDER_VALUE = r"""(?:\$\{?[A-Za-z_]\w{0,63}\}?|<[A-Za-z_][\w .-]{0,63}>|\*{3,})(?=[\s"'\\]|$)"""
_KEPT_PASSWORD = (
    rf"(?:{_URL_START}|\[REDACTED\]|(?i:authorization)[ \t]{{0,8}}[:=][ \t]{{0,8}}\[REDACTED\]"
    rf"|{_PLACEHOLDER_VALUE})"
)


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
    # nor what _USER_TOKEN left: "-u TOKEN: " reads "-u [REDACTED]: " (no password after it)
    + rf"""(?!\+|{_ID_OR_VARIABLE}:{_ID_OR_VARIABLE}(?:[\s"'\\]|$)|\[REDACTED\]:(?:\s|\\?["']|\\[tnr]|$))"""
    + r"""(?(esc)[^\s:"'/=\\]{0,256}+|(?(att)[^\s:"'/=\\\x00-\x1f()<>;|&,\[\]]{1,256}+"""
    + r"""|(?(sq)[^\s:'=]{0,256}+|(?(dq)[^\s:"'=]{0,256}+|(?(eq)[^\s:"'=]{0,256}+|[^\s:"'/=]{0,256}+))))):)"""
    + rf"(?!{_KEPT_PASSWORD})"
    + _CLI_VALUE
    + r"++"  # to the value's end: each match takes its whole value, so runs never overlap
)
# curl -u TOKEN: — an API token as the user and an empty password (Stripe, Mailgun and others
# document it): the user is the secret. Not a number (uid), a variable or what was redacted.
_USER_TOKEN = re.compile(
    r"""(?:(?<![\w-])|(?<=\\[tnr]))(?P<pre>(?:--user|--proxy-user|-[uU]|""" + _USER_BUNDLE + ")"
    r"""(?:[ \t]{1,32}|=|\\?["']\s{0,8},\s{0,8})\\?["']?)"""
    r"""(?!\[REDACTED\]|\d{1,32}:)(?P<user>[^\s:"'\\$<>(){}\[\]]{1,256}+):(?=\s|\\?["']|\\[tnr]|$)"""
)
# A mysql or mariadb command, to the end of its line (a line continued by "\" goes on) or its
# pipeline step; inside it, -pPASSWORD (-p'my pw', "-ppw"), but not docker's -p3306:3306.
_MYSQL_COMMAND = re.compile(
    r"(?i)(?:\b|(?<=\\[tnr]))(?:mysql|mariadb)[\w-]{0,16}\b(?:[^\n;&|\\]|\\(?:\r?\n|.)){0,2048}"
)
_PORT_MAPPING = r"[\d.]{1,64}:[\d.:]{1,64}(?:/(?:tcp|udp))?"
_MYSQL_PASSWORD = re.compile(
    r"""(?:(?<=[\s"'])|(?<=\\[tnr]))(?P<pre>-p(?!\\?["']?(?:\[REDACTED\]|"""
    + _PLACEHOLDER_VALUE
    + "))"
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
    r"(?!\\?[\"']?(?:\[REDACTED\]|" + _PLACEHOLDER_VALUE + "))" + _CLI_QUOTE + ")" + _CLI_VALUE + r"++"
)
# docker login -p PASSWORD (and podman, nerdctl, helm registry, oras …): -p after "login", at most
# 8 arguments on, in text, a list's repr or a raw JSON line (--password is the flag rule's). An
# argument is read whole, however long (a long one redacted by another rule first must not decide
# whether -p follows): each argument is read from at most 9 starts, so the scan stays linear.
_LOGIN_ARGUMENT = r"""[^\s;&|"'\\]++"""
_REGISTRY_LOGIN = re.compile(
    r"(?:\b|(?<=\\[tnr]))(?P<pre>login"
    rf"""(?:{_SSHPASS_ARG_SEP}(?!-p(?:[\s"'\\]|$)){_LOGIN_ARGUMENT}){{0,8}}{_SSHPASS_ARG_SEP}-p{_CLI_SEP}"""
    r"(?!\\?[\"']?(?:\[REDACTED\]|" + _PLACEHOLDER_VALUE + "))" + _CLI_QUOTE + ")" + _CLI_VALUE + r"++"
)
# openssl's pass phrase arguments: -passin pass:PW, -passout pass:PW (-pass in enc); only "pass:"
# holds the password itself (env:VAR, file:path, fd:N and stdin name where it is), kept.
_OPENSSL_PASS = re.compile(
    r"(?:(?<![\w-])|(?<=\\[tnr]))(?P<pre>-pass(?:in|out)?(?:=|" + _CLI_SEP + ")" + _CLI_QUOTE + "pass:"
    r"(?!\[REDACTED\]|" + _PLACEHOLDER_VALUE + "))" + _CLI_VALUE + r"++"
)
# redis-cli -a PASSWORD (and --pass PASSWORD), at most 8 arguments after the program: in other
# commands -a is no password (tar -a, ls -a).
_REDIS_CLI = re.compile(
    r"(?:\b|(?<=\\[tnr]))(?P<pre>redis-cli(?:\.exe)?"
    rf"""(?:{_SSHPASS_ARG_SEP}(?!(?:-a|--pass)(?:[\s"'\\]|$)){_LOGIN_ARGUMENT}){{0,8}}"""
    rf"{_SSHPASS_ARG_SEP}(?:-a|--pass){_CLI_SEP}"
    r"(?!\\?[\"']?(?:\[REDACTED\]|" + _PLACEHOLDER_VALUE + "))" + _CLI_QUOTE + ")" + _CLI_VALUE + r"++"
)
# vault login TOKEN: the first positional argument after "login", after flags written -name=value
# or the valueless ones (-no-store, -no-print, -token-only, -non-interactive). Auth-method
# parameters (username=bob) hold "="; "-" reads stdin. A bare token holds a digit or is 20
# characters long, so that prose ("vault login failed") is not taken for one.
_VAULT_FLAG = r"-{1,2}(?:[\w-]{1,64}=[^\s\"'\\]*+|no-store|no-print|token-only|non-interactive)"
_VAULT_LOGIN = re.compile(
    r"(?:\b|(?<=\\[tnr]))(?P<pre>(?i:vault)(?:\.exe)?" + _SSHPASS_ARG_SEP + "login"
    rf"""(?:{_SSHPASS_ARG_SEP}{_VAULT_FLAG}(?=[\s"'\\]|$)){{0,8}}{_SSHPASS_ARG_SEP}"""
    r"(?![-\[])(?!\\?[\"']?(?:\[REDACTED\]|" + _PLACEHOLDER_VALUE + "))" + _CLI_QUOTE + ")"
    r"(?(dq)|(?(sq)|(?(eq)|(?=[\w.+/~-]{0,255}\d|[\w.+/~-]{20})(?![^\s\"'\\]{0,512}=))))" + _CLI_VALUE + r"++"
)
# A password written to a command's standard input: echo PW | docker login --password-stdin
# (also echo "PW", printf '%s' PW, echo -n; and gh auth login --with-token).
_STDIN_PASSWORD = re.compile(
    r"(?<![\w-])(?P<pre>(?:echo(?:[ \t]{1,32}-[neE]{1,3})?|printf(?:[ \t]{1,32}(?:'%s(?:\\n)?'|\"%s(?:\\n)?\"))?)"
    r"[ \t]{1,32})(?P<value>'[^'\n]{1,512}'|\\\"(?:[^\"\\\n]|\\(?!\")){1,512}\\\"|\"(?:[^\"\\\n]|\\.){1,512}\"|[^\s\"'\\|;&<>()`]++)"
    r"(?=[ \t]{0,32}\|[^\n|;&]{0,512}?(?:--password-stdin|--with-token)(?![\w-]))"
)
# PowerShell: ConvertTo-SecureString 'PW' -AsPlainText (also -String 'PW'), and 'PW' |
# ConvertTo-SecureString; a variable or an expression ($pw, $env:PW, (Get-Content …)) is kept.
_SECURE_STRING = re.compile(
    r"(?i:(?P<pre>convertto-securestring(?:[ \t]{1,32}-string)?[ \t]{1,32})"
    r"(?P<value>'[^'\n]{1,512}'|\\\"(?:[^\"\\\n]|\\(?!\")){1,512}\\\"|\"(?:[^\"\\\n]|\\.){1,512}\"|[^\s\"'\\$(|;&-][^\s\"'\\|;&]*+)"
    r"|(?P<piped>'[^'\n]{1,512}'|\\\"(?:[^\"\\\n]|\\(?!\")){1,512}\\\"|\"(?:[^\"\\\n]|\\.){1,512}\")(?=[ \t]{0,32}\|[ \t]{0,32}convertto-securestring\b))"
)
_ARGV_MYSQL = re.compile(r"(?i)(?:[^/\\]*[/\\])*(?:mysql|mariadb)[\w.-]{0,16}")
_ARGV_SSHPASS = re.compile(r"(?i)(?:[^/\\]*[/\\])*sshpass(?:\.exe)?")
_ARGV_PORT_MAPPING = re.compile(_PORT_MAPPING)
_ARGV_ID_OR_VARIABLE = re.compile(_ID_OR_VARIABLE)
_ARGV_KEPT_PASSWORD = re.compile(_KEPT_PASSWORD)
_ARGV_USER_FLAGS = ("-u", "-U", "--user", "--proxy-user")
_ARGV_REDIS_CLI = re.compile(r"(?i)(?:[^/\\]*[/\\])*redis-cli(?:\.exe)?")
_ARGV_VAULT = re.compile(r"(?i)(?:[^/\\]*[/\\])*vault(?:\.exe)?")
_OPENSSL_PASS_FLAGS = ("-passin", "-passout", "-pass")
_VAULT_VALUELESS = frozenset(("no-store", "no-print", "token-only", "non-interactive"))


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
        or is_placeholder(password)
        or user.startswith("+")
    )


def redact_command_lines(text: str, count: Count) -> str:
    """curl -u user:pw (and -u TOKEN:), mysql -pPASSWORD and sshpass -p PASSWORD in free text;
    each rule runs only when its trigger is in the text."""
    low = text.lower()

    def mysql_command(match: re.Match[str]) -> str:
        command, n = _MYSQL_PASSWORD.subn(_keep_pre, match[0])
        count("mysql-password", n)
        return command

    def user_token(match: re.Match[str]) -> str:
        if is_placeholder(match["user"]):
            return match[0]
        count("curl-user", 1)
        return match["pre"] + REDACTED + ":"

    # A value redacted here may have held a ";", "|" or "&" that ended a mysql command: the mysql
    # rule runs last, on what the others left, so that a second pass finds the same commands.
    if "-u" in low or _USER_FLAG_BUNDLE.search(text) is not None:
        text, n = _USER_FLAG.subn(_keep_pre, text)
        count("curl-user", n)
        if ":" in text:
            text = _USER_TOKEN.sub(user_token, text)
    if "sshpass" in low:
        text, n = _SSHPASS.subn(_keep_pre, text)
        count("sshpass", n)
    if "login" in low and "-p" in text:
        text, n = _REGISTRY_LOGIN.subn(_keep_pre, text)
        count("registry-login", n)
    if "pass:" in low and "-pass" in low:
        text, n = _OPENSSL_PASS.subn(_keep_pre, text)
        count("openssl-pass", n)
    if "redis-cli" in low and ("-a" in text or "--pass" in text):
        text, n = _REDIS_CLI.subn(_keep_pre, text)
        count("redis-cli-password", n)
    if "vault" in low and "login" in low:
        text, n = _VAULT_LOGIN.subn(_keep_pre, text)
        count("vault-login", n)
    if ("password-stdin" in low or "with-token" in low) and "|" in text:
        text = _STDIN_PASSWORD.sub(lambda m: _quoted_value(m, "value", "stdin-password", count), text)
    if "securestring" in low:
        text = _SECURE_STRING.sub(
            lambda m: _quoted_value(m, "value" if m["value"] else "piped", "powershell-securestring", count),
            text,
        )
    if "mysql" in low or "mariadb" in low:
        # one command at a time, each scanned once: linear however many commands a text holds
        text = _MYSQL_COMMAND.sub(mysql_command, text)
    return text


def _quoted_value(match: re.Match[str], group: str, rule_id: str, count: Count) -> str:
    """``match`` with its ``group`` (a value, quoted or bare) redacted, quotes kept; as it was when
    the value is a placeholder or was redacted already."""
    value = match[group]
    quote = '\\"' if value.startswith('\\"') else value[0] if value[0] in "'\"" else ""
    if is_placeholder(value[len(quote) : len(value) - len(quote)]):
        return match[0]
    count(rule_id, 1)
    start, end = match.start(group) - match.start(), match.end(group) - match.start()
    return match[0][:start] + quote + REDACTED + quote + match[0][end:]


def _vault_token_at(argv: list, start: int) -> int | None:
    """The index of the token of ``vault login [flags] TOKEN`` whose flags begin at ``start``."""
    for i in range(start, min(len(argv), start + 9)):
        item = argv[i]
        if not isinstance(item, str) or not item:
            return None
        if item.startswith("-"):
            if "=" in item or item.lstrip("-") in _VAULT_VALUELESS:
                continue
            return None
        return None if "=" in item or is_placeholder(item) or item.startswith(REDACTED) else i
    return None


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


def redact_argv_passwords(argv: list, count: Count) -> None:
    """["curl", "-u", "user:pw"] (and "TOKEN:"), ["mysql", "-pPASSWORD"] (also after ``sudo``,
    ``docker exec db``) and ["sshpass", "-p", "PW"], in place."""
    mysql = login = redis = False  # a mysql or mariadb program came before (its -pPASSWORD follow), a login
    for i, item in enumerate(argv):
        if not isinstance(item, str):
            continue
        if i and argv[i - 1] in _OPENSSL_PASS_FLAGS and item.startswith("pass:"):
            if item[5:] and not item[5:].startswith(REDACTED) and not is_placeholder(item[5:]):
                argv[i] = "pass:" + REDACTED  # openssl rsa -passin pass:PW
                count("openssl-pass", 1)
            continue
        if redis and argv[i - 1] in ("-a", "--pass") and item and not item.startswith(REDACTED):
            if not is_placeholder(item):
                argv[i] = REDACTED  # redis-cli -a PASSWORD
                count("redis-cli-password", 1)
            continue
        if item == "login" and i and isinstance(argv[i - 1], str) and _ARGV_VAULT.fullmatch(argv[i - 1]):
            if (token := _vault_token_at(argv, i + 1)) is not None:
                argv[token] = REDACTED  # vault login TOKEN
                count("vault-login", 1)
            continue
        redis = redis or _ARGV_REDIS_CLI.fullmatch(item) is not None
        if (
            login
            and argv[i - 1] == "-p"
            and item
            and not item.startswith(REDACTED)
            and not is_placeholder(item)
        ):
            argv[i] = REDACTED  # docker login -u ci -p PASSWORD
            count("registry-login", 1)
            continue
        login = login or item == "login"
        if i and (
            argv[i - 1] in _ARGV_USER_FLAGS
            or (isinstance(argv[i - 1], str) and _USER_FLAG_BUNDLE.fullmatch(argv[i - 1]) is not None)
        ):
            user, colon, password = item.partition(":")  # the user may be empty: -u :token
            if colon and password and not _password_kept(user, password):
                argv[i] = f"{user}:{REDACTED}"
                count("curl-user", 1)
            elif colon and not password and _is_token_user(user):  # -u TOKEN: (no password)
                argv[i] = f"{REDACTED}:"
                count("curl-user", 1)
        elif (
            mysql
            and len(item) > 2
            and item.startswith("-p")
            and not item[2:].startswith(REDACTED)
            and not _ARGV_PORT_MAPPING.fullmatch(item[2:])
        ):
            argv[i] = "-p" + REDACTED
            count("mysql-password", 1)
        elif _ARGV_MYSQL.fullmatch(item):
            mysql = True
        elif _ARGV_SSHPASS.fullmatch(item):
            count("sshpass", _redact_sshpass_argv(argv, i + 1))


def _is_token_user(user: str) -> bool:
    """The user of ``-u TOKEN:``: a token, not a uid, a variable or what was redacted already."""
    return bool(user) and not user.isdigit() and not is_placeholder(user) and not user.startswith(REDACTED)
