"""The shard host: one process owns the qdrant-edge shard, every other process asks it.

A qdrant-edge shard can be open in one process at a time, yet Dagster runs steps in several
processes, the CLI is another, and an API server another; all of them search while a sync
writes. So one daemon process per index directory, the host, opens the :class:`EdgeIndex`
and serves the :class:`~orchestration_pipeline.lib.index.location.VectorIndex` calls of the
others over a unix socket; ``host_client.HostClient`` is the VectorIndex those others use,
and it starts the host when none answers.

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
SIGTERM or SIGINT, or on ``host_client.stop_host``, each time closing the shard cleanly (flush,
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
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import (
    AuthenticationError,
    Client,
    Connection,
    Listener,
    answer_challenge,
    deliver_challenge,
)
from pathlib import Path
from typing import Any

from orchestration_pipeline.lib.index.edge import EdgeIndex
from orchestration_pipeline.lib.index.location import (
    IndexConfigMismatch,
    IndexUnavailable,
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
        self._closed = threading.Event()
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
            # no authkey here: each connection authenticates in its own thread (_serve), so a
            # client that connects and never answers cannot hold up accept() and with it the exit
            listener = Listener(self.address, family="AF_UNIX")
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
        threading.Thread(target=self._exit_if_stuck, name="exit-guard", daemon=True).start()

    def _exit_if_stuck(self, grace_s: float = 10.0) -> None:
        """If the accept loop has not ended ``grace_s`` after a stop (its socket was deleted with
        its directory, so nothing can wake it), close the shard and leave the process."""
        if self._closed.wait(grace_s):
            return
        log.warning("the accept loop did not end within %g s of the stop; exiting", grace_s)
        if self._index_lock.acquire(timeout=grace_s):
            try:
                self._index.close()
            except Exception:
                log.exception("closing the shard failed")
        os._exit(0)

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
            except OSError as exc:
                if self._stop.is_set():
                    break
                log.warning("accept failed: %s", exc)
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
        self._closed.set()
        log.info(
            "index host %d stopped (%s) after %d requests",
            os.getpid(),
            self._stop_reason or "ended",
            self._requests,
        )

    # -- one connection --------------------------------------------------------------------

    def _serve(self, conn: Connection) -> None:
        with conn:
            try:
                deliver_challenge(conn, self._key)
                answer_challenge(conn, self._key)
            except (AuthenticationError, EOFError, OSError) as exc:
                log.warning("refused a connection: %s", exc)
                return
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
