"""``GET /api/activity/stream``: the live activity feed as Server-Sent Events.

A client opens it with the activity filters; it receives each matching event once its ingestion
commits, as ``id: <position>`` and ``data: <event JSON>``, and a ``: heartbeat`` comment after 15
idle seconds so proxies keep the connection. It starts from ``Last-Event-ID`` (a reconnecting
``EventSource`` sends it), else from ``after`` (the ``position`` of an ``/api/activity`` page), else
from now. The hub itself is :class:`~orchestration_pipeline.lib.api.stream.StreamHub`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from orchestration_pipeline.lib.activity import StreamPosition
from orchestration_pipeline.lib.api.errors import ERROR_RESPONSES, ApiError
from orchestration_pipeline.lib.api.routes import Filters
from orchestration_pipeline.lib.api.stream import stream_filter

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

POSITION_HELP = "a stream position: the id of an SSE message, or the position of an /api/activity page"
_POSITION = {"max_length": 100, "pattern": r"^[0-9]{1,20}(-[0-9A-Fa-f-]{36})?$"}


def _start(
    header: str | None, after: str | None, name_header: str = "Last-Event-ID"
) -> StreamPosition | None:
    for name, value in ((name_header, header), ("after", after)):
        if value:
            try:
                return StreamPosition.parse(value)
            except ValueError as exc:
                kind = "header" if name == name_header else "query parameter"
                raise ApiError(400, "invalid_parameter", f"{kind} {name}: {exc}", name) from None
    return None


@router.get(
    "/activity/stream",
    summary="Live activity (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An endless event stream"}},
)
async def get_activity_stream(
    request: Request,
    flt: Filters,
    after: Annotated[str | None, Query(description=f"start after {POSITION_HELP}", **_POSITION)] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description=f"resume after {POSITION_HELP}", **_POSITION),
    ] = None,
) -> StreamingResponse:
    """Each new event matching the filters, once its ingestion commits, in commit order.

    Each message's ``id:`` is the event's stream position: reconnecting with ``Last-Event-ID``
    delivers exactly the events after it, none twice and none skipped.
    """
    hub = request.app.state.api.hub
    start = _start(last_event_id, after)
    if not hub.ready:
        reason = hub.last_error or "the stream is starting"
        raise ApiError(
            503,
            "stream_unavailable",
            f"the activity stream cannot read the database yet ({reason}) — check that it runs "
            "('orchestration-pipeline up' for the embedded one); the client retries by itself",
        )
    cursor = start or hub.position
    body = hub.messages(cursor, stream_filter(flt), request.app.state.api.config.heartbeat_s)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)
