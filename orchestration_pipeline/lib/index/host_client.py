"""The clients of the shard host (see :mod:`orchestration_pipeline.lib.index.host`).

:class:`HostClient` is the :class:`~orchestration_pipeline.lib.index.location.VectorIndex` every
process but the host uses; it starts a host (:func:`spawn_host`) when none answers.
:func:`stop_host` asks a host to exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing.connection import AuthenticationError, Client, Connection
from pathlib import Path
from typing import Any

from orchestration_pipeline.lib.index.host import (
    _ERRORS,
    _LOG_ROTATE_BYTES,
    REQUEST_TIMEOUT_S,
    START_TIMEOUT_S,
    _directory,
    authkey,
    host_running,
    socket_address,
)
from orchestration_pipeline.lib.index.location import (
    CollectionSettings,
    IndexConfigMismatch,
    IndexedState,
    IndexPoint,
    IndexUnavailable,
    SearchFilter,
    SearchHit,
    WriteOutcome,
)

# --------------------------------------------------------------------------------------------
# The client side
# --------------------------------------------------------------------------------------------


def _try_connect(path: Path) -> Connection | None:
    """A connection to the running host, or None when none answers (no socket, or a dead one)."""
    try:
        return Client(socket_address(path), family="AF_UNIX", authkey=authkey(path))
    except (FileNotFoundError, ConnectionError, EOFError):
        return None
    except AuthenticationError as exc:
        raise IndexUnavailable(
            f"the index host of {path} does not accept the key in {path / 'host.key'} ({exc}): "
            "stop that host process (it may belong to another user)"
        ) from exc


def _log_tail(log_file: Path, lines: int = 5) -> str:
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


def spawn_host(path: str | Path, idle_seconds: float | None = None) -> subprocess.Popen[bytes]:
    """Start a host for ``path`` in the background (its own session; output to ``host.log``)."""
    directory = _directory(path)
    directory.mkdir(parents=True, exist_ok=True)
    log_file = directory / "host.log"
    try:
        if log_file.stat().st_size > _LOG_ROTATE_BYTES:
            os.replace(log_file, directory / "host.log.1")
    except FileNotFoundError:
        pass
    command = [sys.executable, "-m", "orchestration_pipeline.lib.index.host", str(directory)]
    if idle_seconds is not None:
        command += ["--idle-seconds", str(idle_seconds)]
    with open(log_file, "ab") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    # reap it when it exits, so a long-lived client leaves no zombie behind
    threading.Thread(target=process.wait, name="index-host-reaper", daemon=True).start()
    return process


def connect_or_start(
    path: str | Path, *, start_timeout_s: float = START_TIMEOUT_S, idle_seconds: float | None = None
) -> Connection:
    """A connection to the host of ``path``, starting one when none answers.

    A host is started only when the lock is free (no host alive, starting or stopping); a
    started host that exits quietly (it lost the lock to another) is replaced until the
    deadline. A host that exits with an error fails at once, quoting ``host.log``.
    """
    directory = _directory(path)
    conn = _try_connect(directory)
    if conn is not None:
        return conn
    deadline = time.monotonic() + start_timeout_s
    process: subprocess.Popen[bytes] | None = None
    log_file = directory / "host.log"
    while True:
        conn = _try_connect(directory)
        if conn is not None:
            return conn
        status = None if process is None else process.poll()
        if status not in (None, 0):
            raise IndexUnavailable(
                f"the index host for {directory} exited with status {status}: see {log_file} ({_log_tail(log_file)})"
            )
        if (process is None or status is not None) and not host_running(directory):
            process = spawn_host(directory, idle_seconds)
        if time.monotonic() >= deadline:
            raise IndexUnavailable(
                f"the index host for {directory} did not answer within {start_timeout_s:g} s: see {log_file}"
            )
        time.sleep(0.05)


def stop_host(path: str | Path, timeout_s: float = 30.0) -> bool:
    """Ask the host of ``path`` to exit and wait until it released its lock; False when none ran."""
    directory = _directory(path)
    deadline = time.monotonic() + timeout_s
    conn = _try_connect(directory)
    while conn is None:  # no answer: no host, or one starting or stopping
        if not host_running(directory):
            return False
        if time.monotonic() >= deadline:
            raise IndexUnavailable(
                f"the index host for {directory} neither answers nor exits: see {directory}/host.log"
            )
        time.sleep(0.05)
        conn = _try_connect(directory)
    with conn:
        try:
            conn.send(("shutdown", (), {}))
            conn.recv()
        except (EOFError, OSError):
            pass
    while host_running(directory):
        if time.monotonic() >= deadline:
            raise IndexUnavailable(f"the index host for {directory} did not stop within {timeout_s:g} s")
        time.sleep(0.05)
    return True


class _Timeout(Exception):
    pass


class HostClient:
    """:class:`~orchestration_pipeline.lib.index.location.VectorIndex` through the shard host.

    Connects on first use, starting the host when none answers (waiting up to
    ``start_timeout_s``). A broken connection (the host exited or was killed) is reconnected,
    and the call retried, once: every index call is idempotent (writes carry versions), so a
    retry never applies anything twice. Errors raised in the host arrive as the same
    :class:`IndexConfigMismatch` / :class:`IndexUnavailable`, or as RuntimeError (ValueError
    for refused arguments) with the host's message.

    Thread-safe (one call at a time per client); after a fork the child opens its own
    connection. :meth:`close` closes the connection, not the host.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        start_timeout_s: float = START_TIMEOUT_S,
        request_timeout_s: float | None = REQUEST_TIMEOUT_S,
        idle_seconds: float | None = None,
    ) -> None:
        self.path = _directory(path)
        self.start_timeout_s = start_timeout_s
        self.request_timeout_s = request_timeout_s
        self.idle_seconds = idle_seconds  # for a host this client starts; None: the host's default
        self._conn: Connection | None = None
        self._conn_pid = 0
        self._lock = threading.Lock()

    def _connection(self) -> Connection:
        if self._conn is None or self._conn_pid != os.getpid():
            try:
                self._conn = connect_or_start(
                    self.path, start_timeout_s=self.start_timeout_s, idle_seconds=self.idle_seconds
                )
            except (IndexUnavailable, IndexConfigMismatch):
                raise
            except OSError as exc:
                raise IndexUnavailable(f"cannot use the index directory {self.path}: {exc}") from exc
            self._conn_pid = os.getpid()
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._conn_pid == os.getpid():
            try:
                conn.close()
            except OSError:
                pass

    def _exchange(self, conn: Connection, request: tuple[Any, ...], timeout: float | None) -> Any:
        conn.send(request)
        if timeout is not None and not conn.poll(timeout):
            raise _Timeout
        return conn.recv()

    def _call(
        self, method: str, *args: Any, kwargs: Mapping[str, Any] | None = None, wait_forever: bool = False
    ) -> Any:
        """Send one request and return its value, re-raising the host's error."""
        wait = None if wait_forever else self.request_timeout_s
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    reply = self._exchange(conn, (method, args, dict(kwargs or {})), wait)
                    break
                except _Timeout:
                    self._drop()
                    raise IndexUnavailable(
                        f"the index host for {self.path} did not answer {method} within {wait} s: "
                        f"see {self.path / 'host.log'}"
                    ) from None
                except (EOFError, OSError) as exc:
                    self._drop()
                    if attempt == 2:
                        raise IndexUnavailable(
                            f"lost the connection to the index host for {self.path} twice ({exc!r}): "
                            f"see {self.path / 'host.log'}"
                        ) from exc
        if reply[0] == "ok":
            return reply[1]
        _, name, message = reply
        if name == "ValueError":
            raise ValueError(message)
        raise _ERRORS.get(name, RuntimeError)(
            message if name in _ERRORS else f"index host: {name}: {message}"
        )

    def ensure_collection(self, settings: CollectionSettings) -> None:
        self._call("ensure_collection", settings)

    def upsert(self, points: Sequence[IndexPoint]) -> WriteOutcome:
        return self._call("upsert", list(points))

    def delete(self, items: Sequence[tuple[str, int]]) -> WriteOutcome:
        return self._call("delete", [(d, v) for d, v in items])

    def search(
        self,
        vector: Sequence[float],
        limit: int,
        filters: SearchFilter | None = None,
        *,
        exact: bool = False,
        quantization: bool | None = None,
    ) -> list[SearchHit]:
        return self._call(
            "search",
            [float(x) for x in vector],
            limit,
            filters,
            kwargs={"exact": exact, "quantization": quantization},
        )

    def states(self) -> Iterator[IndexedState]:
        return iter(self._call("states"))

    def count(self) -> int:
        return self._call("count")

    def payload_indexes(self) -> Mapping[str, str]:
        return self._call("payload_indexes")

    def optimize(self) -> None:
        self._call("optimize", wait_forever=True)

    def info(self) -> dict[str, int]:
        """Shard statistics (see :meth:`EdgeIndex.info`)."""
        return self._call("info")

    def host_facts(self) -> dict[str, Any]:
        """The host's pid, socket, start time, shard open time and request count."""
        return self._call("ping")

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> HostClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
