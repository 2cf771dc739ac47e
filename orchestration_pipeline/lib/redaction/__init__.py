"""Redaction of secrets before anything is stored: what to import from here.

``rules.toml`` holds what is a secret, as data (token rules, key vocabulary, assignment grammar,
placeholders), ``rules.py`` reads it, ``matcher.py`` compiles it into one linear-time RE2 scan
and the pre-check, ``keys.py`` judges keys and values, ``patterns.py`` and ``commands.py`` hold
the patterns of keyed values and command lines, ``text`` redacts free text, ``structured`` JSON
values and raw JSON lines, ``markers`` is the cheap pre-check that lets a line without any marker
skip the full path. Every function that redacts takes an optional ``counts`` Counter that it
increases by the redactions of each rule id.
"""

from orchestration_pipeline.lib.redaction.keys import REDACTED, is_secret_key
from orchestration_pipeline.lib.redaction.markers import (
    FORM_PATTERNS,
    SECRET_MARKERS,
    lines_with_markers,
    may_contain_secret,
)
from orchestration_pipeline.lib.redaction.structured import (
    redact_json_text,
    redact_raw_line,
    redact_value,
    redacted_copy,
)
from orchestration_pipeline.lib.redaction.text import redact_text

__all__ = [
    "FORM_PATTERNS",
    "REDACTED",
    "SECRET_MARKERS",
    "is_secret_key",
    "lines_with_markers",
    "may_contain_secret",
    "redact_json_text",
    "redact_raw_line",
    "redact_text",
    "redact_value",
    "redacted_copy",
]
