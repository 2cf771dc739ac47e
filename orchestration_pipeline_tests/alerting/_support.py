"""A webhook receiver on the loopback (a real HTTP server in a thread), and alert table readers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orchestration_pipeline.lib.db import connection


@dataclass
class Receiver:
    """What the receiver saw: every request's status and body, and the bodies it accepted."""

    url: str
    fail_first: int
    fail_status: int
    requests: list[tuple[int, dict]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def accepted(self) -> list[dict]:
        with self.lock:
            return [body for status, body in self.requests if status == 200]


@contextmanager
def webhook_receiver(fail_first: int = 0, fail_status: int = 503) -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 (a free port) that answers ``fail_status`` to the first
    ``fail_first`` POSTs and 200 to the rest, recording each body."""
    receiver = Receiver(url="", fail_first=fail_first, fail_status=fail_status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with receiver.lock:
                status = receiver.fail_status if len(receiver.requests) < receiver.fail_first else 200
                receiver.requests.append((status, body))
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"try later")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/secret-token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def alerts_of(dsn: str) -> list[dict]:
    """Every alert row, oldest first, as dicts."""
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM alerts ORDER BY alert_id")
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def notices_of(dsn: str) -> list[tuple[int, str, str]]:
    """(alert_id, kind, state) of every notice, in order."""
    with connection(dsn) as conn:
        return [
            tuple(r)
            for r in conn.execute("SELECT alert_id, kind, state FROM alert_notices ORDER BY notice_id")
        ]


def attempts_of(dsn: str) -> list[tuple[int, str, int | None, str]]:
    """(attempt, outcome, http_status, target) of every webhook attempt, in order."""
    with connection(dsn) as conn:
        return [
            tuple(r)
            for r in conn.execute(
                "SELECT attempt, outcome, http_status, target FROM alert_delivery_attempts ORDER BY attempt_id"
            )
        ]


def report_freshness_change(instance, key, new: str, previous: str, at: float) -> None:
    """Record what Dagster's freshness daemon writes when an asset's freshness state changes.

    Dagster has no public constructor for that event, so this is the one place the tests reach into
    ``dagster._core``: when Dagster renames or moves it, this import fails, naming the place to
    update (the reader in ``defs/alerting/events.py`` is tested against what it writes).
    """
    from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

    instance.report_runless_asset_event(
        FreshnessStateChange(
            key=key,
            new_state=FreshnessState[new],
            previous_state=FreshnessState[previous],
            state_change_timestamp=at,
        )
    )
