"""Redaction at the source: ``EventWriter(..., redact=True)`` and ``emit_one(..., redact=True)``.

The secrets are found by the pipeline's own engine, :mod:`orchestration_pipeline.lib.redaction`,
the one ingestion applies before anything is stored. It is imported when the first redacting
writer is made, never by ``import orchestration_pipeline.emit``: a producer that does not redact
pays nothing for it.

What is redacted: every payload value (by key, e.g. ``password``, and by shape, e.g. a token in
a message or in an argv list) and the envelope's free-text fields (``task_id``, ``stage``,
``status``, ``severity``; ``source`` and ``session_id`` once, when the writer is made, since they
also name the files). The ids, the type and the time are left as they are. The caller's own
objects are never changed: the event is redacted as the JSON it is written as.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from orchestration_pipeline.emit._envelope import encode_line

FREE_TEXT_FIELDS = ("task_id", "stage", "status", "severity")


class SourceRedactor:
    """Redacts encoded events before they are queued; counts what it redacted (thread-safe)."""

    def __init__(self) -> None:
        from orchestration_pipeline.lib.redaction import redact_text, redact_value

        self._redact_text: Callable[[str], tuple[str, int]] = redact_text
        self._redact_value: Callable[[Any], tuple[Any, int]] = redact_value
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        """Values redacted so far."""
        return self._count

    def _counted(self, count: int) -> None:
        if count:
            with self._lock:
                self._count += count

    def text(self, value: str) -> str:
        """``value`` with its secrets redacted (for the writer's ``source`` and ``session_id``)."""
        redacted, count = self._redact_text(value)
        self._counted(count)
        return redacted

    def line(self, event: dict[str, Any], line: bytes) -> tuple[dict[str, Any], bytes]:
        """The event and its encoded ``line``, redacted: the same objects when nothing was secret.

        The line is decoded again (so the caller's dicts and lists are left alone, and values JSON
        cannot hold are already text), redacted, and encoded again only when something changed.
        """
        written = json.loads(line)
        count = 0
        for field in FREE_TEXT_FIELDS:
            value = written.get(field)
            if isinstance(value, str):
                written[field], n = self._redact_text(value)
                count += n
        written["payload"], n = self._redact_value(written.get("payload", {}))
        count += n
        if not count:
            return event, line
        self._counted(count)
        return written, encode_line(written)
