"""``serve``: the HTTP API, the live activity feed (SSE) and its page, on uvicorn."""

from __future__ import annotations

import socket
import sys

import click

from orchestration_pipeline.cli._common import ErrorReportingGroup, orchestration_dsn, pipeline_settings
from orchestration_pipeline.errors import ConfigError


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port), or a ConfigError naming the fix."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(
            f"cannot bind to {host}: {exc.strerror} — pass --host an address or a host name"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}) — stop what uses the port, or pass another --port"
        ) from None
    sock.set_inheritable(True)
    return sock


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; beyond loopback needs ORCH_API_TOKEN.",
)
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one)."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    help="uvicorn's log level (info logs each request).",
)
def serve(host: str, port: int, log_level: str) -> None:
    """Serve the read-only HTTP API, the live activity feed and its page on http://HOST:PORT/.

    The OpenAPI document is at /openapi.json. Bound to anything but 127.0.0.1 (or ::1), every
    /api route needs 'Authorization: Bearer $ORCH_API_TOKEN', and serve refuses to start without it.
    """
    import uvicorn

    from orchestration_pipeline.lib.api.app import create_app
    from orchestration_pipeline.lib.api.config import ApiConfig, check_bind
    from orchestration_pipeline.lib.index.runtime import runtime_from_settings

    settings = pipeline_settings()
    check_bind(host, settings.api_token)  # before starting anything
    config = ApiConfig(
        dsn=orchestration_dsn(),
        host=host,
        token=settings.api_token,
        index_runtime=runtime_from_settings(settings),
    )
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"serving on http://{shown}:{bound}/ (OpenAPI document: /openapi.json); Ctrl-C stops", err=True
    )
    app = create_app(config)
    server = _server(
        uvicorn.Config(
            app, log_level=log_level, timeout_graceful_shutdown=5, lifespan="on", server_header=False
        )
    )
    server.run(sockets=[sock])


def _server(config):  # type: ignore[no-untyped-def]
    """uvicorn's server, ending the open event streams when asked to stop (else shutdown would
    wait for them): the clients reconnect to the next server and resume where they were."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # type: ignore[no-untyped-def]
            state = getattr(config.app.state, "api", None)
            if state is not None:
                state.close_streams()
            super().handle_exit(sig, frame)

    return Server(config)


def main(argv: list[str] | None = None) -> None:
    """``serve`` alone, with the CLI's error reporting (``python -m orchestration_pipeline.cli serve``
    runs it as part of the whole command line)."""
    group = ErrorReportingGroup(commands={"serve": serve})
    group(["serve", *(sys.argv[1:] if argv is None else argv)], prog_name="orchestration-pipeline")


if __name__ == "__main__":
    main()
