"""The patterns of secret redaction (applied before anything is stored: events, quarantine, error groups, audit).

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

import re

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
