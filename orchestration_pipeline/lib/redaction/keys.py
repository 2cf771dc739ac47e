"""Which keys name a secret, and which values are no secret though a key says so (from ``rules.toml``)."""

from __future__ import annotations

import re
from functools import lru_cache

from orchestration_pipeline.lib.redaction.rules import RULES

REDACTED = "[REDACTED]"

_VOCABULARY = RULES.keys
# Every key the vocabulary accepts holds one of the hints (case-insensitively; Python's re also
# reads the Kelvin sign as "k" and the long s as "s"). Checked first, it spares the other keys
# the costly normalising: a megabyte of "x=1 " holds 260,000 keys.
SECRET_KEY_HINT = re.compile("(?i)" + "|".join(re.escape(h) for h in _VOCABULARY.hints))
_GLUED_SECRET = re.compile("(?i)(?:" + "|".join(re.escape(w) for w in _VOCABULARY.glued) + ")$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NUMBERED = re.compile(r"_?\d{1,4}$")
_PLACEHOLDER = re.compile("|".join(f"(?:{p})" for p in RULES.placeholders.patterns))
# What a key that names a secret only weakly (DB_PASS, HEROKU_KEY, GITHUB_LOGIN) may hold that is
# no secret: a number, a date or time, a flag.
_NOT_A_CREDENTIAL = re.compile(
    r"[-+]?\d{1,32}(?:\.\d{1,32})?|\d{4}-\d{2}-\d{2}(?:[T ][\d:.]{1,20}(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|(?i:true|false|null|none|yes|no|on|off|enabled|disabled)"
)

STRONG, WEAK, NAMING = "strong", "weak", "naming"
# A *_KEY may hold a name rather than a credential (ParameterKey: DbPassword, sort_key: created_at):
# letters and separators without a digit are a name.
_NAME = re.compile(r"[A-Za-z_][A-Za-z_.:/-]{0,127}")


def _words(key: str) -> list[str]:
    """A key's words: camelCase, "_", "-", "." and blanks split it; a trailing number is dropped."""
    key = _CAMEL.sub("_", key.strip())
    key = key.replace("-", "_").replace(" ", "_").replace(".", "_").lower()
    key = _NUMBERED.sub("", key)
    return [w for w in key.split("_") if w]


@lru_cache(maxsize=4096)
def secret_key_kind(key: str) -> str | None:
    """None when ``key`` names no secret; WEAK when only as a last word after others (DB_PASS,
    GITHUB_LOGIN), whose value must then look like a credential, NAMING for ``*_KEY`` (HEROKU_KEY),
    whose value may also be a name; STRONG otherwise."""
    if SECRET_KEY_HINT.search(key) is None:  # most keys: one C search, no normalising
        return None
    stripped = key.strip()
    if stripped in _VOCABULARY.exact:
        return STRONG
    words = _words(stripped)
    if not words or "_".join(words) in _VOCABULARY.not_secret:
        return None
    last = words[-1]
    if last in _VOCABULARY.words:
        return STRONG
    if len(words) >= 2:
        if f"{words[-2]}_{last}" in _VOCABULARY.pairs:
            return STRONG
        if last in _VOCABULARY.holders and words[-2] in _VOCABULARY.words:
            return STRONG
        if last in _VOCABULARY.prefixed_words:
            return NAMING if last == "key" else WEAK
    if _GLUED_SECRET.search(stripped):
        return STRONG
    return None


def is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret (``api_key``, ``GithubToken``, ``db-password``,
    ``DB_PASS``, ``HEROKU_KEY``, ``TOKEN2``, ``secret_value``), also written glued (``PGPASSWORD``,
    ``GITHUBTOKEN``), and ``SSHPASS`` (what ``sshpass -e`` reads; only so spelled)."""
    return secret_key_kind(key) is not None


def is_glued_only(key: str) -> bool:
    """The key is a secret only by a glued ending (``io.jsonwebtoken``), not by its words."""
    words = _words(key)
    return (
        bool(words) and words[-1] not in _VOCABULARY.words and _GLUED_SECRET.search(key.strip()) is not None
    )


@lru_cache(maxsize=4096)
def is_placeholder(value: str) -> bool:
    """A value that stands for a secret without being one: ``${VAR}``, ``$VAR``, ``<password>``,
    ``changeme``, ``***``, ``[REDACTED]`` (the rule file's [placeholders])."""
    return _PLACEHOLDER.fullmatch(value) is not None


def keeps_value(key: str, value: object, kind: str | None = None) -> bool:
    """A value under a secret key that is no secret: a placeholder; ``PWD`` holding a path (the
    working directory of an environment dump); a number, date or flag under a weak key; a name
    under a ``*_KEY``."""
    if isinstance(value, str):
        text = value.strip()
        if is_placeholder(text):
            return True
        if key.strip().lower() == "pwd" and text.startswith(("/", "~")):
            return True
    kind = kind or secret_key_kind(key)
    if kind == WEAK or kind == NAMING:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if not isinstance(value, str):
            return False
        text = value.strip()
        return _NOT_A_CREDENTIAL.fullmatch(text) is not None or (
            kind == NAMING and _NAME.fullmatch(text) is not None
        )
    return False
