"""The redaction rules as data: ``rules.toml`` beside this module, read once and checked.

The file holds the key vocabulary, the assignment grammar, the placeholders, the rules implemented
in code (``[[structure]]``: listed for their ids, descriptions and examples) and the token rules
(``[[token]]``: a credential known by its form). :data:`RULES` is the file as loaded; a file that
does not hold together raises :class:`RuleFileError` naming the rule and the fix.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2

RULES_PATH = Path(__file__).with_name("rules.toml")
DEFAULT_BOUNDARY = "A-Za-z0-9_-"
_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_BOUNDARY = re.compile(r"(?:[A-Za-z0-9]-[A-Za-z0-9]|[A-Za-z0-9_~.+/=])*-?")  # a literal "-" last


class RuleFileError(ValueError):
    """The rule file does not hold together; the message names the rule and the fix."""


@dataclass(frozen=True)
class Examples:
    tp: tuple[str, ...]  # must be redacted (by this rule)
    fp: tuple[str, ...]  # must come through redaction unchanged


@dataclass(frozen=True)
class TokenRule:
    id: str
    description: str
    pattern: str  # RE2 syntax; a group named "secret" narrows what is replaced
    keywords: tuple[str, ...]  # lowercase; empty: the pattern is its own pre-check
    entropy: float | None
    boundary: str  # characters that may not touch a match, as inside [...]; "" for none
    examples: Examples

    @property
    def has_secret_group(self) -> bool:
        return "(?P<secret>" in self.pattern


@dataclass(frozen=True)
class StructureRule:
    id: str
    description: str
    input: str  # "text": examples go through redact_text; "json": through redact_value
    examples: Examples


@dataclass(frozen=True)
class KeyVocabulary:
    description: str
    words: frozenset[str]
    prefixed_words: frozenset[str]
    pairs: frozenset[str]
    holders: frozenset[str]
    glued: tuple[str, ...]
    not_secret: frozenset[str]
    exact: frozenset[str]
    hints: tuple[str, ...]
    examples: Examples


@dataclass(frozen=True)
class Grammar:
    description: str
    separators: tuple[str, ...]
    types: tuple[str, ...]
    string_prefixes: tuple[str, ...]
    examples: Examples


@dataclass(frozen=True)
class Placeholders:
    description: str
    patterns: tuple[str, ...]  # Python re syntax, each matched against a whole value
    examples: Examples


@dataclass(frozen=True)
class RuleSet:
    keys: KeyVocabulary
    grammar: Grammar
    placeholders: Placeholders
    structures: tuple[StructureRule, ...]
    tokens: tuple[TokenRule, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in (*self.structures, *self.tokens))


def latin1_options(*, case_sensitive: bool, never_capture: bool = False) -> re2.Options:
    """RE2 options for the scans: bytes read as Latin-1 (one byte, one character: any input is
    scanned in one pass, valid UTF-8 or not), room for large alternations in the DFA."""
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.case_sensitive = case_sensitive
    options.never_capture = never_capture
    options.max_mem = 64 << 20  # no fallback to the slower NFA for ~90 alternatives
    return options


def _strings(where: str, table: dict[str, Any], name: str, *, required: bool = True) -> tuple[str, ...]:
    value = table.get(name)
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise RuleFileError(f"{where}: '{name}' must be a list of non-empty strings")
    return tuple(value)


def _text(where: str, table: dict[str, Any], name: str) -> str:
    value = table.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RuleFileError(f"{where}: '{name}' is missing; give it a non-empty string")
    return value


def _examples(where: str, table: dict[str, Any]) -> Examples:
    examples = table.get("examples")
    if not isinstance(examples, dict):
        raise RuleFileError(
            f"{where}: 'examples' is missing; add examples.tp (texts it must redact) and examples.fp "
            "(texts that must come through unchanged), at least one of each"
        )
    for name, what in (("tp", "a text it must redact"), ("fp", "a text that must come through unchanged")):
        if not examples.get(name):
            raise RuleFileError(f"{where}: examples.{name} is missing or empty; add at least one, {what}")
    return Examples(_strings(where, examples, "tp"), _strings(where, examples, "fp"))


def _token_rule(index: int, table: dict[str, Any]) -> TokenRule:
    where = f"[[token]] #{index + 1} ({table.get('id', 'no id')!r})"
    rule_id = _text(where, table, "id")
    if not _ID.fullmatch(rule_id):
        raise RuleFileError(f"{where}: id must be lowercase words joined by '-' (like 'github-token')")
    pattern = _text(where, table, "pattern")
    keywords = _strings(where, table, "keywords")
    if any(k != k.lower() for k in keywords):
        raise RuleFileError(f"{where}: keywords are matched in any case; write them in lowercase")
    entropy = table.get("entropy")
    if entropy is not None and not (isinstance(entropy, (int, float)) and 0 < entropy < 8):
        raise RuleFileError(f"{where}: entropy is bits per character, a number between 0 and 8")
    boundary = table.get("boundary", DEFAULT_BOUNDARY)
    if not isinstance(boundary, str) or not _BOUNDARY.fullmatch(boundary):
        raise RuleFileError(
            f"{where}: boundary is a character class body such as 'A-Za-z0-9_-' (a literal '-' last), or ''"
        )
    try:
        compiled = re2.compile(pattern)
    except re2.error as exc:
        raise RuleFileError(
            f"{where}: the pattern is not valid RE2 syntax ({exc}); fix the pattern"
        ) from None
    secret = "(?P<secret>" in pattern
    if compiled.groups != int(secret) or (secret and compiled.groupindex.get("secret") != 1):
        raise RuleFileError(
            f"{where}: the only capturing group a pattern may have is (?P<secret>…); write the "
            "others as (?:…)"
        )
    return TokenRule(
        id=rule_id,
        description=_text(where, table, "description"),
        pattern=pattern,
        keywords=keywords,
        entropy=float(entropy) if entropy is not None else None,
        boundary=boundary,
        examples=_examples(where, table),
    )


def _structure_rule(index: int, table: dict[str, Any]) -> StructureRule:
    where = f"[[structure]] #{index + 1} ({table.get('id', 'no id')!r})"
    rule_id = _text(where, table, "id")
    if not _ID.fullmatch(rule_id):
        raise RuleFileError(f"{where}: id must be lowercase words joined by '-' (like 'url-password')")
    kind = table.get("input", "text")
    if kind not in ("text", "json"):
        raise RuleFileError(f"{where}: input is 'text' (the default) or 'json'")
    return StructureRule(rule_id, _text(where, table, "description"), kind, _examples(where, table))


def _keys(table: dict[str, Any]) -> KeyVocabulary:
    where = "[keys]"
    return KeyVocabulary(
        description=_text(where, table, "description"),
        words=frozenset(_strings(where, table, "words")),
        prefixed_words=frozenset(_strings(where, table, "prefixed_words")),
        pairs=frozenset(_strings(where, table, "pairs")),
        holders=frozenset(_strings(where, table, "holders")),
        glued=_strings(where, table, "glued"),
        not_secret=frozenset(_strings(where, table, "not_secret")),
        exact=frozenset(_strings(where, table, "exact")),
        hints=_strings(where, table, "hints"),
        examples=_examples(where, table),
    )


def _placeholders(table: dict[str, Any]) -> Placeholders:
    where = "[placeholders]"
    patterns = _strings(where, table, "patterns")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise RuleFileError(f"{where}: {pattern!r} is not a valid pattern ({exc}); fix it") from None
    return Placeholders(_text(where, table, "description"), patterns, _examples(where, table))


def load_rules(path: Path = RULES_PATH) -> RuleSet:
    """Read and check a rule file (by default the one shipped with the package)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    for section in ("keys", "grammar", "placeholders"):
        if not isinstance(data.get(section), dict):
            raise RuleFileError(f"{path}: the [{section}] table is missing")
    grammar = data["grammar"]
    rules = RuleSet(
        keys=_keys(data["keys"]),
        grammar=Grammar(
            description=_text("[grammar]", grammar, "description"),
            separators=_strings("[grammar]", grammar, "separators"),
            types=_strings("[grammar]", grammar, "types"),
            string_prefixes=_strings("[grammar]", grammar, "string_prefixes"),
            examples=_examples("[grammar]", grammar),
        ),
        placeholders=_placeholders(data["placeholders"]),
        structures=tuple(_structure_rule(i, t) for i, t in enumerate(data.get("structure", []))),
        tokens=tuple(_token_rule(i, t) for i, t in enumerate(data.get("token", []))),
    )
    seen: set[str] = set()
    for rule_id in rules.ids:
        if rule_id in seen:
            raise RuleFileError(f"{path}: the id {rule_id!r} is used twice; give each rule its own id")
        seen.add(rule_id)
    return rules


RULES = load_rules()
