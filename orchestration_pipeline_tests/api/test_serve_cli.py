"""``serve``: a taken port is refused naming the fix; SIGTERM stops the server promptly even with
streams open (they end, and their clients reconnect elsewhere)."""

from __future__ import annotations

import signal
import time

import pytest

from orchestration_pipeline.cli.serve import bind_socket
from orchestration_pipeline.errors import ConfigError
from orchestration_pipeline_tests.api._support import SseClient, free_port, serve_env, start_serve, stop


def test_a_taken_port_is_refused_naming_the_fix():
    taken = bind_socket("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"cannot listen on 127.0.0.1:{port} .* pass another --port"):
            bind_socket("127.0.0.1", port)
    finally:
        taken.close()
    with pytest.raises(ConfigError, match="cannot bind to no-such-host.invalid"):
        bind_socket("no-such-host.invalid", 0)


@pytest.mark.db
@pytest.mark.slow
def test_sigterm_ends_open_streams_and_stops_promptly(orch_dsn, tasks_dsn, tmp_path):
    port = free_port()
    server = start_serve(serve_env(orch_dsn, tasks_dsn, tmp_path / "home"), port, tmp_path / "serve.log")
    try:
        clients = [SseClient(f"http://127.0.0.1:{port}/api/activity/stream") for _ in range(3)]
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught (the usual exit status)
        assert server.wait(10) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 4, "shutdown waited for the open streams to time out"
        for client in clients:
            client.close()
            assert client.status == 200
    finally:
        stop(server)
