"""The ASGI app: routes, the live stream, the page, the token check and JSON errors.

>>> app = create_app(ApiConfig(dsn="postgresql://.../orchestration"))   # then uvicorn.run(app)

Everything it serves is read from the orchestration DB (events are stored redacted) on pooled
read-only connections; nothing writes. The pool and the stream hub start with the app and stop
with it; a database that is down makes the data routes answer 503 (naming the fix) and the app
keeps running until it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from psycopg_pool import ConnectionPool

from orchestration_pipeline.lib.api import routes, stream_route
from orchestration_pipeline.lib.api.config import TOKEN_COOKIE, ApiConfig, token_matches
from orchestration_pipeline.lib.api.errors import ApiError, bad_parameter, install_error_handlers
from orchestration_pipeline.lib.api.stream import StreamHub
from orchestration_pipeline.lib.ingestion.status_words import StatusWords, configured_status_words

STATIC = files("orchestration_pipeline.lib.api") / "static"
#: Served without a token: the page itself holds no data, and probes need no secret.
PUBLIC_PATHS = ("/", "/healthz", "/readyz", "/openapi.json", "/docs", "/favicon.ico")


@dataclass
class ApiState:
    """What the routes share: settings, the pool, the stream hub, the synonym maps, the embedder."""

    config: ApiConfig
    pool: ConnectionPool
    hub: StreamHub
    words: StatusWords
    loop: asyncio.AbstractEventLoop
    embedder: Any = None

    def close_streams(self) -> None:
        """End every open stream, from any thread (a signal handler, a test)."""
        self.loop.call_soon_threadsafe(self.hub.close_streams)


def _read_only(conn: psycopg.Connection) -> None:
    conn.read_only = True  # the API never writes: a bug that tries is refused by the server


def create_app(config: ApiConfig) -> FastAPI:
    """The app for ``config``; its lifespan opens the pool and starts the stream hub."""
    words = configured_status_words()
    pool = ConnectionPool(
        config.dsn,
        min_size=1,
        max_size=config.pool_size,
        open=False,
        configure=_read_only,
        check=ConnectionPool.check_connection,
        kwargs={"connect_timeout": 10, "application_name": "orchestration-pipeline-api"},
        name="orchestration-api",
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)  # a database that is down does not stop the app from starting
        hub = StreamHub(pool, words, dsn=config.dsn, config=config)
        app.state.api = ApiState(config, pool, hub, words, asyncio.get_running_loop())
        hub.start()
        try:
            yield
        finally:
            await hub.stop()
            pool.close()

    app = FastAPI(
        title="orchestration-pipeline",
        summary="Read-only activity, search, executions and drift, with a live activity feed.",
        version=_version(),
        lifespan=lifespan,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(routes.health_router)
    app.include_router(stream_route.router)  # before /api/activity/{...} style routes could shadow it
    app.include_router(routes.router)
    _serve_page(app)
    _refuse_nul_characters(app)
    _require_token(app, config.token)
    app.openapi = lambda: _openapi(app, config.token is not None)  # type: ignore[method-assign]
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("orchestration-pipeline")
    except PackageNotFoundError:
        return "0"


def _serve_page(app: FastAPI) -> None:
    page = STATIC / "index.html"

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(page), media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")


def _refuse_nul_characters(app: FastAPI) -> None:
    """A query parameter holding a NUL character is a 400 naming it: PostgreSQL text cannot hold
    one, so it could never match, and passing it on would fail in the driver (a 500)."""

    @app.middleware("http")
    async def refuse_nul(request: Request, call_next):  # type: ignore[no-untyped-def]
        for name, value in request.query_params.multi_items():
            if "\x00" in name or "\x00" in value:
                parameter = name.replace("\x00", "\\0")
                return bad_parameter(parameter, "must not contain NUL (\\0) characters").response()
        return await call_next(request)


def _require_token(app: FastAPI, token: str | None) -> None:
    """With a token configured, every path but the page, the static files and the probes needs it."""
    if token is None:
        return

    @app.middleware("http")
    async def check_token(request: Request, call_next):  # type: ignore[no-untyped-def]
        path = request.url.path
        if path in PUBLIC_PATHS or path.startswith("/static/"):
            return await call_next(request)
        if token_matches(token, request.headers.get("authorization"), request.cookies.get(TOKEN_COOKIE)):
            return await call_next(request)
        message = "send the API token as 'Authorization: Bearer <ORCH_API_TOKEN>' (the page asks for it)"
        return ApiError(401, "unauthorized", message).response(headers={"WWW-Authenticate": "Bearer"})


def _openapi(app: FastAPI, with_token: bool) -> dict[str, Any]:
    """FastAPI's document, with 400 (not 422) for invalid input and the bearer scheme when required."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    components = schema.setdefault("components", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    if with_token:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for route_path, path in schema.get("paths", {}).items():
            if route_path.startswith("/api/"):
                for operation in path.values():
                    operation["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema
