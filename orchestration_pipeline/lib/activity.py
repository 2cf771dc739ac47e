"""Agent and orchestration activity queries, served from ``events`` by the indexes in 0019.

>>> rows = query_activity(conn, ActivityFilter(agent_type="coder", severity="error", limit=20))
>>> stats = activity_stats(conn, ActivityFilter(project_id="demo"))
>>> rows.to_dataframe()                    # or stats.to_dataframe("agents"), for a notebook

``severity`` and ``status`` filter by the word as stored; ``severity_meaning`` and
``status_meaning`` by what the word means (every synonym: ``status_meaning="failed"`` finds
``FAILURE``, ``error`` and ``failed``), through the synonym map of
:mod:`~orchestration_pipeline.lib.ingestion.status_words`.

**The stream.** Besides the newest-first queries, events can be read in commit order, by
position (:class:`StreamPosition`, the writing transaction ``ingest_xid`` and the ``event_id``),
as the projector reads them: :func:`read_stream` returns only events whose transaction is below
the commit horizon (the oldest transaction still running), so a transaction that commits late is
never skipped, and resuming from a position returns exactly the events after it. Ingestion sends
one ``NOTIFY`` on :data:`EVENTS_CHANNEL` per committed file; a reader listens on it to wake up,
and still polls, since notifications are not replayed after a disconnect.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.ingestion.envelope import EVENT_TYPES
from orchestration_pipeline.lib.ingestion.notify import EVENTS_CHANNEL
from orchestration_pipeline.lib.ingestion.status_words import (
    SEVERITY_MEANINGS,
    STATUS_MEANINGS,
    StatusWords,
    WordError,
    check_word,
    configured_status_words,
    meaning_sql,
)

if TYPE_CHECKING:
    import pandas

__all__ = [
    "EVENTS_CHANNEL",
    "MAX_LIMIT",
    "ActivityFilter",
    "ActivityRows",
    "ActivityStats",
    "StreamBatch",
    "StreamPosition",
    "activity_query",
    "activity_stats",
    "count_activity",
    "match_events",
    "query_activity",
    "read_stream",
    "stream_position",
]

MAX_LIMIT = 1000
#: The columns of an activity row, in order (a stream row adds ``position``).
ACTIVITY_COLUMNS = (
    "event_id",
    "event_type",
    "occurred_at",
    "session_id",
    "task_id",
    "source",
    "stage",
    "severity",
    "status",
    "duration_ms",
    "payload",
)
_SELECT = ", ".join(ACTIVITY_COLUMNS)

_STATUS_MEANING = meaning_sql("status", "status_words")
_SEVERITY_MEANING = meaning_sql("severity", "severity_words")


@dataclass(frozen=True)
class ActivityFilter:
    """Filters for activity queries; every field is optional."""

    project_id: str | None = None  # payload.project_id: the seed's "room"
    agent_type: str | None = None
    event_type: str | None = None
    severity: str | None = None  # the word as stored
    status: str | None = None  # the word as stored
    severity_meaning: str | None = None  # one of SEVERITY_MEANINGS
    status_meaning: str | None = None  # one of STATUS_MEANINGS
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0
    session_id: str | None = None  # last, so positional construction keeps its meaning
    task_id: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in (
            ("event_type", EVENT_TYPES),
            ("severity_meaning", SEVERITY_MEANINGS),
            ("status_meaning", STATUS_MEANINGS),
        ):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
        for name in ("severity", "status"):
            if getattr(self, name) is not None:
                try:
                    check_word(getattr(self, name), name)
                except WordError as exc:
                    raise ValueError(f"{exc} (words are matched as stored)") from None
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if self.offset < 0:
            raise ValueError("offset must be >= 0")
        if self.since and self.until and self.since > self.until:
            raise ValueError("since is after until")

    def where(self, words: StatusWords | None = None) -> tuple[str, dict[str, Any]]:
        """The SQL condition and its parameters (the synonym maps among them, for meanings)."""
        clauses, params = ["true"], _word_params(words)
        if self.project_id is not None:
            clauses.append("payload ? 'project_id' AND payload->>'project_id' = %(project_id)s")
            params["project_id"] = self.project_id
        if self.agent_type is not None:
            clauses.append("event_type LIKE 'agent.%%' AND payload->>'agent_type' = %(agent_type)s")
            params["agent_type"] = self.agent_type
        for name in ("event_type", "severity", "status", "session_id", "task_id"):
            if getattr(self, name) is not None:
                clauses.append(f"{name} = %({name})s")
                params[name] = getattr(self, name)
        for name, meaning in (("severity_meaning", _SEVERITY_MEANING), ("status_meaning", _STATUS_MEANING)):
            if getattr(self, name) is not None:
                clauses.append(f"{meaning} = %({name})s")
                params[name] = getattr(self, name)
        if self.since is not None:
            clauses.append("occurred_at >= %(since)s")
            params["since"] = self.since
        if self.until is not None:
            clauses.append("occurred_at < %(until)s")
            params["until"] = self.until
        return " AND ".join(clauses), params


def _word_params(words: StatusWords | None) -> dict[str, Any]:
    words = words or configured_status_words()
    return {"status_words": Jsonb(words.status.as_json()), "severity_words": Jsonb(words.severity.as_json())}


class ActivityRows(list):
    """Activity rows (dicts, newest first): a list, with :meth:`to_dataframe` for notebooks."""

    def to_dataframe(self, *, expand_payload: bool = False) -> pandas.DataFrame:
        """The rows as a DataFrame, one column per field (``occurred_at`` as UTC datetimes).

        ``expand_payload=True`` spreads the payload into ``payload.<key>`` columns (nested keys
        dotted), for a plot of, say, ``payload.agent_type``.
        """
        import pandas

        columns = list(self[0]) if self else list(ACTIVITY_COLUMNS)
        frame = pandas.DataFrame.from_records(list(self), columns=columns)
        frame["occurred_at"] = pandas.to_datetime(frame["occurred_at"], utc=True)
        if expand_payload and "payload" in frame:
            payload = pandas.json_normalize([row.get("payload") or {} for row in self]).add_prefix("payload.")
            frame = pandas.concat([frame.drop(columns="payload"), payload.set_axis(frame.index)], axis=1)
        return frame


def query_activity(
    conn: psycopg.Connection, flt: ActivityFilter, status_words: StatusWords | None = None
) -> ActivityRows:
    """Matching events, newest first, paged by ``limit``/``offset``."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(*activity_query(flt, status_words)).fetchall()
    end_read(conn)
    return ActivityRows(rows)


def count_activity(
    conn: psycopg.Connection,
    flt: ActivityFilter,
    status_words: StatusWords | None = None,
    *,
    cap: int | None = None,
) -> int:
    """How many events match ``flt`` (its ``limit`` and ``offset`` aside): the total of a paged list.

    With ``cap``, counting stops after ``cap + 1`` matches (a result above ``cap`` means "more
    than ``cap``"), so a total over a large unfiltered table costs a bounded read.
    """
    where, params = flt.where(status_words)
    if cap is None:
        statement = f"SELECT count(*) FROM events WHERE {where}"
    else:
        statement = (
            f"SELECT count(*) FROM (SELECT 1 FROM events WHERE {where} LIMIT %(count_cap)s) AS matched"
        )
        params = {**params, "count_cap": cap + 1}
    total = conn.execute(statement, params).fetchone()[0]
    end_read(conn)
    return total


def activity_query(
    flt: ActivityFilter, status_words: StatusWords | None = None
) -> tuple[str, dict[str, Any]]:
    """The SQL of :func:`query_activity` and its parameters (``EXPLAIN`` it to see the index it uses)."""
    where, params = flt.where(status_words)
    return (
        f"""SELECT {_SELECT}
            FROM events WHERE {where}
            ORDER BY occurred_at DESC, event_id LIMIT %(limit)s OFFSET %(offset)s""",
        {**params, "limit": flt.limit, "offset": flt.offset},
    )


# A task_end's outcome: what its status word means ('unknown' for a word the map lacks), or
# payload.success when it has no word (as the task projection reads it).
_TASK_OUTCOME = f"""CASE WHEN status IS NULL
                         THEN CASE WHEN payload->>'success' = 'true' THEN 'succeeded' ELSE 'failed' END
                         ELSE coalesce({_STATUS_MEANING}, 'unknown') END"""


class ActivityStats(dict):
    """What :func:`activity_stats` returns: a dict, with :meth:`to_dataframe` for notebooks."""

    PARTS = ("agents", "sources", "by_severity", "by_status")

    def to_dataframe(self, part: str = "agents") -> pandas.DataFrame:
        """One part as a DataFrame: ``agents`` or ``sources`` (a row each, with its success rate),
        ``by_severity`` or ``by_status`` (columns ``severity``/``status`` and ``count``)."""
        import pandas

        if part not in self.PARTS:
            raise ValueError(f"unknown part {part!r}; use one of {', '.join(self.PARTS)}")
        if part.startswith("by_"):
            key = part.removeprefix("by_")
            return pandas.DataFrame(list(self[part].items()), columns=[key, "count"])
        return pandas.DataFrame.from_records(self[part], columns=_STATS_COLUMNS[part])


_STATS_COLUMNS = {
    "agents": ["agent_type", "agent_name", "completed", "failed", "events", "success_rate"],
    "sources": [
        "source",
        "task_ends",
        "succeeded",
        "failed",
        "cancelled",
        "skipped",
        "unknown",
        "success_rate",
    ],
}


def activity_stats(
    conn: psycopg.Connection, flt: ActivityFilter | None = None, status_words: StatusWords | None = None
) -> ActivityStats:
    """Totals; counts by severity and by status (by meaning; a word without one as written);
    success rate per agent (completed / (completed + failed)); and per producer (``source``) the
    outcomes of its ``task_end`` events and their success rate (succeeded / (succeeded + failed))."""
    where, params = (flt or ActivityFilter()).where(status_words)
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(f"SELECT count(*) AS n FROM events WHERE {where}", params).fetchone()["n"]
        by_severity = {
            r["k"]: r["n"]
            for r in cur.execute(
                f"SELECT coalesce({_SEVERITY_MEANING}, severity, 'unset') AS k, count(*) AS n "
                f"FROM events WHERE {where} GROUP BY 1 ORDER BY 1",
                params,
            )
        }
        by_status = {
            r["k"]: r["n"]
            for r in cur.execute(
                f"SELECT coalesce({_STATUS_MEANING}, status, 'unset') AS k, count(*) AS n "
                f"FROM events WHERE {where} GROUP BY 1 ORDER BY 1",
                params,
            )
        }
        agents = cur.execute(
            f"""SELECT payload->>'agent_type' AS agent_type, payload->>'agent_name' AS agent_name,
                       count(*) FILTER (WHERE event_type = 'agent.completed') AS completed,
                       count(*) FILTER (WHERE event_type = 'agent.error' OR {_STATUS_MEANING} = 'failed') AS failed,
                       count(*) AS events
                FROM events WHERE {where} AND event_type LIKE 'agent.%%'
                GROUP BY 1, 2 ORDER BY 1, 2""",
            params,
        ).fetchall()
        sources = cur.execute(
            f"""SELECT source, count(*) AS task_ends,
                       count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
                       count(*) FILTER (WHERE outcome = 'failed') AS failed,
                       count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled,
                       count(*) FILTER (WHERE outcome = 'skipped') AS skipped,
                       count(*) FILTER (WHERE outcome = 'unknown') AS unknown
                FROM (SELECT source, {_TASK_OUTCOME} AS outcome
                      FROM events WHERE {where} AND event_type = 'task_end') AS ends
                GROUP BY 1 ORDER BY 1 NULLS LAST""",
            params,
        ).fetchall()
    end_read(conn)
    for a in agents:
        finished = a["completed"] + a["failed"]
        a["success_rate"] = round(a["completed"] / finished, 4) if finished else None
    for s in sources:
        finished = s["succeeded"] + s["failed"]
        s["success_rate"] = round(s["succeeded"] / finished, 4) if finished else None
    return ActivityStats(
        total=total, by_severity=by_severity, by_status=by_status, agents=agents, sources=sources
    )


# --- the stream: events in commit order, by position ---------------------------------------

_POSITION = re.compile(
    r"(\d{1,20})(?:-([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}))?"
)
STREAM_MAX_LIMIT = 5000


@dataclass(frozen=True)
class StreamPosition:
    """A place in the stream of events: after ``event_id`` of transaction ``xid``, or, with no
    ``event_id``, before every event of transaction ``xid`` (all events of older transactions read).

    Written ``"<xid>-<event_id>"`` or ``"<xid>"``: the SSE ``id:`` of each message, and what a
    client sends back as ``Last-Event-ID``. Positions compare in stream order.
    """

    xid: int
    event_id: uuid.UUID | None = None

    @classmethod
    def parse(cls, text: str) -> StreamPosition:
        """The position written by :meth:`__str__`; ValueError saying what a position looks like."""
        found = _POSITION.fullmatch(text.strip()) if isinstance(text, str) else None
        if found is None:
            raise ValueError(
                f"{str(text)[:80]!r} is not a stream position: send the id of the last message received, "
                "like 7421-0b6f3c4e-8a57-4f5e-9d2a-4c1e2f3a4b5c, or a bare transaction number like 7421"
            )
        return cls(int(found[1]), uuid.UUID(found[2]) if found[2] else None)

    def __str__(self) -> str:
        return str(self.xid) if self.event_id is None else f"{self.xid}-{self.event_id}"

    def key(self) -> tuple[int, int, int]:
        """Sort key in stream order (PostgreSQL orders uuids bytewise, as their integer value)."""
        return (self.xid, 0, 0) if self.event_id is None else (self.xid, 1, self.event_id.int)

    def __lt__(self, other: StreamPosition) -> bool:
        return self.key() < other.key()

    def __le__(self, other: StreamPosition) -> bool:
        return self.key() <= other.key()


@dataclass(frozen=True)
class StreamBatch:
    """Events after a position, in stream order (each row with its ``position``), and the position
    the next read starts from: the last row's when the batch is full, else the bound it read up to.

    ``xmax`` is the first transaction id not yet assigned when it read: every transaction that had
    committed by then has a smaller id, so once a read's horizon reaches it, their events are read.
    """

    rows: ActivityRows
    position: StreamPosition
    full: bool
    xmax: int = 0


def _snapshot(conn: psycopg.Connection) -> tuple[StreamPosition, int]:
    """The horizon (before every event of the oldest transaction still running: everything older
    has finished) and the snapshot's xmax."""
    xmin, xmax = conn.execute(
        "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text FROM pg_current_snapshot() AS s"
    ).fetchone()
    return StreamPosition(int(xmin)), int(xmax)


def stream_position(conn: psycopg.Connection) -> StreamPosition:
    """The stream's current end: reading from here returns only events that commit from now on
    (and those of transactions still running)."""
    position, _ = _snapshot(conn)
    end_read(conn)
    return position


def _bound_sql(after: StreamPosition, upto: StreamPosition) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"after_xid": str(after.xid), "upto_xid": str(upto.xid)}
    if after.event_id is None:
        lower = "ingest_xid >= %(after_xid)s::xid8"
    else:
        lower = "(ingest_xid, event_id) > (%(after_xid)s::xid8, %(after_id)s)"
        params["after_id"] = after.event_id
    if upto.event_id is None:
        upper = "ingest_xid < %(upto_xid)s::xid8"
    else:
        upper = "(ingest_xid, event_id) <= (%(upto_xid)s::xid8, %(upto_id)s)"
        params["upto_id"] = upto.event_id
    return f"{lower} AND {upper}", params


def read_stream(
    conn: psycopg.Connection,
    after: StreamPosition,
    *,
    upto: StreamPosition | None = None,
    flt: ActivityFilter | None = None,
    limit: int = 500,
    status_words: StatusWords | None = None,
) -> StreamBatch:
    """Up to ``limit`` events after ``after`` that match ``flt`` (its limit and offset aside), in
    commit order, from transactions below the commit horizon and at most ``upto``.

    Resuming from the returned position gives the next events, none twice and none skipped: a
    transaction still running when this reads holds the horizon back until it ends.
    """
    if not 1 <= limit <= STREAM_MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {STREAM_MAX_LIMIT}")
    horizon, xmax = _snapshot(conn)  # its own statement: every transaction below it has finished
    bound = horizon if upto is None or horizon < upto else upto
    if bound <= after:
        end_read(conn)
        return StreamBatch(ActivityRows(), after, full=False, xmax=xmax)
    where, params = (flt or ActivityFilter()).where(status_words)
    bounds, bound_params = _bound_sql(after, bound)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""SELECT {_SELECT}, ingest_xid::text AS ingest_xid FROM events
                WHERE {where} AND {bounds} ORDER BY ingest_xid, event_id LIMIT %(stream_limit)s""",
            {**params, **bound_params, "stream_limit": limit},
        ).fetchall()
    end_read(conn)
    for row in rows:
        row["position"] = str(StreamPosition(int(row.pop("ingest_xid")), row["event_id"]))
    full = len(rows) == limit
    position = StreamPosition.parse(rows[-1]["position"]) if full else bound
    return StreamBatch(ActivityRows(rows), position, full=full, xmax=xmax)


def match_events(
    conn: psycopg.Connection,
    flt: ActivityFilter,
    rows: list[dict[str, Any]],
    status_words: StatusWords | None = None,
) -> set[uuid.UUID]:
    """The ids of ``rows`` (as :func:`read_stream` returns them) that match ``flt``, decided by the
    same SQL as :func:`query_activity`, so a live feed filters exactly as a query does."""
    if not rows:
        return set()
    where, params = flt.where(status_words)
    times = [row["occurred_at"] for row in rows]
    found = conn.execute(
        f"""SELECT event_id FROM events
            WHERE {where} AND event_id = ANY(%(ids)s) AND occurred_at BETWEEN %(t_min)s AND %(t_max)s""",
        {**params, "ids": [row["event_id"] for row in rows], "t_min": min(times), "t_max": max(times)},
    ).fetchall()
    end_read(conn)
    return {r[0] for r in found}
