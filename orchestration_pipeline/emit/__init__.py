"""The emit SDK: how orchestrators write events that ingestion accepts, cheaply and safely.

No database and no Dagster here (nor pydantic): importing this package is cheap.

    from orchestration_pipeline.emit import EventWriter, command_wrapper

    with EventWriter("/var/orch/landing", source="nightly-build", session_id="sess-2026-01-31") as w:
        with w.task("T-1", title="compile"):            # task_start now, task_end always
            with w.command("make", argv=["make", "-j8"]) as c:   # command_start / command_end
                c.exit_code = run_make()                # or raise: exit_code from the exception
            w.metric("warnings", 3, unit="count", target="linux")
            w.provider_selected("System", cache_hit=True)
            w.artifacts("out/**/*.xml")                 # one artifact_emit per file, with SHA-256
            w.decision("skipped the slow suite: no code changes", suite="e2e")

**Files.** An emit only queues the encoded line in memory. A background thread writes the queue
out as ``<source>.<utc>.<pid>.<counter>.<random>.jsonl.tmp`` in the landing directory, fsyncs it
and renames it to ``.jsonl`` (then fsyncs the directory) when the queue holds ``max_file_bytes``
(8 MiB), when its oldest event is ``max_file_age_s`` (60 s) old, and on ``flush()`` / ``close()``
/ interpreter exit (atexit; those write in the calling thread). Ingestion ignores ``*.tmp``, so it
never sees a half-written file, not even after a SIGKILL — which loses the events not yet
published instead (at most 60 s / 8 MiB of them).

**Never blocks, never breaks the caller.** An emit costs a few µs (field checks, ``json`` encoding,
a lock and a deque append; no file I/O). If the landing directory cannot be written (missing,
not a directory, disk full, rename refused), the events stay queued, at most
``max_buffered_events`` (100,000) / ``max_buffer_bytes`` (64 MiB); beyond that the oldest are
dropped and counted. Writing is retried every ``retry_interval_s`` (1 s) and on every flush; the
first file written afterwards ends with a ``decision`` event saying how many were dropped. The
first failure is reported once on stderr; ``close()`` reports on stderr any events it still could
not write (and returns False). Dropped events are reported by a ``decision`` event (stage
``emit``, ``payload.dropped_events``) that is written first, alone in a small file, before the
queued events are retried: a nearly full disk still receives it (the ``no_emitter_drops`` check
fails on it).

**Files are the owner's only.** Spool and landing files are created with mode 0600, whatever the
umask: they are as sensitive as the logs they come from. ``redact=True`` redacts secrets before
the line is written (payload values by key and by shape, and the free-text fields), with the
engine ingestion uses; it is off by default, and importing the SDK never loads that engine.

**Field errors raise.** Each helper checks its required fields and raises ValueError/TypeError
naming the field and the fix (a missing rationale, a non-numeric metric value, an unknown
provider): that is a programming error, raised at the call.

**Thread-safe.** One writer may be shared by threads; a ``task()`` block sets the default
``task_id`` for events emitted inside it, per thread (a context variable). After ``os.fork()``
the child starts with an empty spool of its own.

Public API
----------
``EventWriter(landing_dir, *, source=None, session_id=None, max_file_bytes=8 MiB,
max_file_age_s=60.0, max_buffered_events=100_000, max_buffer_bytes=64 MiB,
retry_interval_s=1.0, hash_limit_bytes=50 MiB, redact=False)``
    ``source`` defaults to the script name, ``session_id`` to a random UUID. Methods (each
    returns the event dict, or a list of them): ``task(task_id, title=None, *, stage=None,
    **fields)``, ``command(name, *, argv=None, task_id=None, stage=None, **fields)``,
    ``metric(name, value, *, unit=None, task_id=None, stage=None, **tags)``,
    ``provider_selected(provider, cache_hit, *, task_id=None, **tags)``,
    ``decision(rationale, *, task_id=None, stage=None, severity=None, **fields)``,
    ``error(stage, message, *, task_id=None, severity="error", **fields)``,
    ``policy_violation(host, file, policy, rule, *, task_id=None, severity="warning", **fields)``,
    ``artifact(path, *, task_id=None, stage=None, **fields)``, ``artifacts(glob, ...)``,
    ``agent_started`` / ``agent_progress`` / ``agent_completed`` / ``agent_conflict_detected`` /
    ``agent_paused`` / ``agent_error`` ``(agent_type, agent_name, task_description, *,
    project_id=None, task_id=None, stage=None, severity=<per type>, **fields)``,
    ``emit(event_type, payload=None, *, task_id, stage, severity, status, duration_ms)``,
    ``flush(timeout=10.0) -> bool``, ``close(timeout=10.0) -> bool``; properties ``pending``,
    ``dropped``, ``dropped_total``, ``redactions``, ``current_task_id``. Scopes: ``t.set(**fields)`` adds fields
    to the end event; ``c.exit_code = N`` reports a status without raising; ``c.command_id``.

``command_wrapper(target, *, name=None, source=None, session_id=None, task_id=None, **fields)``
    Decorator for CLI entrypoints; ``target`` is a writer, a callable returning one, or a landing
    directory. ``command_end`` is guaranteed on return, exception, ``SystemExit`` (its code) and
    ``KeyboardInterrupt`` (130); the exception is re-raised unchanged.

``emit_one(landing_dir, event_type, *, source, session_id, task_id=None, stage=None,
severity=None, status=None, duration_ms=None, payload=None, redact=False, **fields) -> Path``
    One event as its own complete ``.jsonl`` file (tmp + fsync + rename, mode 0600); for shell
    scripts and the ``orchestration-pipeline emit`` command (``--redact``). Payload fields come from ``payload`` and
    ``**fields``. Raises ValueError/TypeError for bad fields and OSError if it cannot write.

``PROVIDER_TYPES`` = ``{"Microsoft": 1, "System": 2}``; ``HASH_LIMIT_BYTES`` = 50 MiB.
"""

from orchestration_pipeline.emit._envelope import EVENT_TYPES
from orchestration_pipeline.emit._scopes import CommandScope, TaskScope, exit_code_of
from orchestration_pipeline.emit._wrapper import command_wrapper
from orchestration_pipeline.emit.oneshot import emit_one
from orchestration_pipeline.emit.writer import HASH_LIMIT_BYTES, PROVIDER_TYPES, EventWriter

__all__ = [
    "EVENT_TYPES",
    "HASH_LIMIT_BYTES",
    "PROVIDER_TYPES",
    "CommandScope",
    "EventWriter",
    "TaskScope",
    "command_wrapper",
    "emit_one",
    "exit_code_of",
]
