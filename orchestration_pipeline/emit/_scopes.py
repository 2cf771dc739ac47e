"""The task and command scopes of an ``EventWriter``: a start event now, an end event always."""

from __future__ import annotations

import sys
import time
from contextvars import Token
from typing import TYPE_CHECKING, Any

from orchestration_pipeline.emit._envelope import (
    merge_fields,
    new_event_id,
)

if TYPE_CHECKING:
    from orchestration_pipeline.emit.writer import EventWriter

_MESSAGE_LIMIT = 4000  # characters of an exception message kept in task_end / command_end


def exit_code_of(exc: BaseException | None) -> int:
    """The process exit status an exception stands for: SystemExit's code, 130 for Ctrl-C, else 1."""
    if exc is None:
        return 0
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return 0
        return int(code) if isinstance(code, int) else 1  # a message exits with status 1
    if isinstance(exc, KeyboardInterrupt):
        return 130
    subprocess = sys.modules.get("subprocess")  # if it was never imported, exc cannot be one of its errors
    if subprocess is not None and isinstance(exc, subprocess.CalledProcessError):
        return exc.returncode if isinstance(exc.returncode, int) and exc.returncode != 0 else 1
    return 1


def _describe(exc: BaseException) -> dict[str, str]:
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not hide the real failure
        message = f"<unprintable {name}>"
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT] + f"... [{len(message) - _MESSAGE_LIMIT} more characters]"
    return {"error_type": name, "error_message": message}


# What an end event sheds when it would be over the line limit: it is still written, as the
# guarantee says, with the error message cut and the names of what was left out.
_BULKY_END_FIELDS = ("title", "error_message")
_SLIM_MESSAGE_CHARS = 2000


class _Scope:
    __slots__ = ("_writer", "_start_payload", "_end_fields", "_started_ns", "_token", "task_id", "stage")

    _END_KEYS: frozenset[str] = frozenset()
    _kind = ""

    def __init__(
        self, writer: EventWriter, start_payload: dict[str, Any], task_id: str | None, stage: str | None
    ):
        self._writer = writer
        self._start_payload = start_payload
        self._end_fields: dict[str, Any] | None = None
        self._started_ns = 0
        self._token: Token[str | None] | None = None
        self.task_id = task_id
        self.stage = stage

    def set(self, **fields: Any) -> None:
        """Extra payload fields for the end event (e.g. rows=12)."""
        for key in fields:
            if key in self._END_KEYS:
                raise ValueError(
                    f"{self._kind}_end: {key!r} is set by the SDK — do not pass it to set(); "
                    "use a different field name"
                )
        if self._end_fields is None:
            self._end_fields = {}
        self._end_fields.update(fields)

    def _finish(self, event_type: str, payload: dict[str, Any], success: bool, duration: int) -> None:
        severity, status = ("success", "succeeded") if success else ("error", "failed")
        writer = self._writer
        try:
            if self._end_fields:
                try:
                    writer._emit(
                        event_type,
                        {**payload, **self._end_fields},
                        self.task_id,
                        self.stage,
                        severity,
                        status,
                        duration,
                    )
                    return
                except (TypeError, ValueError):  # the caller's extra fields cannot be encoded: drop them
                    payload["dropped_fields"] = sorted(self._end_fields)
            try:
                writer._emit(event_type, payload, self.task_id, self.stage, severity, status, duration)
            except ValueError:  # over the line limit (a huge title or message): the end still counts
                slim = {k: v for k, v in payload.items() if k not in _BULKY_END_FIELDS}
                if isinstance(payload.get("error_message"), str):
                    slim["error_message"] = payload["error_message"][:_SLIM_MESSAGE_CHARS]
                slim["dropped_fields"] = sorted(
                    {*payload.get("dropped_fields", ()), *(k for k in _BULKY_END_FIELDS if k in payload)}
                )
                writer._emit(event_type, slim, self.task_id, self.stage, severity, status, duration)
        except Exception as exc:  # the end event must never mask what happened in the block
            writer._spool._say(f"could not emit {event_type}: {exc!r}")


class TaskScope(_Scope):
    """``with writer.task("T-1", title="...") as t:`` — ``task_start`` now, ``task_end`` always."""

    __slots__ = ("title",)
    _END_KEYS = frozenset(
        {"title", "success", "duration_ms", "error_type", "error_message", "dropped_fields"}
    )
    _kind = "task"

    def __init__(self, writer: EventWriter, task_id: str, title: str | None, stage: str | None, fields: dict):
        payload: dict[str, Any] = {} if title is None else {"title": title}
        super().__init__(writer, merge_fields("task_start", payload, fields), task_id, stage)
        self.title = title

    def __enter__(self) -> TaskScope:
        writer = self._writer
        writer._emit("task_start", self._start_payload, self.task_id, self.stage, "info", "started", None)
        self._token = writer._task.set(self.task_id)
        self._started_ns = time.monotonic_ns()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        # __exit__ runs as the with-statement's ``finally``: on return, exception, SystemExit, Ctrl-C.
        duration = (time.monotonic_ns() - self._started_ns) // 1_000_000
        try:
            if self._token is not None:
                self._writer._task.reset(self._token)
        except (ValueError, RuntimeError):  # entered in another context; nothing to restore
            pass
        success = exc is None or (isinstance(exc, SystemExit) and exit_code_of(exc) == 0)
        payload: dict[str, Any] = {"success": success, "duration_ms": duration}
        if self.title is not None:
            payload["title"] = self.title
        if not success:
            payload.update(_describe(exc))  # type: ignore[arg-type]
        self._finish("task_end", payload, success, duration)
        return None  # the exception, if any, propagates unchanged


class CommandScope(_Scope):
    """``with writer.command("pytest") as c:`` — ``command_start``/``command_end`` with a command_id.

    Set ``c.exit_code = N`` inside the block to report a non-zero status without raising.
    """

    __slots__ = ("name", "command_id", "exit_code")
    _END_KEYS = frozenset(
        {
            "command_id",
            "command",
            "exit_code",
            "success",
            "duration_ms",
            "error_type",
            "error_message",
            "dropped_fields",
        }
    )
    _kind = "command"

    def __init__(
        self,
        writer: EventWriter,
        name: str,
        argv: list[str] | None,
        task_id: str | None,
        stage: str | None,
        fields: dict,
    ):
        self.name = name
        self.command_id = new_event_id()
        self.exit_code: int | None = None
        payload: dict[str, Any] = {"command_id": self.command_id, "command": name}
        if argv is not None:
            payload["argv"] = argv
        super().__init__(writer, merge_fields("command_start", payload, fields), task_id, stage)

    def __enter__(self) -> CommandScope:
        writer = self._writer
        if self.task_id is None:
            self.task_id = writer._task.get()
        writer._emit("command_start", self._start_payload, self.task_id, self.stage, "info", "started", None)
        self._started_ns = time.monotonic_ns()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        duration = (time.monotonic_ns() - self._started_ns) // 1_000_000
        chosen = self.exit_code
        if isinstance(chosen, bool) or not isinstance(chosen, int):
            chosen = None  # a non-int exit_code set by the caller is ignored, not fatal
        if exc is None:
            code = 0 if chosen is None else chosen
        elif isinstance(exc, SystemExit | KeyboardInterrupt) or (
            (sp := sys.modules.get("subprocess")) is not None and isinstance(exc, sp.CalledProcessError)
        ):
            code = exit_code_of(exc)
        else:
            code = chosen if chosen else 1
        success = code == 0
        payload: dict[str, Any] = {
            "command_id": self.command_id,
            "command": self.name,
            "exit_code": code,
            "duration_ms": duration,
            "success": success,
        }
        if exc is not None and not success:
            payload.update(_describe(exc))
        self._finish("command_end", payload, success, duration)
        return None  # the exception, if any, propagates unchanged
