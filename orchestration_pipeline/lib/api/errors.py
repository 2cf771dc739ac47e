"""Errors as JSON: a 400 names the parameter and what it accepts, a 404 names the route, a 503
names the service that is down and the fix; nothing answers with an HTML page or a stack trace.

Every error body has the same shape (:class:`ErrorBody` in the OpenAPI document)::

    {"error": "invalid_parameter", "message": "...", "parameter": "limit"}
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestration_pipeline.errors import DatabaseUnavailable, OrchError, SchemaNotReady

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """An error: a code, one sentence naming the fix, and the parameter at fault (for a 400)."""

    error: str
    message: str
    parameter: str | None = None


class ApiError(Exception):
    """An error the API answers with ``status`` and an :class:`ErrorBody`."""

    def __init__(self, status: int, error: str, message: str, parameter: str | None = None):
        super().__init__(message)
        self.status, self.error, self.message, self.parameter = status, error, message, parameter

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"error": self.error, "message": self.message, "parameter": self.parameter}
        return JSONResponse(body, status_code=self.status, headers=headers)


def bad_parameter(name: str, accepts: str, value: Any = None) -> ApiError:
    """A 400 for query parameter ``name``: what it accepts, and what was sent."""
    got = "" if value is None else f", got {str(value)[:80]!r}"
    return ApiError(400, "invalid_parameter", f"query parameter {name} {accepts}{got}", name)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A query parameter is invalid; the message names it."},
    401: {
        "model": ErrorBody,
        "description": "A bearer token is required (ORCH_API_TOKEN) and was missing or wrong.",
    },
    503: {
        "model": ErrorBody,
        "description": "The database (or the index) is unavailable; the message names the fix.",
    },
}


def _parameters(dependant: Any) -> Iterator[Any]:
    """The query and header parameters of a route and of its dependencies."""
    yield from getattr(dependant, "query_params", ())
    yield from getattr(dependant, "header_params", ())
    for sub in getattr(dependant, "dependencies", ()):
        yield from _parameters(sub)


def _accepts(request: Request, name: str, error: dict[str, Any]) -> str:
    """What parameter ``name`` of the matched route accepts, from its declaration and the check it
    failed: a choice, a range, a length, or its description; else the validator's own words."""
    detail = str(error.get("msg", "invalid")).lower()
    route = request.scope.get("route")
    fields = list(_parameters(getattr(route, "dependant", None)))
    field = next((f for f in fields if name in (f.alias, f.name)), None)
    if field is None:
        return f"is invalid: {detail}"
    info = field.field_info
    bounds = {
        attr: getattr(m, attr)
        for m in info.metadata
        for attr in ("ge", "le", "min_length", "max_length")
        if hasattr(m, attr)
    }
    literal = [a for arg in getattr(info.annotation, "__args__", ()) for a in getattr(arg, "__args__", ())]
    kind = str(error.get("type", ""))
    if literal and all(isinstance(a, str) for a in literal):
        return f"must be one of {', '.join(literal)}"
    if kind.startswith(("int_", "greater_than", "less_than")) and {"ge", "le"} <= bounds.keys():
        return f"must be a whole number from {bounds['ge']} to {bounds['le']}"
    if kind.startswith(("int_", "greater_than", "less_than")) and "ge" in bounds:
        return f"must be a whole number, {bounds['ge']} or more"
    if kind in ("string_too_long", "string_too_short") and "max_length" in bounds:
        return f"must be {bounds.get('min_length', 0)} to {bounds['max_length']} characters"
    if kind == "missing":
        return f"is required: {info.description}" if info.description else "is required"
    return f"is invalid; it takes {info.description}" if info.description else f"is invalid: {detail}"


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ())]
    where = loc[0] if loc else "query"
    name = loc[-1] if len(loc) > 1 else where
    kind = "header" if where == "header" else "query parameter"
    got = first.get("input")
    message = f"{kind} {name} {_accepts(request, name, first)}"
    if isinstance(got, str):
        message += f", got {got[:80]!r}"
    return ApiError(400, "invalid_parameter", message, name).response()


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path} — the routes are listed in /openapi.json"
        return ApiError(404, "not_found", message).response()
    if exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}: the API is read-only (GET)"
        return ApiError(405, "method_not_allowed", message).response(headers=dict(exc.headers or {}))
    return ApiError(exc.status_code, "http_error", str(exc.detail)).response(headers=dict(exc.headers or {}))


def unavailable(exc: BaseException) -> ApiError:
    """A 503 for a database or index that does not answer, naming the fix."""
    if isinstance(exc, SchemaNotReady):
        return ApiError(503, "schema_not_ready", str(exc))
    if isinstance(exc, PoolTimeout | psycopg.OperationalError | DatabaseUnavailable):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return ApiError(
            503,
            "database_unavailable",
            f"the orchestration database did not answer ({first}) — check that it runs "
            "('orchestration-pipeline up' for the embedded one) and ORCH_DATABASE_URL",
        )
    return ApiError(503, "unavailable", str(exc))


def install_error_handlers(app: FastAPI) -> None:
    """JSON for every error, with the status each deserves."""

    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(request, exc)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _http_error(request, exc)

    async def down(request: Request, exc: Exception) -> JSONResponse:
        return unavailable(exc).response()

    async def schema_older(request: Request, exc: Exception) -> JSONResponse:
        detail = (getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)).strip()
        message = f"the database schema is older than this version ({detail}) — run 'orchestration-pipeline db migrate'"
        return ApiError(503, "schema_not_ready", message).response()

    async def orch_error(request: Request, exc: OrchError) -> JSONResponse:
        return ApiError(503, "unavailable", str(exc)).response()

    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        message = f"{request.method} {request.url.path} failed ({type(exc).__name__}); the server log has the details"
        return ApiError(500, "internal_error", message).response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for kind in (PoolTimeout, psycopg.OperationalError, DatabaseUnavailable, SchemaNotReady):
        app.add_exception_handler(kind, down)
    for kind in (
        psycopg.errors.UndefinedTable,
        psycopg.errors.UndefinedColumn,
        psycopg.errors.UndefinedFunction,
    ):
        app.add_exception_handler(kind, schema_older)
    app.add_exception_handler(OrchError, orch_error)
    app.add_exception_handler(Exception, crash)
