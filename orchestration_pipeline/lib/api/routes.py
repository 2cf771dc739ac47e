"""The read-only routes: activity and its statistics, search, executions, drift, changes, health.

Each route is a thin call into the domain modules (``lib/activity.py``, ``lib/executions``,
``lib/index``, ``lib/projection``) on a pooled, read-only connection. The live stream is in
:mod:`~orchestration_pipeline.lib.api.stream_route`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.activity import (
    MAX_LIMIT,
    ActivityFilter,
    activity_stats,
    count_activity,
    query_activity,
    stream_position,
)
from orchestration_pipeline.lib.api.errors import ERROR_RESPONSES, ApiError, bad_parameter, unavailable
from orchestration_pipeline.lib.api.stream import public_row
from orchestration_pipeline.lib.ingestion.envelope import EVENT_TYPES
from orchestration_pipeline.lib.ingestion.status_words import SEVERITY_MEANINGS, STATUS_MEANINGS

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)
health_router = APIRouter()

#: A text parameter: 1 to 200 characters, no NUL (PostgreSQL text cannot hold one).
TEXT = {"min_length": 1, "max_length": 200, "pattern": r"^[^\x00]+$"}
WORD = {"min_length": 1, "max_length": 64, "pattern": r"^[^\x00]*\S[^\x00]*$"}
TIME_HELP = "30m, 24h, 7d, 2w ago, or an ISO date/time (UTC when it has no offset)"
#: A time: an amount ago (``30m``, ``7d``; at most 5 digits) or an ISO 8601 date or date and time.
TIME = {
    "max_length": 64,
    "pattern": r"^\s*([0-9]{1,5}\s*[smhdw]|[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.,]+)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)\s*$",
}


def parse_time(name: str, value: str | None) -> datetime | None:
    """A ``since``/``until`` value as a UTC-aware datetime; a 400 naming ``name`` otherwise."""
    if value is None:
        return None
    from orchestration_pipeline.lib.audit.ledger import parse_since

    try:
        return parse_since(value)
    except (OrchError, ValueError, OverflowError):
        raise bad_parameter(name, f"must be a time: {TIME_HELP}", value) from None


def db(request: Request) -> Iterator[psycopg.Connection]:
    """A pooled read-only connection for one request."""
    state = request.app.state.api
    with state.pool.connection(timeout=state.config.db_timeout_s) as conn:
        yield conn


Conn = Annotated[psycopg.Connection, Depends(db)]


def activity_filter(
    project: Annotated[
        str | None, Query(description="payload.project_id: a project's feed (a room)", **TEXT)
    ] = None,
    agent_type: Annotated[str | None, Query(description="payload.agent_type of agent events", **TEXT)] = None,
    event_type: Annotated[Literal[EVENT_TYPES] | None, Query(description="the event type")] = None,  # type: ignore[valid-type]
    severity: Annotated[str | None, Query(description="the severity word as stored", **WORD)] = None,
    status: Annotated[str | None, Query(description="the status word as stored", **WORD)] = None,
    severity_meaning: Annotated[
        Literal[SEVERITY_MEANINGS] | None,  # type: ignore[valid-type]
        Query(description="what the severity word means (every synonym)"),
    ] = None,
    status_meaning: Annotated[
        Literal[STATUS_MEANINGS] | None,  # type: ignore[valid-type]
        Query(description="what the status word means: failed finds FAILURE, error and failed"),
    ] = None,
    session: Annotated[str | None, Query(description="the session id", **TEXT)] = None,
    task: Annotated[str | None, Query(description="the task id", **TEXT)] = None,
    since: Annotated[str | None, Query(description=f"events at or after: {TIME_HELP}", **TIME)] = None,
    until: Annotated[str | None, Query(description=f"events before: {TIME_HELP}", **TIME)] = None,
) -> ActivityFilter:
    """The activity filters every activity route shares (limit and offset are the list's own)."""
    fields = {
        "project_id": ("project", project),
        "agent_type": ("agent_type", agent_type),
        "event_type": ("event_type", event_type),
        "severity": ("severity", severity),
        "status": ("status", status),
        "severity_meaning": ("severity_meaning", severity_meaning),
        "status_meaning": ("status_meaning", status_meaning),
        "session_id": ("session", session),
        "task_id": ("task", task),
    }
    values = {field: value for field, (_, value) in fields.items()}
    try:
        return ActivityFilter(**values, since=parse_time("since", since), until=parse_time("until", until))
    except ValueError as exc:
        message = str(exc)
        if "since is after until" in message:
            raise bad_parameter("since", "must not be after until") from None
        names = [
            param for field, (param, _) in fields.items() if message.startswith((field, f"unknown {field}"))
        ]
        name = names[0] if names else "filters"
        raise ApiError(400, "invalid_parameter", f"query parameter {name}: {message}", name) from None


Filters = Annotated[ActivityFilter, Depends(activity_filter)]


#: Totals are counted exactly up to this many events; beyond, ``total_exact`` is false.
COUNT_CAP = 100_000


class ActivityPage(BaseModel):
    """Matching events newest first, the total that match (exact up to 100,000: beyond,
    ``total`` is 100,000 and ``total_exact`` false), and the stream position to follow from."""

    rows: list[dict[str, Any]]
    total: int
    total_exact: bool
    limit: int
    offset: int
    position: str


@router.get("/activity", response_model=ActivityPage, summary="Activity, newest first, with filters")
def get_activity(
    request: Request,
    conn: Conn,
    flt: Filters,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="rows to skip")] = 0,
) -> dict[str, Any]:
    """Events matching the filters, newest first, with the total that match.

    ``position`` is the stream position taken before the rows were read: open
    ``/api/activity/stream?after=<position>`` to follow on. An event that commits while the
    page is read can be in both (dedupe by ``event_id``); none is in neither.
    """
    position = stream_position(conn)  # first: every event before it is in the page's snapshot
    paged = dataclasses.replace(flt, limit=limit, offset=offset)
    words = request.app.state.api.words
    rows = [public_row(r, words) for r in query_activity(conn, paged, words)]
    total = count_activity(conn, flt, words, cap=COUNT_CAP)
    return {
        "rows": rows,
        "total": min(total, COUNT_CAP),
        "total_exact": total <= COUNT_CAP,
        "limit": limit,
        "offset": offset,
        "position": str(position),
    }


@router.get("/activity/stats", summary="Totals, counts by severity and status, success rates")
def get_activity_stats(request: Request, conn: Conn, flt: Filters) -> dict[str, Any]:
    """Totals; counts by severity and by status (by meaning); success rate per agent and per
    producer (as :func:`~orchestration_pipeline.lib.activity.activity_stats`)."""
    return dict(activity_stats(conn, flt, request.app.state.api.words))


_search_lock = threading.Lock()


def _embedder(state: Any) -> Any:
    """The embedder, loaded on the first search and kept (MiniLM takes seconds to load)."""
    with _search_lock:
        if state.embedder is None:
            state.embedder = state.config.index_runtime.embedder()
        return state.embedder


@router.get("/search", summary="Semantic search over decisions")
def get_search(
    request: Request,
    conn: Conn,
    q: Annotated[str, Query(description="words describing the decision", **{**WORD, "max_length": 1000})],
    org: Annotated[str | None, Query(**TEXT)] = None,
    policy: Annotated[str | None, Query(**TEXT)] = None,
    status: Annotated[str | None, Query(**TEXT)] = None,
    since: Annotated[
        str | None, Query(description=f"decisions created at or after: {TIME_HELP}", **TIME)
    ] = None,
    k: Annotated[int, Query(ge=1, le=100, description="how many results")] = 10,
    quantization: Annotated[
        Literal["on", "off"] | None, Query(description="off: search the full vectors only")
    ] = None,
) -> dict[str, Any]:
    """The ``k`` decisions whose rationale is nearest in meaning to ``q``, as the ``search`` command:
    score, decision id, rationale (from PostgreSQL) and the index payload, with timings."""
    from orchestration_pipeline.lib.index.search import search_decisions, search_filter

    if not q.strip() or "\x00" in q:
        raise bad_parameter("q", "must be a few words describing the decision", q)
    state = request.app.state.api
    runtime = state.config.index_runtime
    if runtime is None:
        raise ApiError(
            503, "search_unavailable", "search is not configured on this server (no index runtime)"
        )
    filters = search_filter(org, policy, status, parse_time("since", since))
    use_quantization = runtime.quantization if quantization is None else quantization == "on"
    try:
        with runtime.open(_embedder(state)) as (index, embedder):
            response = search_decisions(
                conn, index, embedder, q, k=k, filters=filters, quantization=use_quantization
            )
    except OrchError as exc:
        raise ApiError(503, "search_unavailable", str(exc)) from None
    return response.as_dict()


@router.get("/decisions/executions", summary="Decision executions, newest first")
def get_executions(
    conn: Conn,
    policy: Annotated[str | None, Query(description="one policy's executions", **TEXT)] = None,
    state: Annotated[
        Literal["pending", "succeeded", "failed"] | None, Query(description="the outcome")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The admin screen's history: each execution's mode (``live`` or ``simulated``), result and
    error text, newest first."""
    from orchestration_pipeline.lib.executions.history import list_executions

    rows = list_executions(conn, policy_id=policy, state=state, limit=limit)
    for row in rows:
        row["mode"] = "simulated" if row["dry_run"] else "live"
    return {"rows": rows}


@router.get("/decisions/summary", summary="The execution summary cards")
def get_summary(conn: Conn) -> dict[str, Any]:
    """Policies (``total``, ``enabled``, ``dry_run_on``, ``live_on``), ``last_execution_at`` and
    the outcome counts."""
    from orchestration_pipeline.lib.db import require_schema
    from orchestration_pipeline.lib.executions.history import execution_summary
    from orchestration_pipeline.lib.executions.policies import EXECUTION_TABLES

    require_schema(conn, EXECUTION_TABLES, record_decision=False)
    return execution_summary(conn)


@router.get("/drift/latest", summary="The newest drift report")
def get_drift(conn: Conn) -> dict[str, Any]:
    """The newest reconciliation's drift report (counts per class, the action taken, samples);
    ``report`` is null before the first reconciliation."""
    from orchestration_pipeline.lib.projection.drift import recent_reports

    reports = recent_reports(conn, limit=1)
    return {"report": reports[0] if reports else None}


UUID_PATTERN = r"^[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}$"


@router.get("/changes", summary="What projection and reconciliation runs changed, per task")
def get_changes(
    conn: Conn,
    since: Annotated[str | None, Query(description=f"changes at or after: {TIME_HELP}", **TIME)] = None,
    run: Annotated[
        str | None, Query(description="a run id (a UUID): that run's changes", pattern=UUID_PATTERN)
    ] = None,
    task: Annotated[str | None, Query(description="one task's changes", **TEXT)] = None,
    cause: Annotated[
        Literal["event", "repair", "rebuild"] | None, Query(description="why it changed")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Newest first: per task, the field, before and after, and the cause (``event``, ``repair``,
    ``rebuild``), under the id of the run that changed it; with the total that match."""
    from orchestration_pipeline.lib.projection.changes import list_changes

    rows, total = list_changes(
        conn,
        since=parse_time("since", since),
        run_id=run,
        task_id=task,
        cause=cause,
        limit=limit,
        offset=offset,
    )
    return {"rows": rows, "total": total, "limit": limit, "offset": offset}


@health_router.get("/healthz", summary="The process answers")
def healthz() -> dict[str, str]:
    """200 while the process serves requests; says nothing about the database (see ``/readyz``)."""
    return {"status": "ok"}


@health_router.get(
    "/readyz",
    summary="The database answers and is migrated",
    responses={503: {"description": "Not ready: the reason names the fix"}},
)
def readyz(request: Request) -> JSONResponse:
    """200 when the orchestration DB answers and has every migration applied, else 503 naming why."""
    from orchestration_pipeline.lib.db import migration_status

    state = request.app.state.api
    try:
        with state.pool.connection(timeout=state.config.db_timeout_s) as conn:
            status = migration_status(conn, "orchestration")
    except Exception as exc:  # any failure means not ready; the reason names it
        return JSONResponse({"status": "not_ready", "reason": unavailable(exc).message}, status_code=503)
    body: dict[str, Any] = {
        "applied": len(status.applied),
        "pending": [m.filename for m in status.pending],
        "changed": [m.filename for m in status.drifted],
        "stream": state.hub.status(),
    }
    if not status.current:
        reason = "migrations pending or changed — run 'orchestration-pipeline db migrate'"
        return JSONResponse({"status": "not_ready", "reason": reason, **body}, status_code=503)
    return JSONResponse({"status": "ready", **body})
