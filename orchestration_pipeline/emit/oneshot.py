"""One event, one file: for shell scripts and the ``orchestration-pipeline emit`` command."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestration_pipeline.emit._envelope import (
    build_event,
    check_event,
    encode_line,
    require_bool,
    require_str,
)
from orchestration_pipeline.emit._spool import publish_lines

_counter = itertools.count(1)


def emit_one(
    landing_dir: str | os.PathLike[str],
    event_type: str,
    *,
    source: str,
    session_id: str,
    task_id: str | None = None,
    stage: str | None = None,
    severity: str | None = None,
    status: str | None = None,
    duration_ms: int | None = None,
    payload: Mapping[str, Any] | None = None,
    redact: bool = False,
    **fields: Any,
) -> Path:
    """Write a single event as its own complete ``.jsonl`` file, atomically; returns its path.

    ``payload`` and the keyword ``fields`` are merged into the event's payload (``fields`` win);
    for ``task_end``/``command_end`` a ``duration_ms`` given in one place (envelope or payload)
    is copied to the other.
    The event is checked like the writer's helpers do (ValueError/TypeError naming the field),
    stamped with a fresh ``event_id`` and ``occurred_at``, written to ``<name>.jsonl.tmp`` (mode
    0600), fsynced and renamed to ``<name>.jsonl``. With ``redact=True`` its payload and free-text
    fields (and ``source``, ``session_id``) are redacted first, as by ``EventWriter(redact=True)``.
    Unlike :class:`EventWriter`, an I/O failure raises :class:`OSError` (there is no buffer to keep
    the event in), and no ``.tmp`` is left behind.
    """
    require_str(str(event_type), "source", source, "name the producer, e.g. 'deploy.sh'")
    require_str(str(event_type), "session_id", session_id, "pass the run's session id")
    require_bool(str(event_type), "redact", redact)
    redactor = None
    if redact:  # imported only when asked for: the SDK stays light without it
        from orchestration_pipeline.emit._redact import SourceRedactor

        redactor = SourceRedactor()
        source, session_id = redactor.text(source), redactor.text(session_id)
    body = {**(payload or {}), **fields}
    if event_type in ("task_end", "command_end"):  # one duration serves both places
        if duration_ms is not None and "duration_ms" not in body:
            body["duration_ms"] = duration_ms
        elif duration_ms is None and type(body.get("duration_ms")) is int:
            duration_ms = body["duration_ms"]
    check_event(
        event_type,
        body,
        stage=stage,
        severity=severity,
        status=status,
        duration_ms=duration_ms,
        task_id=task_id,
    )
    event = build_event(
        event_type,
        body,
        source=source,
        session_id=session_id,
        task_id=task_id,
        stage=stage,
        severity=severity,
        status=status,
        duration_ms=duration_ms,
    )
    line = encode_line(event)
    if redactor is not None:
        event, line = redactor.line(event, line)
    directory = os.path.abspath(os.fspath(landing_dir))
    final = publish_lines(directory, source, next(_counter), [line])
    return Path(final)
