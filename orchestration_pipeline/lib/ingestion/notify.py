"""Waking the live feed: one ``NOTIFY`` per committed ingestion transaction, never per row.

PostgreSQL delivers a notification when the transaction that sent it commits, so a listener woken
by it can read the new events from the table by position. The payload is only a hint (the file's
hash prefix): notifications are limited to 8,000 bytes, not replayed after a disconnect, and each
notifying commit takes a global lock, so readers never rely on them alone (they also poll).
"""

from __future__ import annotations

import psycopg

EVENTS_CHANNEL = "orch_events"


def notify_new_events(conn: psycopg.Connection, hint: str) -> None:
    """Queue one wake-up on :data:`EVENTS_CHANNEL`, delivered when the caller's transaction commits."""
    conn.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, hint[:64]))
