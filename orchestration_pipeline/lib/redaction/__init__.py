"""Redaction of secrets before anything is stored: what to import from here.

``patterns`` holds the compiled patterns (and documents what they catch), ``text`` redacts free
text, ``structured`` JSON values and raw JSON lines, ``markers`` is the cheap pre-check that lets a
line without any marker skip the full path.
"""

from orchestration_pipeline.lib.redaction.markers import (
    FORM_PATTERNS,
    SECRET_MARKERS,
    lines_with_markers,
    may_contain_secret,
)
from orchestration_pipeline.lib.redaction.patterns import REDACTED
from orchestration_pipeline.lib.redaction.structured import (
    redact_json_text,
    redact_raw_line,
    redact_value,
    redacted_copy,
)
from orchestration_pipeline.lib.redaction.text import is_secret_key, redact_text

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
