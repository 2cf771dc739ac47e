"""A thread-safe spool of JSON lines that never blocks or breaks its caller.

:meth:`Spool.put` only appends the line to an in-memory queue (no file I/O). A background
thread turns the queue into files: when it holds ``max_bytes``, when its oldest line is
``max_age_s`` old, and on :meth:`Spool.flush` / :meth:`Spool.close` (which do it in the calling
thread), a batch of lines is written to ``<stem>.jsonl.tmp``, fsynced, renamed to
``<stem>.jsonl`` and the directory fsynced. Ingestion ignores ``*.tmp``, so it sees whole files or
nothing — also after a SIGKILL, which can only leave a ``.tmp`` behind. Batches are taken and
written one at a time (under ``_io``), so the queue stays in order even when a write fails.

Failures (directory missing or not writable, disk full, rename refused) are never raised: the
batch goes back to the front of the queue, which is bounded by ``max_buffered_events`` and
``max_buffer_bytes`` (beyond them the oldest lines are dropped and counted), and writing is
retried every ``retry_interval_s`` and on every flush. The first failure is reported once on
stderr. Lines dropped are reported by a notice line (built by the ``drop_notice`` callback): each
attempt publishes it first, alone in a small file of its own, before the batch is retried, so a
directory that still takes a few hundred bytes (a nearly full disk) receives the notice although
it refuses the batch.

Files are created readable and writable by their owner only (mode 0600, whatever the umask):
they hold what the producer logged, secrets included unless it redacts at the source.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing.util
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

from orchestration_pipeline.emit._envelope import file_stem

MiB = 1024 * 1024
_WRITE_CHUNK = 1 * MiB  # lines are joined into chunks this big: few syscalls, no 8 MiB copy
FILE_MODE = 0o600  # spool and landing files: as sensitive as the logs they come from

_live: set[Spool] = set()
_live_lock = threading.Lock()


class Spool:
    """Lines in, whole ``.jsonl`` files out. See the module docstring for the guarantees."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        prefix: str,
        max_bytes: int = 8 * MiB,
        max_age_s: float = 60.0,
        max_buffered_events: int = 100_000,
        max_buffer_bytes: int = 64 * MiB,
        retry_interval_s: float = 1.0,
        drop_notice: Callable[[int, str], bytes] | None = None,
        stderr_label: str = "orchestration_pipeline.emit",
    ):
        for name, value in (
            ("max_bytes", max_bytes),
            ("max_buffered_events", max_buffered_events),
            ("max_buffer_bytes", max_buffer_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, value in (("max_age_s", max_age_s), ("retry_interval_s", retry_interval_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.max_age_s = float(max_age_s)
        self.max_buffered_events = max_buffered_events
        self.max_buffer_bytes = max_buffer_bytes
        self.retry_interval_s = float(retry_interval_s)
        # wake the writer thread early enough that a healthy spool never reaches the bounds
        self._wake_bytes = min(max_bytes, max(1, max_buffer_bytes // 2))
        self._wake_lines = max(1, max_buffered_events // 2)
        self._drop_notice = drop_notice
        self._label = stderr_label
        self._tick_s = max(0.02, min(1.0, self.max_age_s / 4, self.retry_interval_s))
        self._counter = itertools.count(1)
        self._init_state()
        with _live_lock:
            _live.add(self)
        _finalize_in_multiprocessing_children()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._io = threading.Lock()  # held while a batch is taken and written: one at a time, in order
        self._wake = threading.Event()
        self._woken = False
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._first_at: float | None = None  # monotonic time of the oldest queued line
        self._inflight_lines = 0  # lines in the batch being written
        self._dropped_inflight = 0  # drops being reported by a notice in a batch being written
        self._dropped = 0  # dropped and not yet reported by a notice line
        self.dropped_total = 0
        self._failing = False
        self._last_error = ""
        self._retry_at = 0.0
        self._reported = False
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self.files_published = 0
        self.lines_published = 0

    # --- the caller's side ------------------------------------------------------------------

    def put(self, line: bytes) -> None:
        """Queue one complete line (ending in a newline). Never raises, never touches the disk."""
        with self._lock:
            pending = self._pending
            pending.append(line)
            size = self._pending_bytes = self._pending_bytes + len(line)
            if not (
                size >= self._wake_bytes
                or len(pending) >= self._wake_lines
                or self._first_at is None
                or self._thread is None
                or self._closed
            ):
                return  # the common case: queued, nothing else to do
            self._after_put()
            closed, start = self._closed, self._thread is None
        if closed:  # a straggler after close(): written at once, in the caller's thread
            self.flush()
        elif start:
            self._start_thread()

    def _after_put(self) -> None:
        """The uncommon part of put(): first line of a batch, waking the thread, limits (lock held)."""
        if self._first_at is None:
            self._first_at = time.monotonic()
        if (
            (self._pending_bytes >= self._wake_bytes or len(self._pending) >= self._wake_lines)
            and not self._woken
            and not self._closed
            and not (self._failing and time.monotonic() < self._retry_at)  # no retry due: let it sleep
        ):
            self._woken = True
            self._wake.set()
        if len(self._pending) > self.max_buffered_events or self._pending_bytes > self.max_buffer_bytes:
            self._trim()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Write and publish everything queued so far (and a notice of any drops).

        True when nothing is left unwritten; lines dropped earlier count as delivered once the
        notice reporting them is published. Waits (up to ``timeout``) for a batch the writer
        thread is writing, since batches are written one at a time, in order.
        """
        if not self._io.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            return False
        try:
            while True:
                with self._lock:
                    batch = self._take(self.max_bytes)
                if batch is None or not self._write(batch):
                    break
        finally:
            self._io.release()
        with self._lock:
            return not self._pending and not self._dropped

    def close(self, timeout: float | None = 10.0) -> bool:
        """Publish everything and stop the writer thread; True when nothing is left unwritten.

        Lines that still cannot be written are reported on stderr, with the number dropped and
        not yet reported. A line put after close() is written at once, in its own file.
        """
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            self._closed = True  # from now on put() writes at once: nothing waits for a thread
        delivered = self.flush(timeout)
        with self._lock:
            unwritten, dropped = len(self._pending), self._dropped
        with _live_lock:
            _live.discard(self)
        if unwritten or dropped:
            self._say(
                f"{unwritten} events could not be written to {self.directory} and {dropped} were dropped "
                f"(last error: {self._last_error}); they are lost when this process exits"
            )
        return delivered and not unwritten and not dropped

    @property
    def pending(self) -> int:
        """Lines not yet in a published file: queued, or in a batch being written."""
        with self._lock:
            return len(self._pending) + self._inflight_lines

    @property
    def dropped(self) -> int:
        """Lines dropped and not yet reported by a published notice line."""
        with self._lock:
            return self._dropped + self._dropped_inflight

    # --- the queue (called with self._lock held) --------------------------------------------

    def _take(self, limit: int | None) -> list[bytes] | None:
        """Up to ``limit`` bytes (at least one line) from the front of the queue, as a batch."""
        pending = self._pending
        if not pending and not (self._dropped and self._drop_notice is not None):
            return None
        if limit is None or self._pending_bytes <= limit:
            batch = list(pending)
            pending.clear()
            self._pending_bytes = 0
        else:
            batch, size = [], 0
            while pending and (not batch or size + len(pending[0]) <= limit):
                line = pending.popleft()
                batch.append(line)
                size += len(line)
            self._pending_bytes -= size
        self._first_at = time.monotonic() if pending else None
        self._inflight_lines += len(batch)
        return batch

    def _requeue(self, batch: list[bytes]) -> None:
        self._pending.extendleft(reversed(batch))
        self._pending_bytes += sum(map(len, batch))
        if self._first_at is None:
            self._first_at = time.monotonic()
        self._trim()

    def _trim(self) -> None:
        pending = self._pending
        while pending and (
            len(pending) > self.max_buffered_events or self._pending_bytes > self.max_buffer_bytes
        ):
            self._pending_bytes -= len(pending.popleft())
            self._dropped += 1
            self.dropped_total += 1

    def _fail(self, what: str, exc: BaseException) -> None:
        self._failing = True
        self._last_error = f"{what}: {exc}"
        self._retry_at = time.monotonic() + self.retry_interval_s
        if not self._reported:
            self._reported = True
            self._say(
                f"{what} in {self.directory} ({exc}); keeping up to {self.max_buffered_events} events in memory "
                f"and retrying every {self.retry_interval_s:g}s — further failures are not reported"
            )

    def _say(self, message: str) -> None:
        try:
            sys.stderr.write(f"{self._label}: {message}\n")
            sys.stderr.flush()
        except Exception:
            pass

    # --- writing a batch (without the lock) -------------------------------------------------

    def _write(self, batch: list[bytes]) -> bool:
        """Write one batch as a new published file; on failure put it back in the queue.

        A notice of lines dropped goes first, as its own small file: it is what a nearly full
        disk can still take, and it must not wait for a batch that may never fit. When even the
        notice cannot be written, the batch is not tried.
        """
        notice, noticed, error, written, announced = None, 0, None, False, False
        try:
            with self._lock:  # claim the drop count, so that a concurrent batch does not report it too
                noticed, self._dropped = self._dropped, 0
                notice = self._notice(noticed) if noticed else None
                if notice is None:
                    self._dropped, noticed = self._dropped + noticed, 0
                self._dropped_inflight += noticed
            if notice is not None:
                self._publish([notice])
                announced = True
            if batch:
                self._publish(batch)
            written = True
        except Exception as exc:  # OSError, or a bug: neither may reach the caller
            error = exc
        finally:  # also on KeyboardInterrupt during flush(): the batch goes back, nothing is lost
            with self._lock:
                self._inflight_lines -= len(batch)
                self._dropped_inflight -= noticed
                if announced:
                    self.files_published += 1
                    self.lines_published += 1
                else:
                    self._dropped += noticed  # still to be reported
                if written:
                    self._failing = False
                    self._last_error = ""  # a later notice must not blame an error since overcome
                    self.files_published += 1 if batch else 0
                    self.lines_published += len(batch)
                else:
                    self._requeue(batch)
                    if error is not None:
                        what = "cannot write events" if isinstance(error, OSError) else "unexpected error"
                        self._fail(what, error)
        return written

    def _publish(self, lines: list[bytes]) -> None:
        publish_lines(self.directory, self.prefix, next(self._counter), lines)

    def _notice(self, dropped: int) -> bytes | None:
        if self._drop_notice is None:
            return None
        try:
            return self._drop_notice(dropped, self._last_error)
        except Exception:
            return None

    # --- the writer thread ------------------------------------------------------------------

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._stopping = False
            thread = self._thread = threading.Thread(
                target=self._run, name=f"emit-spool-{self.prefix}", daemon=True
            )
        thread.start()

    def _ready(self, now: float) -> list[bytes] | None:
        """The next batch the thread should write, if any (lock held)."""
        if not self._pending and not (self._dropped and self._drop_notice is not None):
            return None
        if self._failing and now < self._retry_at and not self._stopping:
            return None
        if (
            self._stopping
            or self._pending_bytes >= self._wake_bytes
            or len(self._pending) >= self._wake_lines
            or (self._first_at is not None and now - self._first_at >= self.max_age_s)
            or self._failing  # retry due
        ):
            return self._take(self.max_bytes)
        return None

    def _run(self) -> None:
        while True:
            self._wake.wait(self._tick_s)
            try:
                while True:
                    with self._io:
                        with self._lock:
                            self._wake.clear()
                            self._woken = False
                            stopping = self._stopping
                            batch = self._ready(time.monotonic())
                        if batch is None or not self._write(batch):
                            break
            except Exception as exc:  # keep the thread alive whatever happens
                with self._lock:
                    stopping = self._stopping
                    self._fail("unexpected error in the event writer thread", exc)
            if stopping:
                return

    def _after_fork_in_child(self) -> None:
        """The child owns nothing of the parent's queue or thread; it starts empty."""
        closed = self._closed
        self._init_state()
        self._closed = closed


def _write_lines(fd: int, lines: list[bytes]) -> None:
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += len(line)
        if size >= _WRITE_CHUNK:
            write_all(fd, b"".join(chunk))
            chunk, size = [], 0
    if chunk:
        write_all(fd, b"".join(chunk))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError("short write")
        view = view[written:]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def publish_lines(directory: str, prefix: str, sequence: int, lines: list[bytes]) -> str:
    """Publish ``lines`` as one new file, atomically; returns its path.

    Writes ``<stem>.jsonl.tmp`` (mode 0600, whatever the umask), fsyncs it, renames it to
    ``<stem>.jsonl`` and fsyncs the directory. Ingestion ignores ``*.tmp``, so it never sees a
    partial file; on failure the ``.tmp`` is removed and the error raised.
    """
    os.makedirs(directory, exist_ok=True)
    stem = file_stem(prefix, os.getpid(), sequence, uuid.uuid4().hex[:8])
    final = os.path.join(directory, stem + ".jsonl")
    tmp = final + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        try:
            if hasattr(os, "fchmod"):  # the umask may have taken the owner's bits away too
                os.fchmod(fd, FILE_MODE)
            _write_lines(fd, lines)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(directory)
    return final


def fsync_dir(directory: str) -> None:
    """Make a rename durable; best effort (not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _close_all_at_exit() -> None:
    with _live_lock:
        spools = list(_live)
    for spool in spools:
        try:
            spool.close(timeout=5.0)
        except Exception:
            pass


def _reset_all_in_child() -> None:
    global _live_lock
    _live_lock = threading.Lock()
    for spool in list(_live):
        spool._after_fork_in_child()


_finalizer_pid = [0]


def _finalize_in_multiprocessing_children(_ignored: object = None) -> None:
    """A multiprocessing child ends with os._exit, which skips atexit: there, its finalizers are
    what runs. One per process, registered again in each child (the child clears the registry
    it inherits, then runs the after-fork hooks)."""
    if _finalizer_pid[0] != os.getpid():
        _finalizer_pid[0] = os.getpid()
        multiprocessing.util.Finalize(None, _close_all_at_exit, exitpriority=100)


class _AfterFork:
    """A key for multiprocessing's after-fork registry, which holds its keys weakly."""


_AFTER_FORK = _AfterFork()
multiprocessing.util.register_after_fork(_AFTER_FORK, _finalize_in_multiprocessing_children)
atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_in_child)
