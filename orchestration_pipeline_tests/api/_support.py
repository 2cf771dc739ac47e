"""Running the API for a test: in a thread of this process (uvicorn on a free loopback port), or
as the ``serve`` command in a subprocess; reading its event streams; ingesting events."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from orchestration_pipeline.cli.serve import bind_socket
from orchestration_pipeline.lib.api.app import create_app
from orchestration_pipeline.lib.api.config import ApiConfig
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import clean_env, make_event, write_jsonl

REPO_ROOT = Path(__file__).resolve().parents[2]


def api_config(dsn: str, **overrides: Any) -> ApiConfig:
    """Settings for a test server: quick polls and heartbeats, no index."""
    return ApiConfig(dsn=dsn, **{"poll_interval_s": 0.5, "heartbeat_s": 0.5, **overrides})


@dataclass
class RunningApi:
    url: str
    app: Any
    server: uvicorn.Server

    @property
    def hub(self):
        return self.app.state.api.hub


@contextmanager
def running_api(config: ApiConfig) -> Iterator[RunningApi]:
    """The app served by uvicorn in a thread of this process, on a free loopback port."""
    app = create_app(config)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    running = RunningApi(f"http://127.0.0.1:{port}", app, server)
    try:
        wait_until(lambda: running.hub.ready, 15, "the stream hub to read its start position")
        yield running
    finally:
        state = getattr(app.state, "api", None)
        if state is not None:
            state.close_streams()
        server.should_exit = True
        thread.join(15)
        sock.close()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Message:
    """One SSE message (or, with ``data`` None, a comment block such as a heartbeat)."""

    id: str | None
    data: str | None
    comments: list[str] = field(default_factory=list)
    received: float = 0.0


class SseClient:
    """Reads one event stream in a background thread; messages arrive in :attr:`messages`."""

    def __init__(
        self, url: str, *, headers: dict[str, str] | None = None, params: dict[str, str] | None = None
    ):
        self.messages: queue.Queue[Message] = queue.Queue()
        self.status: int | None = None
        self.body: bytes = b""
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(url, headers or {}, params or {}), daemon=True
        )
        self._thread.start()
        if not self._opened.wait(15):
            raise AssertionError(f"the stream {url} did not answer within 15 s")

    def _run(self, url: str, headers: dict[str, str], params: dict[str, str]) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(10, read=30)) as client:
                with client.stream("GET", url, headers=headers, params=params) as response:
                    self.status = response.status_code
                    if response.status_code != 200:
                        self.body = response.read()
                        return
                    self._opened.set()
                    self._parse(response.iter_lines())
        except httpx.HTTPError:
            pass
        finally:
            self._opened.set()

    def _parse(self, lines: Iterator[str]) -> None:
        current = Message(None, None)
        for line in lines:
            if self._stop.is_set():
                return
            if line == "":
                if current.data is not None or current.comments:
                    current.received = time.time()
                    self.messages.put(current)
                current = Message(None, None)
            elif line.startswith(":"):
                current.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "id":
                    current.id = value
                elif name == "data":
                    current.data = value if current.data is None else f"{current.data}\n{value}"

    def events(self, count: int, timeout: float = 10) -> list[Message]:
        """The next ``count`` data messages (heartbeats skipped); fails after ``timeout`` s."""
        found: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"received {len(found)} of {count} events within {timeout} s")
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if message.data is not None:
                found.append(message)
        return found

    def quiet(self, seconds: float) -> list[Message]:
        """The data messages received within ``seconds`` (to check that none arrives)."""
        deadline = time.monotonic() + seconds
        found = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                break
            if message.data is not None:
                found.append(message)
        return found

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def __enter__(self) -> SseClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def ingest(dsn: str, path: Path, events: list[dict]) -> list[str]:
    """Write ``events`` to ``path`` and ingest them in one transaction; returns their ids."""
    write_jsonl(path, events)
    with connection(dsn) as conn:
        Ingestor(conn, parse_workers=0).ingest_paths([path])
    return [e["event_id"] for e in events]


def agent_events(n: int, *, project: str = "p1", agent_type: str = "coder", **fields: Any) -> list[dict]:
    payload = {"agent_type": agent_type, "agent_name": "a1", "task_description": "t", "project_id": project}
    return [make_event("agent.progress", minutes_ago=1, payload=payload, **fields) for _ in range(n)]


def serve_env(orch_dsn: str, tasks_dsn: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``serve`` subprocess using these databases."""
    return clean_env(
        ORCH_DATABASE_URL=orch_dsn,
        TASKS_DATABASE_URL=tasks_dsn,
        ORCH_HOME=str(home),
        ORCH_EMBEDDER="hashing",
        PYTHONPATH=str(REPO_ROOT),
        **extra,
    )


def start_serve(env: dict[str, str], port: int, log: Path, host: str = "127.0.0.1") -> subprocess.Popen:
    """``serve --host HOST --port PORT`` in a subprocess; returns once it answers ``/readyz``."""
    handle = open(log, "ab")  # the child keeps writing to it
    command = [
        sys.executable,
        "-m",
        "orchestration_pipeline.cli",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        [*command, "--log-level", "warning"], env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO_ROOT
    )
    handle.close()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 30, "serve to answer /readyz", interval=0.1)
    return proc


def free_port() -> int:
    sock = bind_socket("127.0.0.1", 0)
    try:
        return sock.getsockname()[1]
    finally:
        sock.close()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
