"""``EventWriter``: the orchestrator's handle for emitting events.

Its task and command scopes are in ``_scopes``, ``command_wrapper`` in ``_wrapper``, redaction at
the source in ``_redact``.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
import stat
import sys
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration_pipeline.emit._envelope import (
    AGENT_SEVERITIES,
    build_event,
    check_event,
    encode_line,
    merge_fields,
    new_event_id,
    optional_str,
    require_bool,
    require_choice,
    require_int,
    require_number,
    require_str,
    require_word,
)
from orchestration_pipeline.emit._scopes import CommandScope, TaskScope
from orchestration_pipeline.emit._spool import MiB, Spool

if TYPE_CHECKING:
    from orchestration_pipeline.emit._redact import SourceRedactor

HASH_LIMIT_BYTES = 50 * MiB
PROVIDER_TYPES: Mapping[str, int] = {"Microsoft": 1, "System": 2}


def _default_source() -> str:
    argv0 = (getattr(sys, "argv", None) or [""])[0]
    return Path(argv0).stem or "python"


class EventWriter:
    """Emits envelope-valid events into ``landing_dir`` as atomically published ``.jsonl`` files.

    Every call is cheap (it checks the fields, encodes the line and queues it in memory; files
    are written, fsynced and renamed by a background thread), thread-safe, and never raises an
    I/O error into the caller: see :mod:`orchestration_pipeline.emit` for the guarantees. Field
    errors (a missing rationale, a non-numeric metric) raise ValueError/TypeError at once.

    With ``redact=True`` every event's payload and free-text fields are redacted (by the engine
    ingestion uses) before the line is queued, so no secret reaches the landing directory; it costs
    a decode and a redaction pass per event, and imports the engine when the writer is made.
    :attr:`redactions` counts the values redacted.

    Use as a context manager, or call :meth:`close`; an atexit hook publishes whatever is left.
    """

    def __init__(
        self,
        landing_dir: str | os.PathLike[str],
        *,
        source: str | None = None,
        session_id: str | None = None,
        max_file_bytes: int = 8 * MiB,
        max_file_age_s: float = 60.0,
        max_buffered_events: int = 100_000,
        max_buffer_bytes: int = 64 * MiB,
        retry_interval_s: float = 1.0,
        hash_limit_bytes: int = HASH_LIMIT_BYTES,
        redact: bool = False,
    ):
        require_bool("EventWriter", "redact", redact)
        self._redactor: SourceRedactor | None = None
        if redact:  # the redaction engine is imported only here: the SDK stays light without it
            from orchestration_pipeline.emit._redact import SourceRedactor

            self._redactor = SourceRedactor()
        self.source = require_str(
            "EventWriter",
            "source",
            source if source is not None else _default_source(),
            "name the orchestrator",
        )
        self.session_id = require_str(
            "EventWriter",
            "session_id",
            session_id if session_id is not None else new_event_id(),
            "pass the run's session id (or leave it out for a random one)",
        )
        if self._redactor is not None:  # once: they also name the files
            self.source = self._redactor.text(self.source)
            self.session_id = self._redactor.text(self.session_id)
        self.hash_limit_bytes = require_int("EventWriter", "hash_limit_bytes", hash_limit_bytes, minimum=0)
        self.landing_dir = Path(os.path.abspath(os.fspath(landing_dir)))
        self._task: ContextVar[str | None] = ContextVar(f"emit_task_{id(self):x}", default=None)
        self._spool = Spool(
            self.landing_dir,
            prefix=self.source,
            max_bytes=max_file_bytes,
            max_age_s=max_file_age_s,
            max_buffered_events=max_buffered_events,
            max_buffer_bytes=max_buffer_bytes,
            retry_interval_s=retry_interval_s,
            drop_notice=self._drop_notice,
        )

    # --- plumbing -----------------------------------------------------------------------------

    def _emit(
        self,
        event_type: str,
        payload: dict[str, Any],
        task_id: str | None,
        stage: str | None,
        severity: str | None,
        status: str | None,
        duration_ms: int | None,
    ) -> dict[str, Any]:
        if task_id is None:
            task_id = self._task.get()
        event = build_event(
            event_type,
            payload,
            source=self.source,
            session_id=self.session_id,
            task_id=task_id,
            stage=stage,
            severity=severity,
            status=status,
            duration_ms=duration_ms,
        )
        line = encode_line(event)
        if self._redactor is not None:
            event, line = self._redactor.line(event, line)
        self._spool.put(line)
        return event

    def _drop_notice(self, dropped: int, reason: str) -> bytes:
        """The ``decision`` reporting ``dropped`` events; written on its own, so it stays small."""
        spool = self._spool
        if reason:
            why = f"{spool.directory} could not be written ({reason})"
        else:  # no write had failed yet: a burst outran the writer thread
            reason = "events were emitted faster than they could be written"
            why = f"{reason} to {spool.directory}"
        payload = {
            "rationale": (
                f"dropped the {dropped} oldest events: {why}, and the in-memory buffer holds at most "
                f"{spool.max_buffered_events} events ({spool.max_buffer_bytes} bytes)"
            ),
            "dropped_events": dropped,
            "reason": reason,
            "buffer_limit_events": spool.max_buffered_events,
            "buffer_limit_bytes": spool.max_buffer_bytes,
        }
        event = build_event(
            "decision",
            payload,
            source=self.source,
            session_id=self.session_id,
            stage="emit",
            severity="warning",
        )
        return encode_line(event)

    def emit(
        self,
        event_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        stage: str | None = None,
        severity: str | None = None,
        status: str | None = None,
        duration_ms: int | None = None,
    ) -> dict[str, Any]:
        """Any event type, with its required fields checked; returns the event as written."""
        body = dict(payload or {})
        check_event(
            event_type,
            body,
            stage=stage,
            severity=severity,
            status=status,
            duration_ms=duration_ms,
            task_id=task_id,
        )
        return self._emit(event_type, body, task_id, stage, severity, status, duration_ms)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Publish everything emitted so far as ``.jsonl`` now; True when nothing is left unwritten.

        Events dropped earlier count as delivered once the decision event reporting them is
        published. Never raises; on failure the events stay queued and False is returned.
        """
        return self._spool.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Publish what is queued and stop the background thread; True when nothing is left unwritten.

        Events that still cannot be written are reported once on stderr. Emitting after close()
        still works: each event is then published at once, in its own file.
        """
        return self._spool.close(timeout)

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Events in memory, not yet written to a spool file."""
        return self._spool.pending

    @property
    def dropped(self) -> int:
        """Events dropped (buffer overflow) and not yet reported in a decision event."""
        return self._spool.dropped

    @property
    def dropped_total(self) -> int:
        """Events dropped (buffer overflow) over the writer's life."""
        return self._spool.dropped_total

    @property
    def redactions(self) -> int:
        """Values redacted at the source so far (always 0 unless made with ``redact=True``)."""
        return 0 if self._redactor is None else self._redactor.count

    @property
    def current_task_id(self) -> str | None:
        """The task_id of the innermost ``task()`` block in this thread/context, if any."""
        return self._task.get()

    # --- scopes -------------------------------------------------------------------------------

    def task(
        self, task_id: str, title: str | None = None, *, stage: str | None = None, **fields: Any
    ) -> TaskScope:
        """A block that emits ``task_start`` on entry and always ``task_end`` when it ends.

        Events emitted inside the block carry this ``task_id`` unless given another. On an
        exception ``task_end`` has ``success=false``, ``error_type`` and ``error_message``, and the
        exception propagates unchanged. ``t.set(**fields)`` adds fields to ``task_end``.
        """
        require_str("task_start", "task_id", task_id, "pass the task's id, e.g. 'T-42'")
        optional_str("task_start", "title", title)
        optional_str("task_start", "stage", stage)
        return TaskScope(self, task_id, title, stage, fields)

    def command(
        self,
        name: str,
        *,
        argv: Iterable[str] | None = None,
        task_id: str | None = None,
        stage: str | None = None,
        **fields: Any,
    ) -> CommandScope:
        """A block that emits ``command_start`` and always ``command_end`` (with ``exit_code``).

        exit_code is 0 on success; on an exception, SystemExit's code, a CalledProcessError's
        returncode, 130 for KeyboardInterrupt, else ``c.exit_code`` if set non-zero, else 1.
        """
        require_str("command_start", "command", name, "name the command, e.g. 'pytest'")
        optional_str("command_start", "task_id", task_id)
        optional_str("command_start", "stage", stage)
        args = None
        if argv is not None:
            if isinstance(argv, str | bytes):
                raise TypeError(
                    "command_start: argv must be a list of strings, not one string — pass shlex.split(cmd)"
                )
            args = [str(a) for a in argv]
        return CommandScope(self, name, args, task_id, stage, fields)

    # --- events -------------------------------------------------------------------------------

    def metric(
        self,
        name: str,
        value: int | float,
        *,
        unit: str | None = None,
        task_id: str | None = None,
        stage: str | None = None,
        **tags: Any,
    ) -> dict[str, Any]:
        """One ``metric`` event: ``name``, numeric ``value``, optional ``unit``, keyword ``tags``."""
        require_str("metric", "name", name, "name the metric, e.g. 'rows_inserted'")
        require_number("metric", "value", value)
        payload: dict[str, Any] = {"name": name, "value": value}
        if unit is not None:
            payload["unit"] = require_str("metric", "unit", unit, "pass a unit such as 'ms', or leave it out")
        if tags:
            payload["tags"] = tags
        return self._emit("metric", payload, task_id, stage, None, None, None)

    def provider_selected(
        self, provider: str, cache_hit: bool, *, task_id: str | None = None, **tags: Any
    ) -> list[dict[str, Any]]:
        """The metrics ``provider_type`` (Microsoft=1, System=2) and ``provider_cache_hit`` (1/0)."""
        accepted = ", ".join(f"{name!r} ({code})" for name, code in PROVIDER_TYPES.items())
        canonical = next(
            (
                name
                for name in PROVIDER_TYPES
                if isinstance(provider, str) and provider.strip().lower() == name.lower()
            ),
            None,
        )
        if canonical is None:
            raise ValueError(f"provider_selected: unknown provider {provider!r}; accepted values: {accepted}")
        require_bool("provider_selected", "cache_hit", cache_hit)
        tags = {"provider": canonical, **tags}
        return [
            self.metric("provider_type", PROVIDER_TYPES[canonical], task_id=task_id, **tags),
            self.metric("provider_cache_hit", 1 if cache_hit else 0, task_id=task_id, **tags),
        ]

    def decision(
        self,
        rationale: str,
        *,
        task_id: str | None = None,
        stage: str | None = None,
        severity: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A ``decision`` with its (non-empty) ``rationale`` and any extra fields."""
        require_str("decision", "rationale", rationale, "say why the decision was made")
        optional_str("decision", "stage", stage)
        if severity is not None:
            require_word("decision", "severity", severity)
        payload = merge_fields("decision", {"rationale": rationale}, fields)
        return self._emit("decision", payload, task_id, stage, severity, None, None)

    def error(
        self,
        stage: str,
        message: str,
        *,
        task_id: str | None = None,
        severity: str = "error",
        **fields: Any,
    ) -> dict[str, Any]:
        """An ``error`` in ``stage``; ingestion groups repeats by stage + normalised message."""
        require_str("error", "stage", stage, "name the stage that failed, e.g. 'db_insert'")
        require_str("error", "message", message, "say what went wrong")
        require_word("error", "severity", severity)
        payload = merge_fields("error", {"message": message}, fields)
        return self._emit("error", payload, task_id, stage, severity, None, None)

    def policy_violation(
        self,
        host: str,
        file: str,
        policy: str,
        rule: str,
        *,
        task_id: str | None = None,
        severity: str = "warning",
        **fields: Any,
    ) -> dict[str, Any]:
        """A ``policy_violation`` naming host, file, policy and rule (all required, non-empty)."""
        for field, value in (("host", host), ("file", file), ("policy", policy), ("rule", rule)):
            require_str("policy_violation", field, value, "the policy_violations_complete check needs it")
        require_word("policy_violation", "severity", severity)
        payload = merge_fields(
            "policy_violation", {"host": host, "file": file, "policy": policy, "rule": rule}, fields
        )
        return self._emit("policy_violation", payload, task_id, None, severity, None, None)

    def artifact(
        self,
        path: str | os.PathLike[str],
        *,
        task_id: str | None = None,
        stage: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """One ``artifact_emit`` with the file's absolute path, size and SHA-256.

        A file over ``hash_limit_bytes`` (50 MiB) is not hashed: the event carries
        ``hash_skipped_reason`` and a ``decision`` event says why. Hashing reads the file in the
        caller. A missing path or a directory raises (emit after the file is written).
        """
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"artifact_emit: path must be a str or os.PathLike, got {type(path).__name__}")
        where = os.path.abspath(os.fspath(path))
        try:
            info = os.stat(where)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"artifact_emit: no such file {where} — emit after the file is written"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(
                f"artifact_emit: {where} is not a regular file — use artifacts(glob) for many files"
            )
        size = info.st_size
        payload: dict[str, Any] = {"path": where, "size_bytes": size}
        skipped = None
        if size > self.hash_limit_bytes:
            skipped = f"file is {size} bytes, over the {self.hash_limit_bytes}-byte hashing limit"
            payload["hash_skipped_reason"] = skipped
        else:
            try:
                with open(where, "rb") as handle:
                    payload["sha256"] = hashlib.file_digest(handle, "sha256").hexdigest()
            except OSError as exc:
                payload["hash_skipped_reason"] = f"could not read the file to hash it: {exc}"
        merge_fields("artifact_emit", payload, fields)
        event = self._emit("artifact_emit", payload, task_id, stage, None, None, None)
        if skipped is not None:
            self.decision(
                f"did not hash artifact {where}: {skipped}; hashing it would stall the caller",
                task_id=task_id,
                stage=stage,
                artifact_path=where,
                artifact_event_id=event["event_id"],
                size_bytes=size,
                hash_limit_bytes=self.hash_limit_bytes,
            )
        return event

    def artifacts(
        self,
        pattern: str | os.PathLike[str],
        *,
        task_id: str | None = None,
        stage: str | None = None,
        **fields: Any,
    ) -> list[dict[str, Any]]:
        """One ``artifact_emit`` per regular file matching the glob ``pattern`` (``**`` recurses)."""
        if not isinstance(pattern, str | os.PathLike):
            raise TypeError(
                f"artifact_emit: pattern must be a str or os.PathLike, got {type(pattern).__name__}"
            )
        matches = sorted(p for p in _glob.glob(os.fspath(pattern), recursive=True) if os.path.isfile(p))
        return [self.artifact(p, task_id=task_id, stage=stage, **fields) for p in matches]

    # --- agent activity -----------------------------------------------------------------------

    def _agent(
        self,
        event_type: str,
        status: str,
        severity: str,
        agent_type: str,
        agent_name: str,
        task_description: str,
        project_id: str | None,
        task_id: str | None,
        stage: str | None,
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        require_str(event_type, "agent_type", agent_type, "name the kind of agent, e.g. 'coder'")
        require_str(event_type, "agent_name", agent_name, "name the agent instance")
        require_str(
            event_type, "task_description", task_description, "describe the agent's task", empty_ok=True
        )
        optional_str(event_type, "project_id", project_id)
        optional_str(event_type, "stage", stage)
        require_choice(event_type, "severity", severity, AGENT_SEVERITIES)
        payload: dict[str, Any] = {
            "agent_type": agent_type,
            "agent_name": agent_name,
            "task_description": task_description,
        }
        if project_id is not None:
            payload["project_id"] = project_id
        merge_fields(event_type, payload, fields)
        return self._emit(event_type, payload, task_id, stage, severity, status, None)

    def agent_started(
        self,
        agent_type: str,
        agent_name: str,
        task_description: str,
        *,
        project_id: str | None = None,
        task_id: str | None = None,
        stage: str | None = None,
        severity: str = "info",
        **fields: Any,
    ) -> dict[str, Any]:
        """``agent.started`` (status started)."""
        return self._agent(
            "agent.started", "started", severity, agent_type, agent_name, task_description, project_id, task_id,
            stage, fields,
        )  # fmt: skip

    def agent_progress(
        self,
        agent_type: str,
        agent_name: str,
        task_description: str,
        *,
        project_id: str | None = None,
        task_id: str | None = None,
        stage: str | None = None,
        severity: str = "info",
        **fields: Any,
    ) -> dict[str, Any]:
        """``agent.progress`` (status in_progress); pass e.g. ``percent=40`` as a field."""
        return self._agent(
            "agent.progress", "in_progress", severity, agent_type, agent_name, task_description, project_id,
            task_id, stage, fields,
        )  # fmt: skip

    def agent_completed(
        self,
        agent_type: str,
        agent_name: str,
        task_description: str,
        *,
        project_id: str | None = None,
        task_id: str | None = None,
        stage: str | None = None,
        severity: str = "success",
        **fields: Any,
    ) -> dict[str, Any]:
        """``agent.completed`` (status completed)."""
        return self._agent(
            "agent.completed", "completed", severity, agent_type, agent_name, task_description, project_id,
            task_id, stage, fields,
        )  # fmt: skip

    def agent_conflict_detected(
        self,
        agent_type: str,
        agent_name: str,
        task_description: str,
        *,
        project_id: str | None = None,
        task_id: str | None = None,
        stage: str | None = None,
        severity: str = "warning",
        **fields: Any,
    ) -> dict[str, Any]:
        """``agent.conflict_detected`` (status conflict)."""
        return self._agent(
            "agent.conflict_detected", "conflict", severity, agent_type, agent_name, task_description,
            project_id, task_id, stage, fields,
        )  # fmt: skip

    def agent_paused(
        self,
        agent_type: str,
        agent_name: str,
        task_description: str,
        *,
        project_id: str | None = None,
        task_id: str | None = None,
        stage: str | None = None,
        severity: str = "info",
        **fields: Any,
    ) -> dict[str, Any]:
        """``agent.paused`` (status paused)."""
        return self._agent(
            "agent.paused", "paused", severity, agent_type, agent_name, task_description, project_id, task_id,
            stage, fields,
        )  # fmt: skip

    def agent_error(
        self,
        agent_type: str,
        agent_name: str,
        task_description: str,
        *,
        project_id: str | None = None,
        task_id: str | None = None,
        stage: str | None = None,
        severity: str = "error",
        **fields: Any,
    ) -> dict[str, Any]:
        """``agent.error`` (status failed); pass e.g. ``message=...`` as a field."""
        return self._agent(
            "agent.error", "failed", severity, agent_type, agent_name, task_description, project_id, task_id,
            stage, fields,
        )  # fmt: skip
