"""The live activity feed: one reader per process tails ``events``; every SSE client is served from it.

**Positions, not timestamps.** The hub reads new events in commit order with
:func:`~orchestration_pipeline.lib.activity.read_stream`, only below the commit horizon, so an
ingestion transaction that commits late is delivered, never skipped. Each SSE message's ``id:``
is the event's position (``"<ingest_xid>-<event_id>"``); a client that reconnects with
``Last-Event-ID`` resumes right after it: from the in-memory buffer of recent events when it
still covers the position, else from the database. No gap, no repeat.

**Wake-ups, not payloads.** Ingestion sends one ``NOTIFY orch_events`` per committed file; the hub
LISTENs on a connection of its own only to wake up and read the table, and polls every
``poll_interval_s`` anyway, since a notification is lost while the listener reconnects.

**One read, many clients.** Each event is read and encoded once, however many clients follow it.
A client with filters (a project is the seed's "room") gets the events that match them, decided
by the same SQL as ``/api/activity`` (:func:`~orchestration_pipeline.lib.activity.match_events`),
once per distinct filter and event. A slow client only lags; when it falls behind the buffer it
reads from the database, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.activity import (
    EVENTS_CHANNEL,
    ActivityFilter,
    StreamPosition,
    match_events,
    read_stream,
    stream_position,
)
from orchestration_pipeline.lib.ingestion.status_words import StatusWords

log = logging.getLogger(__name__)

READ_BATCH = 1000  # events per read of the hub
CATCH_UP_BATCH = 500  # events per database read of a client resuming from an old position
MATCH_CHUNK = 1000  # events per filter query
RETRY_MS = 2000  # how soon a client reconnects after the stream ends


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def public_row(row: dict[str, Any], words: StatusWords) -> dict[str, Any]:
    """An event row as the API serves it: plus the meanings of its severity and status words."""
    return {
        **row,
        "severity_meaning": words.severity.meaning(row.get("severity")),
        "status_meaning": words.status.meaning(row.get("status")),
    }


def encode_message(row: dict[str, Any], words: StatusWords) -> bytes:
    """One SSE message: ``id:`` the event's position, ``data:`` the event as one line of JSON."""
    data = json.dumps(public_row(row, words), separators=(",", ":"), default=_json_default)
    return f"id: {row['position']}\ndata: {data}\n\n".encode()


@dataclass(eq=False)
class _Entry:
    """One buffered event: where it is, and its message, encoded once for every client."""

    key: tuple[int, int, int]
    event_id: uuid.UUID
    occurred_at: datetime
    message: bytes
    matches: dict[ActivityFilter, bool] = field(default_factory=dict)


def stream_filter(flt: ActivityFilter) -> ActivityFilter | None:
    """The filter a stream matches with (limit and offset do not apply); None when it has none."""
    normal = dataclasses.replace(flt, limit=100, offset=0)
    return None if normal == ActivityFilter() else normal


class StreamHub:
    """Tails ``events`` by position and serves every SSE client of this process from one buffer.

    The buffer holds every event in ``(floor, position]``, at most ``buffer_events`` of them.
    """

    def __init__(self, pool: ConnectionPool, words: StatusWords, *, dsn: str, config: Any):
        self.pool, self.words, self.dsn, self.config = pool, words, dsn, config
        self.position: StreamPosition | None = None  # None until the first read succeeds
        self.floor: StreamPosition | None = None
        self.generation = 0  # bumped whenever events are added
        self.closed = False
        self.listening = False
        self.last_error: str | None = None
        self.counts = {"reads": 0, "events": 0, "notifications": 0, "polls": 0, "catch_up_reads": 0}
        self._entries: list[_Entry] = []
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._locks: dict[ActivityFilter, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task] = []

    # --- running ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start tailing (and listening, unless the config says polling only)."""
        self._tasks.append(asyncio.create_task(self._tail(), name="activity-stream-tail"))
        if self.config.listen:
            self._tasks.append(asyncio.create_task(self._listen(), name="activity-stream-listen"))

    def close_streams(self) -> None:
        """End every open stream (clients reconnect, with ``Last-Event-ID``, to whoever serves next)."""
        self.closed = True
        self._changed.set()

    async def stop(self) -> None:
        """End the streams and stop tailing and listening."""
        self.close_streams()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    @property
    def ready(self) -> bool:
        """True once the hub knows where the stream is (its first read succeeded), until it closes."""
        return self.position is not None and not self.closed

    async def _run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(conn, *args, **kwargs)`` on a pooled connection, in a worker thread."""

        def call() -> Any:
            with self.pool.connection(timeout=self.config.db_timeout_s) as conn:
                return func(conn, *args, **kwargs)

        return await asyncio.to_thread(call)

    async def _tail(self) -> None:
        """Read, then sleep until woken or the poll interval passes.

        A notification means its transaction has committed, but its events are readable only
        once every older transaction has finished too. So after a wake-up the hub notes the
        snapshot's xmax and reads again soon (20 ms, doubling up to the poll interval) until the
        horizon has passed it, rather than waiting for the next poll.
        """
        backoff, target, notified, delay = 0.25, 0, False, self.config.poll_interval_s
        while not self.closed:
            self._wake.clear()  # before reading: a wake-up during the read triggers another one
            try:
                horizon, xmax = await self._read_new()
            except (psycopg.Error, PoolTimeout, OrchError, OSError) as exc:
                self.last_error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning(
                    "activity stream: reading events failed (%s); retrying in %.1f s",
                    self.last_error,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.poll_interval_s)
                continue
            backoff, self.last_error = 0.25, None
            if notified:
                target = max(target, xmax)
            if horizon < target:  # a notified transaction's events are held back by an older one
                delay = 0.02 if notified else min(delay * 2, self.config.poll_interval_s)
            else:
                delay = self.config.poll_interval_s
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
                notified = True
            except TimeoutError:
                notified = False
                self.counts["polls"] += 1

    async def _read_new(self) -> tuple[int, int]:
        """Read every event committed below the horizon; returns the horizon's and the snapshot's xmax."""
        if self.position is None:
            start = await self._run(stream_position)
            self.position = self.floor = start
        while True:
            batch = await self._run(read_stream, self.position, limit=READ_BATCH)
            self.counts["reads"] += 1
            self._append(batch.rows, batch.position)
            if not batch.full:
                return batch.position.xid, batch.xmax

    def _append(self, rows: list[dict[str, Any]], position: StreamPosition) -> None:
        assert self.position is not None
        if rows:
            for row in rows:
                self._entries.append(
                    _Entry(
                        StreamPosition.parse(row["position"]).key(),
                        row["event_id"],
                        row["occurred_at"],
                        encode_message(row, self.words),
                    )
                )
            self.counts["events"] += len(rows)
            excess = len(self._entries) - self.config.buffer_events
            if excess > self.config.buffer_events // 4:  # trim in steps, not on every append
                dropped = self._entries[excess - 1]
                self.floor = StreamPosition(dropped.key[0], uuid.UUID(int=dropped.key[2]))
                del self._entries[:excess]
        if self.position < position:
            self.position = position
        if rows:
            self.generation += 1
            self._changed.set()
            self._changed = asyncio.Event()

    async def _listen(self) -> None:
        """LISTEN on a connection of its own; each notification only wakes the tail."""
        backoff = 0.5
        while not self.closed:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=10
                ) as conn:
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    self.listening, backoff = True, 0.5
                    self._wake.set()  # anything committed while not listening
                    async for _ in conn.notifies():
                        self.counts["notifications"] += 1
                        self._wake.set()
            except (psycopg.Error, OSError) as exc:
                log.warning("activity stream: LISTEN %s failed (%s); polling meanwhile", EVENTS_CHANNEL, exc)
            finally:
                self.listening = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    # --- serving clients --------------------------------------------------------------------

    def take(self, cursor: StreamPosition) -> tuple[list[_Entry], StreamPosition] | None:
        """The buffered events after ``cursor`` and the position they reach; None when the buffer
        no longer reaches back to ``cursor`` (read those from the database)."""
        assert self.position is not None and self.floor is not None
        if cursor < self.floor:
            return None
        start = bisect.bisect_right(self._entries, cursor.key(), key=attrgetter("key"))
        return self._entries[start:], max(cursor, self.position)

    async def select(self, entries: list[_Entry], flt: ActivityFilter) -> list[_Entry]:
        """The entries matching ``flt``, asking the database once per filter and event."""
        if any(flt not in e.matches for e in entries):
            lock = self._locks.setdefault(flt, asyncio.Lock())
            async with lock:
                unknown = [e for e in entries if flt not in e.matches]
                for i in range(0, len(unknown), MATCH_CHUNK):
                    chunk = unknown[i : i + MATCH_CHUNK]
                    rows = [{"event_id": e.event_id, "occurred_at": e.occurred_at} for e in chunk]
                    found = await self._run(match_events, flt, rows, self.words)
                    for e in chunk:
                        e.matches[flt] = e.event_id in found
            if not lock.locked():
                self._locks.pop(flt, None)
        return [e for e in entries if e.matches[flt]]

    async def catch_up(
        self, cursor: StreamPosition, flt: ActivityFilter | None
    ) -> tuple[bytes, StreamPosition]:
        """Messages for the events after ``cursor`` up to the hub's position, read from the database."""
        self.counts["catch_up_reads"] += 1
        batch = await self._run(
            read_stream, cursor, upto=self.position, flt=flt, limit=CATCH_UP_BATCH, status_words=self.words
        )
        return b"".join(encode_message(row, self.words) for row in batch.rows), batch.position

    async def wait(self, generation: int, timeout: float) -> None:
        """Until events are added after ``generation`` (or the streams close), at most ``timeout`` s."""
        if self.generation != generation or self.closed:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    async def messages(
        self, cursor: StreamPosition, flt: ActivityFilter | None, heartbeat_s: float
    ) -> AsyncIterator[bytes]:
        """The SSE body for one client, from ``cursor`` on: events, and a heartbeat comment when idle.

        Should the database fail while this client catches up, the stream ends; the client
        reconnects with ``Last-Event-ID`` and resumes from its last event.
        """
        loop = asyncio.get_running_loop()
        yield f"retry: {RETRY_MS}\n: stream from {cursor}\n\n".encode()
        last_sent = loop.time()
        while not self.closed:
            generation = self.generation
            try:
                chunk, cursor = await self._next_chunk(cursor, flt)
            except (psycopg.Error, PoolTimeout, OrchError, OSError) as exc:
                log.warning("activity stream: ending a stream at %s, the database failed: %s", cursor, exc)
                return
            if chunk:
                yield chunk
                last_sent = loop.time()
                continue
            idle = loop.time() - last_sent
            if idle >= heartbeat_s:
                yield b": heartbeat\n\n"
                last_sent = loop.time()
                continue
            await self.wait(generation, heartbeat_s - idle)

    async def _next_chunk(
        self, cursor: StreamPosition, flt: ActivityFilter | None
    ) -> tuple[bytes, StreamPosition]:
        """The messages after ``cursor`` (from the buffer, else the database) and the new cursor."""
        taken = self.take(cursor)
        if taken is None:
            return await self.catch_up(cursor, flt)
        entries, cursor = taken
        if flt is not None and entries:
            entries = await self.select(entries, flt)
        return b"".join(e.message for e in entries), cursor

    def status(self) -> dict[str, Any]:
        """What the hub is doing, for ``/readyz``."""
        return {
            "position": None if self.position is None else str(self.position),
            "listening": self.listening,
            "buffered_events": len(self._entries),
            "last_error": self.last_error,
            **self.counts,
        }
