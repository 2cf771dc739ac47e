"""Producers' own status and severity words, and what they mean to the pipeline.

Outside the ``agent.*`` events (which keep their enums), ``status`` and ``severity`` are whatever
word the producer writes: ``ok``, ``SUCCESS``, ``failure``, ``upstream_failed``. Ingestion
stores the word as given (trimmed; see :func:`check_word`). Where the pipeline needs a meaning
(the task projection, activity statistics) a synonym map turns the word into one of
:data:`STATUS_MEANINGS` or :data:`SEVERITY_MEANINGS`; a word the map does not know has no
meaning, changes no task status, and is counted per producer in the ingest summary so that the
map can be extended.

Words are compared with :func:`fold_word`: ASCII letters without case, and spaces, hyphens and
underscores ignored (``In-Progress`` = ``in_progress`` = ``InProgress``). The SQL side folds the
stored word the same way (:func:`meaning_sql`), whatever the database's locale.

The defaults are data, in ``status_words.json`` beside this module (meaning → words). Each of
``ORCH_STATUS_SYNONYMS`` and ``ORCH_SEVERITY_SYNONYMS`` adds to them: a JSON object
``{"word": "meaning"}``, or the path of a file holding one; a word mapped to ``null`` is removed
from the defaults.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchestration_pipeline.errors import ConfigError

MAX_WORD_CHARS = 64  # a longer status or severity word is quarantined
STATUS_MEANINGS = ("pending", "running", "blocked", "succeeded", "failed", "cancelled", "skipped")
SEVERITY_MEANINGS = ("debug", "info", "success", "warning", "error", "critical")
STATUS_SYNONYMS_ENV = "ORCH_STATUS_SYNONYMS"
SEVERITY_SYNONYMS_ENV = "ORCH_SEVERITY_SYNONYMS"
DEFAULTS_FILE = Path(__file__).with_name("status_words.json")

#: What the task projection records for a status word's meaning, per task event type. A
#: ``task_start`` whose word says it went well (``ok``) means the task is running; ``skipped`` has
#: no projection status (the Tasks DB stays the authority for it), so such an event changes none.
PROJECTION_STATUS = {
    "task_start": {
        "pending": "pending",
        "running": "running",
        "blocked": "blocked",
        "succeeded": "running",
        "failed": "failed",
        "cancelled": "cancelled",
    },
    "task_end": {
        "pending": "pending",
        "running": "running",
        "blocked": "blocked",
        "succeeded": "succeeded",
        "failed": "failed",
        "cancelled": "cancelled",
    },
}

_IGNORED = " -_"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_FOLD = str.maketrans(_UPPER, _LOWER, _IGNORED)


def fold_word(word: str) -> str:
    """The form words are compared in: ASCII lower case, without spaces, hyphens or underscores."""
    return word.translate(_FOLD)


def meaning_sql(column: str, param: str) -> str:
    """SQL for the meaning of the word in ``column``, looked up in the jsonb parameter ``param``
    (a :meth:`WordMap.as_json` map): folded exactly as :func:`fold_word` folds, NULL when unknown."""
    return f"(%({param})s::jsonb ->> translate({column}, '{_UPPER}{_IGNORED}', '{_LOWER}'))"


class WordError(ValueError):
    """A status or severity value that cannot be stored; the message names the limit."""


def check_word(value: Any, name: str) -> str:
    """``value`` trimmed, when it is a storable producer's word: a string of 1 to 64 characters
    after trimming whitespace. Raises :class:`WordError` naming the limit otherwise."""
    if not isinstance(value, str):
        raise WordError(
            f"{name} must be a string (a word of 1 to {MAX_WORD_CHARS} characters), got {type(value).__name__}"
        )
    word = value.strip()
    if not word:
        raise WordError(
            f"{name} is empty after trimming whitespace — leave it out or send a word of 1 to "
            f"{MAX_WORD_CHARS} characters"
        )
    if len(word) > MAX_WORD_CHARS:
        raise WordError(
            f"{name} is {len(word)} characters after trimming; the limit is {MAX_WORD_CHARS} — send a "
            f"short word (e.g. 'ok', 'failed') and put details in payload"
        )
    return word


@dataclass(frozen=True)
class WordMap:
    """Folded words → meanings (one of ``meanings``)."""

    meanings: tuple[str, ...]
    words: Mapping[str, str]

    def meaning(self, word: str | None) -> str | None:
        """The meaning of ``word``; None when it is None or the map does not know it."""
        return None if word is None else self.words.get(fold_word(word))

    def merged(self, overrides: Mapping[str, Any], origin: str) -> WordMap:
        """These words with ``overrides`` (``{"word": "meaning" or null}``) applied; an entry
        that is not a word and a meaning raises :class:`ConfigError` naming ``origin``."""
        words = dict(self.words)
        for word, meaning in overrides.items():
            try:
                folded = fold_word(check_word(word, "a word"))
            except WordError as exc:
                raise ConfigError(f"{origin}: {exc}") from None
            if not folded:
                raise ConfigError(f"{origin}: the word {word!r} has no letters — name a status word")
            if meaning is None:
                words.pop(folded, None)
            elif meaning not in self.meanings:
                raise ConfigError(
                    f"{origin}: {word!r} maps to {meaning!r}, which is not a meaning; use one of "
                    f"{', '.join(self.meanings)} (or null to forget the word)"
                )
            else:
                words[folded] = meaning
        return WordMap(self.meanings, MappingProxyType(words))

    def as_json(self, translate: Mapping[str, str] | None = None) -> dict[str, str]:
        """The map as ``{folded word: meaning}`` for :func:`meaning_sql`; with ``translate``, each
        meaning replaced by ``translate[meaning]`` and words whose meaning it lacks left out."""
        if translate is None:
            return dict(self.words)
        return {word: translate[m] for word, m in self.words.items() if m in translate}


@dataclass(frozen=True)
class StatusWords:
    """The synonym maps of status and severity words."""

    status: WordMap
    severity: WordMap

    def projection_params(self) -> dict[str, dict[str, str]]:
        """The jsonb parameters ``start_words`` and ``end_words`` of the projector's fold."""
        return {
            "start_words": self.status.as_json(PROJECTION_STATUS["task_start"]),
            "end_words": self.status.as_json(PROJECTION_STATUS["task_end"]),
        }


def _defaults() -> StatusWords:
    data = json.loads(DEFAULTS_FILE.read_text(encoding="utf-8"))
    maps = []
    for kind, meanings in (("status", STATUS_MEANINGS), ("severity", SEVERITY_MEANINGS)):
        words = {word: meaning for meaning, listed in data[kind].items() for word in listed}
        maps.append(WordMap(meanings, MappingProxyType({})).merged(words, str(DEFAULTS_FILE)))
    return StatusWords(*maps)


DEFAULT_STATUS_WORDS = _defaults()


def _overrides(variable: str, value: str) -> Mapping[str, Any]:
    """The ``{"word": "meaning"}`` object an environment variable holds, inline or in a file."""
    example = '{"okay-ish": "succeeded"}' if variable == STATUS_SYNONYMS_ENV else '{"WARN": "warning"}'
    fix = f"set {variable} to a JSON object such as {example}, or to the path of a file holding one"
    text, origin = value, variable
    if not value.lstrip().startswith(("{", "[")):  # else the path of a file
        path = Path(value).expanduser()
        origin = f"{variable} ({path})"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"{origin}: cannot read the file ({reason}) — {fix}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{origin}: not valid JSON ({exc}) — {fix}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a JSON object, got {type(data).__name__} — {fix}")
    return data


@lru_cache(maxsize=8)
def _configured(status_value: str | None, severity_value: str | None) -> StatusWords:
    status, severity = DEFAULT_STATUS_WORDS.status, DEFAULT_STATUS_WORDS.severity
    if status_value and status_value.strip():
        origin = STATUS_SYNONYMS_ENV
        status = status.merged(_overrides(origin, status_value), origin)
    if severity_value and severity_value.strip():
        origin = SEVERITY_SYNONYMS_ENV
        severity = severity.merged(_overrides(origin, severity_value), origin)
    return StatusWords(status, severity)


def configured_status_words(environ: Mapping[str, str] | None = None) -> StatusWords:
    """The defaults with ``ORCH_STATUS_SYNONYMS`` and ``ORCH_SEVERITY_SYNONYMS`` applied.

    Raises :class:`ConfigError` naming the variable when one is not a readable JSON object of
    words and meanings. (A file is read once per process and value.)
    """
    env = os.environ if environ is None else environ
    return _configured(env.get(STATUS_SYNONYMS_ENV), env.get(SEVERITY_SYNONYMS_ENV))


# --- unknown words, counted per producer -----------------------------------------------------

NO_SOURCE = "(no source)"
OTHER_WORDS = "(other words)"
_MAX_PAIRS = 10_000  # distinct (source, word) pairs kept; more are summed per source under OTHER_WORDS


@dataclass
class UnknownStatusWords:
    """How often each producer (``source``) wrote a status word the synonym map does not know.

    Bounded: past ``max_pairs`` distinct (source, word) pairs, further new words of a source are
    summed under ``(other words)``, so a producer writing a new word on every line costs no memory.
    """

    words: StatusWords = field(default_factory=configured_status_words)
    max_pairs: int = _MAX_PAIRS
    counts: Counter = field(default_factory=Counter)

    def add(self, seen: Mapping[tuple[str | None, str], int]) -> None:
        """Count the unknown words among ``seen``: lines per (source, status word as written)."""
        meaning = self.words.status.meaning
        counts = self.counts
        for (source, word), n in seen.items():
            if meaning(word) is not None:
                continue
            key = (source, word)
            if key not in counts and len(counts) >= self.max_pairs:
                key = (source, None)
            counts[key] += n

    def update(self, other: UnknownStatusWords) -> None:
        """Add another count (of the same words) to this one."""
        for (source, word), n in other.counts.items():
            key = (source, word)
            if word is not None and key not in self.counts and len(self.counts) >= self.max_pairs:
                key = (source, None)
            self.counts[key] += n

    def clear(self) -> None:
        self.counts.clear()

    def as_dict(self, per_source: int = 20) -> dict[str, dict[str, int]]:
        """``{source: {word: lines}}``, each source's most frequent ``per_source`` words first and
        the rest summed under ``(other words)``; sources without one are under ``(no source)``."""
        by_source: dict[str, Counter] = {}
        for (source, word), n in self.counts.items():
            by_source.setdefault(NO_SOURCE if source is None else source, Counter())[
                OTHER_WORDS if word is None else word
            ] += n
        out: dict[str, dict[str, int]] = {}
        for source in sorted(by_source):
            words = by_source[source]
            other = words.pop(OTHER_WORDS, 0)
            ranked = sorted(words.items(), key=lambda item: (-item[1], item[0]))
            shown = dict(ranked[:per_source])
            other += sum(n for _, n in ranked[per_source:])
            if other:
                shown[OTHER_WORDS] = other
            out[source] = shown
        return out
