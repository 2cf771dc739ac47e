"""The patterns of keyed secrets in text: which values follow which keys, and how far they run.

What is a secret is data (``rules.toml``: the key vocabulary, the assignment grammar, the
placeholders, the token rules, compiled in ``keys.py`` and ``matcher.py``); this module holds the
Python patterns that find a value after its key, in an ``Authorization`` header, in a connection
string, in XML, YAML and call arguments. Each of them is linear in the length of the text: every
repeat is bounded, possessive, or over a class that the next part cannot start with, and
``benchmarks/redaction.py`` times them on adversarial lines of a megabyte.

A quoted value is redacted to its closing quote (or to the end of the line when it is never
closed), a YAML block (``|``) whole, a ``Cookie`` header to its end, a value after ``:`` to the end
of the line, a bare value after ``=`` to the next blank (a comma or semicolon glued to more of the
value does not end it: a Fly.io token holds commas). Patterns read at most 512 characters of a
value (so a scan that only steps over one stays linear); a value being redacted is then taken to
its real end, so a longer secret leaves no tail behind.
"""

from __future__ import annotations

import re

import re2

from orchestration_pipeline.lib.redaction.keys import _GLUED_SECRET, REDACTED  # noqa: F401 (re-exported)
from orchestration_pipeline.lib.redaction.rules import RULES, latin1_options

# The words a key may end with, one alternation (kept for the tests that check the vocabulary).
_SECRET_WORDS = "|".join(sorted(RULES.keys.words) + sorted(RULES.keys.pairs))
_GRAMMAR = RULES.grammar

# Bounded repeats keep every pattern linear on megabyte-long lines (no catastrophic backtracking).
_BEARER = re.compile(r"(?i)\b(bearer)\s+([A-Za-z0-9\-._~+/]{8,}=*)")
# The password runs to the last "@" of the authority, so one containing "@" (or "?", "#", "/") is
# redacted whole; "host:8080/path@x" (a port, then a path) is not a password.
_URL_PASSWORD = re.compile(
    r"(\b[A-Za-z][A-Za-z0-9+.\-]{0,31}://(?!\[)[^:/\s@\"']{0,256}:)(?!\[REDACTED\])(?!\d{1,5}(?:/|$|[?#][^@\s]{0,256}=))"
    r"(?=[^\s\"']{1,512}@)([^\s\"'/]{1,512}|[^\s\"'?#]{1,512})(@)(?!sha\d{1,3}:)(?=[^@\s\"'/?#]{0,256}(?:[/\s\"'?#]|$))"
)
# A value after "key=" or "key: ": quoted (to the matching quote, JSON-escaped quotes too, across
# lines; an unclosed quote runs to the end of the line), a YAML block (| or > then indented lines),
# or bare: after "=" to a blank, after ":" to the end of the line; a quote, "&", "|", a JSON escape
# and a "," or ";" before a blank end both ("password: a, next: b").
_QUOTED = (
    r"\"(?:[^\"\\]|\\[\s\S]){0,512}\""
    r"|\\\"(?:[^\"\\]|\\(?!\")){0,512}\\\""
    r"|\\\"(?:[^\"\\\n]|\\(?!\")){0,512}"
    r"|'[^']{0,512}'"
    r"|[\"'][^\n]{0,512}"
    r"|[|>][-+]?[ \t]*\n(?:[ \t]+[^\n]*(?:\n|$)){1,64}"
)
_GLUED_PUNCTUATION = r"""[,;](?=[^\s,;&|"'\\])"""
_BARE = rf"""(?:[^\s"'&|\\,;]|{_GLUED_PUNCTUATION}|\\(?![nrt"\\]))"""
_BARE_TO_LINE_END = rf"""(?:[^\n"'&|\\,;]|{_GLUED_PUNCTUATION}|\\(?![nrt"\\]))"""
_VALUE_AFTER_EQUALS = re.compile(rf"{_QUOTED}|(?!--[A-Za-z]){_BARE}" + "{1,512}")
_VALUE_AFTER_COLON = re.compile(rf"{_QUOTED}|(?!--[A-Za-z]){_BARE_TO_LINE_END}" + "{1,512}")
_FLAG_VALUE = re.compile(rf"{_QUOTED}|(?!-){_BARE}" + "{1,512}")
# The rest of a value longer than its pattern's bound (512 characters). The bound keeps the scan
# linear where a value is only stepped over (already redacted); a value being redacted is never
# scanned again, so it is taken to its end: no secret's tail is left behind.
_BARE_TAIL = re.compile(_BARE + "*+")
_COLON_TAIL = re.compile(_BARE_TO_LINE_END + "*+")
_LINE_TAIL = re.compile(r"[^\n]*+")
_QUOTE_TAILS = {
    '"': re.compile(r'(?:[^"\\\n]|\\.)*+"?'),
    "'": re.compile(r"[^'\n]*+'?"),
    '\\"': re.compile(r'(?:[^"\\\n]|\\(?!"))*+(?:\\")?'),
}
_VALUE_BOUND = 512
_SEPARATORS = "|".join(re.escape(s) for s in _GRAMMAR.separators)
_TYPES = "|".join(re.escape(t) for t in _GRAMMAR.types)
_HINTS = "|".join(re.escape(h) for h in RULES.keys.hints)
# A key and its separator, for a key-like word that holds a hint (also a Java -Dkey=value
# property); the value is matched after it only for a key that names a secret, so the scan goes on
# inside other values ("reason: password=…") and stays linear. Between key and separator: a
# closing quote (and bracket: $config['token'] .= "…"), a declared type (var password string = "…", token: str = "…"). A key then
# blanks then a quote ("password "x"") has no separator: "sep" is None.
_KV_SECRET = re.compile(
    r"(?:(?<=-D)|(?<=\s-)(?!D[A-Za-z_])|(?<=\A-)(?!D[A-Za-z_])|(?<=:)|(?<![\w.:-]))"
    rf"(?=[\w.-]{{0,127}}?(?i:{_HINTS}))(?P<key>[A-Za-z_][\w.-]{{0,127}}+)(?:\\?[\"'])?\]?"
    rf"(?:[ \t]{{0,32}}:?[ \t]{{0,32}}(?:{_TYPES})(?=[ \t]{{0,32}}:?=))?"
    rf"[ \t]{{0,32}}(?:(?P<sep>{_SEPARATORS})[ \t]{{0,32}}|(?<=[ \t])(?=\\?[\"']))"
)
# Where _KV_SECRET is worth trying, found by RE2 at C speed (on ASCII text): a run of key
# characters holding a hint, then what may stand between a key and its value. A superset of what
# _KV_SECRET matches (no boundary before the key, no bound on its length), so the Python pattern
# runs only there, not at every word of a line full of keys without a hint.
_HINT_RUN = rf"[\w.-]*(?i:{'|'.join(re2.escape(h) for h in RULES.keys.hints)})[\w.-]*"
KV_CANDIDATES = re2.compile(
    (
        rf"{_HINT_RUN}(?:\\?[\"'])?\]?(?:[ \t]*:?[ \t]*(?:{'|'.join(re2.escape(t) for t in _GRAMMAR.types)}))?"
        rf"[ \t]*(?:{'|'.join(re2.escape(s) for s in _GRAMMAR.separators)})"
        # password "x" (no separator) only as a line's first word, as _keyed takes it
        rf"|(?m:^)[ \t]*{_HINT_RUN}(?:\\?[\"'])?\]?[ \t]+\\?[\"']"
    ).encode("ascii"),
    latin1_options(case_sensitive=True, never_capture=True),
)
# A string prefix before a quoted value (b'…', u'…', f"…", C#'s @"…"), kept as it is.
_PREFIXES = "|".join(re.escape(p) for p in sorted(_GRAMMAR.string_prefixes, key=len, reverse=True))
_STRING_PREFIX = re.compile(rf"(?i:{_PREFIXES})(?=\\?[\"'])")
_PREFIX_ONLY = re.compile(rf"(?i:{_PREFIXES})")
# Bare values that are never secrets: flags and empties (automountServiceAccountToken: false),
# also closing a parenthesis: MySQL's "(using password: YES)", a repr's "Config(password=None)".
_PLAIN_WORD = re.compile(r"(?i)(?:true|false|null|none|yes|no)(?=[\s;&|,})\]\"']|$)")
# --password VALUE, --password=VALUE, and single-dash -vaultToken VALUE.
_FLAG_SECRET = re.compile(r"(?<![\w-])(?P<dashes>--?)(?P<key>[A-Za-z][\w-]{0,63})(?:=|[ \t]+)")
# Flags that never take a value although they name a secret (--no-password, --with-token).
_VALUELESS_FLAG = re.compile(r"(?i)^(?:no|with|without|ask|prompt|show|skip)[_-]")
# Authorization (and Proxy-Authorization, HTTP_AUTHORIZATION) under any scheme: a first word
# followed by a blank and more is the scheme (Basic, Token, Api-Token, SSWS), kept. The
# credential's closing brackets that it did not open are the text's ("{auth: Basic x}").
# A credential written as parameters: Token token="…", Digest username="…", response="…".
_AUTH_PARAM = r"""[\w-]{1,64}=(?:\\?"[^"\n\\]{0,4096}\\?"|[^\s;&"',\\]{1,4096})"""
_AUTH_HEADER = re.compile(
    r"(?i)((?<![A-Za-z])authorization\b(?:\\?[\"'])?\s{0,8}[:=]\s{0,8}\\?[\"']?"
    r"(?:[A-Za-z][\w.-]{0,31}[ \t]{1,8}(?=[^\s;&\"',}\\]))?+)(?!\[REDACTED\])"
    r"(?!(?:true|false|null|none|yes|no|enabled|disabled)(?=[\s;&,}\]\"']|$))"
    rf"((?:{_AUTH_PARAM}(?:[ \t]{{0,8}},[ \t]{{0,8}}{_AUTH_PARAM}){{0,16}}+)|[^\s;&\"',\\]++)"
)
_REST_OF_LINE = re.compile(r"[^\n]{1,2048}")
# XML: <add key="ClearTextPassword" value="…"/> (also name=…), and <password>…</password>.
_XML_PAIR = re.compile(
    r"(?i)\b(?:key|name)[ \t]{0,8}=[ \t]{0,8}(?P<q>\\?[\"'])(?P<name>[^\"'<>\\\n]{1,128})(?P=q)"
    r"[ \t]{1,8}value[ \t]{0,8}=[ \t]{0,8}(?P<vq>\\?[\"'])(?P<value>(?:(?!(?P=vq))[^<>\n]){0,4096})(?P=vq)"
)
_XML_ELEMENT = re.compile(
    r"<(?P<tag>[A-Za-z_][\w.:-]{0,127})(?:[ \t][^<>\n]{0,512})?>(?P<value>[^<\n]{1,4096})</(?P=tag)[ \t]{0,8}>"
)
# YAML's name/value pairs (Kubernetes env): "- name: DB_PASSWORD" then "value: …" on the next line.
_YAML_PAIR = re.compile(
    r"\bname:[ \t]{0,32}(?P<q>(?:\\?[\"'])?)(?P<name>[A-Za-z_][\w.-]{0,127})(?P=q)[ \t]{0,32}(?:\r?\n|(?:\\r)?\\n)"
    r"[ \t]{0,64}-?[ \t]{0,8}value:[ \t]{0,32}"
    r"(?P<value>\\?\"(?:[^\"\\\n]|\\(?!\")){0,4096}\\?\"|'[^'\n]{0,4096}'|(?:[^\n\\]|\\(?![nr\"])){1,4096})"
)
# A call with the key as its first argument: setProperty("db.password", "…"), set('token', '…').
_STRING_ARGUMENT = r"""\"(?:[^"\\\n]|\\.){0,4096}"|\\"(?:[^"\\\n]|\\(?!")){0,4096}\\"|'[^'\n]{0,4096}'"""
_CALL_ARGUMENT = re.compile(
    r"[(,][ \t]{0,8}(?P<q>\\?[\"'])(?P<name>[^\"'\\\n]{1,128})(?P=q)[ \t]{0,8}(?P<sep>,)[ \t]{0,8}"
    rf"(?P<value>{_STRING_ARGUMENT})"
)
# After a value: another string argument (then the value was a name: config.set("auth", "k", "v")).
_NEXT_ARGUMENT = re.compile(r"""[ \t]{0,8},[ \t]{0,8}\\?["']""")
# A setter with the key in its name: client.setApiKey("…"), set_password('…').
_SETTER = re.compile(
    rf"\bset_?(?P<name>[A-Za-z][A-Za-z0-9_]{{1,63}})\([ \t]{{0,8}}(?P<value>{_STRING_ARGUMENT})"
)
# A key and its value as separate arguments: csh's (and launchctl's) setenv NAME VALUE, and
# npm/yarn/pnpm's config set KEY VALUE (the key's last part after ":" names it:
# //registry.npmjs.org/:_authToken). The value follows, as after "=".
_SPACED_PAIR = re.compile(
    r"(?<![\w-])(?P<command>setenv|config[ \t]{1,32}set)[ \t]{1,32}(?:--?[\w-]{1,32}(?:=[^\s\"'\\]{0,128}+)?[ \t]{1,32}){0,4}"
    r"(?P<path>[^\s\"'\\=]{0,256}[/:])?(?P<key>[A-Za-z_][\w.-]{0,127}+)[ \t]{1,32}(?=[^\s=])"
)
# For raw text that is not valid JSON: a quoted key (any characters, escapes included) and its colon,
# then the value: a string (perhaps cut off), or a bare token.
# A key's opening quote never follows a backslash: starting at every \" of a long \"\"\"… run, each
# scanning 128 escapes ahead, was quadratic-like (3 s a megabyte); now the runs do not overlap.
_JSON_KEY = re.compile(r'(?<!\\)"((?:[^"\\]|\\.){1,128}+)"\s{0,8}:\s{0,8}')
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')
_BARE_VALUE = re.compile(r"[^,}\]\s\"]{1,512}")
_RAW_BARE_TAIL = re.compile(r"[^,}\]\s\"]*+")
_STRUCTURE = re.compile(r'["{}\[\]]')
_PAIR_NAMES = ("name", "key", "header")
# A header name as written in a [name, value] tuple: Authorization, Cookie, or dashed (X-Api-Key).
_HEADER_NAME = re.compile(
    r"(?i)(?:(?:proxy-)?authorization|cookie|set-cookie|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+)$"
)  # {"name": "Authorization", "value": "…"}
