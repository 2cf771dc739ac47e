"""The shard host: one process owns the qdrant-edge shard, every other process asks it.

A qdrant-edge shard can be open in one process at a time, yet Dagster runs steps in several
processes, the CLI is another, and an API server another; all of them search while a sync
writes. So one daemon process per index directory, the host, opens the :class:`EdgeIndex`
and serves the :class:`~orchestration_pipeline.lib.index.location.VectorIndex` calls of the
others over a unix socket; :class:`HostClient` is the VectorIndex those others use, and it
starts the host when none answers.

Files in the index directory:

- ``host.lock``: the host holds an exclusive ``flock`` on it for its whole life, so there is
  at most one host per directory; a second host sees the lock and exits quietly (status 0).
- ``host.sock``: the socket (``multiprocessing.connection``, pickled requests). A directory
  whose path is too long for a unix socket address gets its socket under ``/tmp`` instead,
  named after a hash of the directory.
- ``host.key``: the random key both sides authenticate with (mode 0600, created once), so
  only processes that can read the directory can talk to the host.
- ``host.log``: the host's output.

Consistency: every call on the index runs under one lock, so a batch upsert is applied whole
before any search sees it, and searches never see half a batch. Lifetime: the host exits
after ``idle_seconds`` without requests (default 600, ``$ORCH_INDEX_HOST_IDLE_S``), on
SIGTERM or SIGINT, or on :func:`stop_host`, each time closing the shard cleanly (flush,
close) and removing its socket. A host killed outright leaves a dead socket behind; the next
client finds the lock free and starts a new host, which replays the shard's write-ahead log.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing.connection import AuthenticationError, Client, Connection, Listener
from pathlib import Path
from typing import Any

from orchestration_pipeline.lib.index.edge import EdgeIndex
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

log = logging.getLogger("orchestration_pipeline.lib.index.host")  # also when run as __main__

# The VectorIndex methods a client may call; anything else is refused.
HOST_METHODS = frozenset(
    "ensure_collection upsert delete search states count payload_indexes optimize info".split()
)
DEFAULT_IDLE_SECONDS = 600.0
IDLE_ENV = "ORCH_INDEX_HOST_IDLE_S"
START_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 300.0
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_LOG_ROTATE_BYTES = 1_000_000
_ERRORS: Mapping[str, type[Exception]] = {
    "IndexConfigMismatch": IndexConfigMismatch,
    "IndexUnavailable": IndexUnavailable,
}


# --------------------------------------------------------------------------------------------
# Files shared by the host and its clients
# --------------------------------------------------------------------------------------------


def _directory(path: str | Path) -> Path:
    return Path(os.path.abspath(path))


def socket_address(path: str | Path) -> str:
    """The host's socket: ``<path>/host.sock``, or a hashed name in /tmp when that is too long."""
    directory = _directory(path)
    address = str(directory / "host.sock")
    if len(address.encode()) <= _MAX_SOCKET_PATH:
        return address
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:20]
    return f"/tmp/orch-index-{os.getuid()}-{digest}.sock"


def authkey(path: str | Path) -> bytes:
    """The key in ``<path>/host.key``, created (32 random bytes, mode 0600) by whoever needs it first.

    Created under a temporary name and linked into place, so two processes racing to create it
    end up reading the same key.
    """
    directory = _directory(path)
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "host.key"
    try:
        return key_file.read_bytes()
    except FileNotFoundError:
        pass
    tmp = directory / f".host.key.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, key_file)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return key_file.read_bytes()


def try_lock(path: str | Path) -> int | None:
    """Take the host lock of ``path`` without waiting: the locked fd, or None when it is held."""
    directory = _directory(path)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "host.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def host_running(path: str | Path) -> bool:
    """True when a host (running, starting or stopping) holds the lock of ``path``.

    Probing takes the lock for an instant; a host starting in that instant exits quietly, and
    the client that started it starts another.
    """
    try:
        fd = os.open(_directory(path) / "host.lock", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken just above
    return False


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------------
# The host
# --------------------------------------------------------------------------------------------


class _Closing(Exception):
    """The host is shutting down: the request is dropped unanswered, and the client retries."""


class ShardHost:
    """Serves one :class:`EdgeIndex` to other processes (see the module docstring).

    Requests are ``(method, args, kwargs)``; replies are ``("ok", value)`` or
    ``("error", exception class name, message)``. ``states`` is answered as a list. Besides the
    index methods: ``ping`` (host facts, answered without waiting for the index lock) and
    ``shutdown``.
    """

    def __init__(self, path: str | Path, idle_seconds: float = DEFAULT_IDLE_SECONDS) -> None:
        if idle_seconds <= 0:
            raise ValueError(f"idle_seconds must be positive, not {idle_seconds}")
        self.path = _directory(path)
        self.idle_seconds = idle_seconds
        self.address = socket_address(self.path)
        self._index = EdgeIndex(self.path)
        self._index_lock = threading.Lock()  # every index call runs under it
        self._closing = False
        self._stop = threading.Event()
        self._stop_reason = ""
        self._activity_lock = threading.Lock()
        self._in_flight = 0
        self._last_activity = time.monotonic()
        self._requests = 0
        self._started = time.time()
        self._open_seconds = 0.0
        self._key = authkey(self.path)

    def run(self) -> int:
        """Serve until idle, signalled or asked to stop; 0 also when another host owns ``path``."""
        lock_fd = try_lock(self.path)
        if lock_fd is None:
            log.info("another index host owns %s; this one exits", self.path)
            return 0
        try:
            self._open_index()
            _unlink_quietly(self.address)  # left by a killed host; the lock says it is not in use
            listener = Listener(self.address, family="AF_UNIX", authkey=self._key)
            try:
                os.chmod(self.address, 0o600)
                self._install_signal_handlers()
                threading.Thread(target=self._watch_idle, name="idle-watch", daemon=True).start()
                log.info(
                    "index host %d serves %s on %s (shard opened in %.3f s, idle exit after %g s)",
                    os.getpid(),
                    self.path,
                    self.address,
                    self._open_seconds,
                    self.idle_seconds,
                )
                self._accept_loop(listener)
            finally:
                self._close(listener)
        finally:
            os.close(lock_fd)
        return 0

    def _open_index(self) -> None:
        """Open the shard now, so its start-up cost is paid once; a failure is reported per call."""
        started = time.monotonic()
        try:
            self._index.open_existing()
        except (IndexUnavailable, IndexConfigMismatch) as exc:
            log.warning("the index is not usable yet (every call will say so): %s", exc)
        self._open_seconds = time.monotonic() - started

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: self.request_stop(signal.Signals(signum).name))

    def request_stop(self, reason: str) -> None:
        """Make the accept loop end (from any thread, or a signal handler)."""
        if self._stop.is_set():
            return
        self._stop_reason = reason
        self._stop.set()
        threading.Thread(target=self._wake_accept, name="wake", daemon=True).start()

    def _wake_accept(self) -> None:
        """Connect to ourselves, so the main thread's blocking accept() returns and sees the stop."""
        try:
            Client(self.address, family="AF_UNIX", authkey=self._key).close()
        except (OSError, EOFError, AuthenticationError):
            pass

    def _accept_loop(self, listener: Listener) -> None:
        while not self._stop.is_set():
            try:
                conn = listener.accept()
            except (AuthenticationError, EOFError, ConnectionError) as exc:
                log.warning("refused a connection: %s", exc)
                continue
            if self._stop.is_set():
                conn.close()
                break
            threading.Thread(target=self._serve, args=(conn,), name="client", daemon=True).start()

    def _watch_idle(self) -> None:
        tick = min(1.0, self.idle_seconds / 4)
        while not self._stop.wait(tick):
            with self._activity_lock:
                idle = self._in_flight == 0 and time.monotonic() - self._last_activity >= self.idle_seconds
            if idle:
                self.request_stop(f"idle for {self.idle_seconds:g} s")

    def _close(self, listener: Listener) -> None:
        """Finish the call in progress, then flush and close the shard and remove the socket."""
        self._stop.set()
        with self._index_lock:
            self._closing = True
            try:
                self._index.close()
            except Exception:
                log.exception("closing the shard failed")
        listener.close()  # removes the socket file
        _unlink_quietly(self.address)
        log.info(
            "index host %d stopped (%s) after %d requests",
            os.getpid(),
            self._stop_reason or "ended",
            self._requests,
        )

    # -- one connection --------------------------------------------------------------------

    def _serve(self, conn: Connection) -> None:
        with conn:
            while True:
                try:
                    request = conn.recv()
                except (EOFError, OSError):
                    return
                except Exception as exc:  # a request that does not unpickle here
                    reply: tuple[Any, ...] | None = (
                        "error",
                        type(exc).__name__,
                        f"unreadable request: {exc}",
                    )
                else:
                    reply = self._reply(request)
                if reply is None:
                    return  # shutting down: the client sees the connection close, and retries
                try:
                    conn.send(reply)
                except (OSError, ValueError):
                    return

    def _reply(self, request: Any) -> tuple[Any, ...] | None:
        try:
            method, args, kwargs = request
        except (TypeError, ValueError):
            return ("error", "ValueError", "a request is (method, args, kwargs)")
        if method == "ping":
            return ("ok", self._facts())
        if method == "shutdown":
            self.request_stop("asked to stop")
            return ("ok", None)
        if method not in HOST_METHODS:
            return ("error", "ValueError", f"{method!r} is not an index method the host serves")
        with self._activity_lock:
            self._in_flight += 1
            self._requests += 1
        try:
            return ("ok", self._call(method, args, kwargs))
        except _Closing:
            return None
        except Exception as exc:
            if not isinstance(exc, IndexUnavailable | IndexConfigMismatch | ValueError):
                log.exception("%s failed", method)
            return ("error", type(exc).__name__, str(exc))
        finally:
            with self._activity_lock:
                self._in_flight -= 1
                self._last_activity = time.monotonic()

    def _call(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        with self._index_lock:
            if self._closing:
                raise _Closing
            value = getattr(self._index, method)(*args, **kwargs)
            if method == "states":
                value = list(value)
            return value

    def _facts(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "path": str(self.path),
            "address": self.address,
            "started_at": self._started,
            "shard_open_seconds": self._open_seconds,
            "requests": self._requests,
            "idle_seconds": self.idle_seconds,
        }


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
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


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


# --------------------------------------------------------------------------------------------
# python -m orchestration_pipeline.lib.index.host PATH [--idle-seconds N]
# --------------------------------------------------------------------------------------------


def _idle_default() -> float:
    raw = os.environ.get(IDLE_ENV, "").strip()
    if not raw:
        return DEFAULT_IDLE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{IDLE_ENV}={raw!r} is not a number of seconds — fix or unset it") from None
    if value <= 0:
        raise SystemExit(f"{IDLE_ENV}={raw!r} must be positive — fix or unset it")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run a host in the foreground (clients start one in the background by themselves)."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestration_pipeline.lib.index.host", description=main.__doc__
    )
    parser.add_argument("path", help="the index directory (qdrant-edge shard)")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=None,
        help=f"exit after this long without requests ({IDLE_ENV}, 600)",
    )
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    idle = options.idle_seconds if options.idle_seconds is not None else _idle_default()
    if idle <= 0:
        parser.error("--idle-seconds must be positive")
    return ShardHost(options.path, idle_seconds=idle).run()


if __name__ == "__main__":
    sys.exit(main())
