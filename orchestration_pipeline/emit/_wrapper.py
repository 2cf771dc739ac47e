"""``command_wrapper``: a CLI entrypoint as one ``command_start``/``command_end`` pair."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from orchestration_pipeline.emit.writer import EventWriter

F = TypeVar("F", bound=Callable[..., Any])


def command_wrapper(
    target: EventWriter | str | os.PathLike[str] | Callable[[], EventWriter],
    *,
    name: str | None = None,
    source: str | None = None,
    session_id: str | None = None,
    task_id: str | None = None,
    **fields: Any,
) -> Callable[[F], F]:
    """Decorate a CLI entrypoint so that every call is a ``command_start``/``command_end`` pair.

    ``target`` is an :class:`EventWriter`, a zero-argument callable returning one, or a landing
    directory (a writer is then opened for the call and closed — published — when it returns or
    raises). ``command_end`` is emitted on return, on any exception, on ``SystemExit`` (its code)
    and on ``KeyboardInterrupt`` (130); the exception is re-raised unchanged. An int returned by
    the function (``sys.exit(main())`` style) is taken as the exit code.
    """
    if isinstance(target, EventWriter) or callable(target):
        pass
    elif not isinstance(target, str | os.PathLike):
        raise TypeError(
            "command_wrapper: pass an EventWriter, a callable returning one, or a landing directory"
        )

    def decorate(func: F) -> F:
        command = name or getattr(func, "__qualname__", None) or "command"

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            owned = None
            if isinstance(target, EventWriter):
                writer = target
            elif isinstance(target, str | os.PathLike):
                writer = owned = EventWriter(target, source=source or command, session_id=session_id)
            else:
                writer = target()
            try:
                with writer.command(command, task_id=task_id, **fields) as scope:
                    result = func(*args, **kwargs)
                    if isinstance(result, int) and not isinstance(result, bool):
                        scope.exit_code = result
                    return result
            finally:
                if owned is not None:
                    owned.close()

        return wrapper  # type: ignore[return-value]

    return decorate
