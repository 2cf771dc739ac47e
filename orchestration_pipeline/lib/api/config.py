"""What the HTTP API needs to run, and who may call it.

The API binds to 127.0.0.1 by default. Bound to any other address it serves only callers that
present the bearer token ``ORCH_API_TOKEN``, and it refuses to start without one
(:func:`check_bind`). When the token is set, it is required on every bind.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Any

from orchestration_pipeline.errors import ConfigError

TOKEN_ENV = "ORCH_API_TOKEN"
#: The cookie the page sets from a token typed in, for EventSource (which cannot send headers).
TOKEN_COOKIE = "orch_api_token"
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class ApiConfig:
    """The API's settings.

    ``dsn`` is the orchestration DB; ``index_runtime`` opens the vector index for ``/api/search``
    (None: search answers 503 naming why). The stream wakes on ``NOTIFY`` and polls every
    ``poll_interval_s`` in case a notification was lost; an idle stream gets a heartbeat every
    ``heartbeat_s`` so proxies keep it open; ``buffer_events`` recent events are kept in memory
    for clients that reconnect (older positions are read from the database). A request waits at
    most ``db_timeout_s`` for a database connection, then answers 503.
    """

    dsn: str
    host: str = "127.0.0.1"
    token: str | None = None
    index_runtime: Any = None
    poll_interval_s: float = 2.0
    heartbeat_s: float = 15.0
    buffer_events: int = 10_000
    pool_size: int = 8
    db_timeout_s: float = 5.0  # how long a request waits for a connection before its 503
    listen: bool = True  # LISTEN for wake-ups (False: polling only)

    def __post_init__(self) -> None:
        check_bind(self.host, self.token)
        for name in ("poll_interval_s", "heartbeat_s", "db_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1 or ``localhost``."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_bind(host: str, token: str | None) -> None:
    """Refuse a bind other machines can reach without a token, and a token too short to be one."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{TOKEN_ENV} is {len(token)} characters; use at least {MIN_TOKEN_CHARS} random ones, "
            "e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without a token: other machines could read the activity — set "
            f"{TOKEN_ENV} (e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
            "or bind to 127.0.0.1"
        )


def token_matches(expected: str, authorization: str | None, cookie: str | None) -> bool:
    """True when the ``Authorization: Bearer`` header or the token cookie carries ``expected``
    (compared in constant time)."""
    offered = []
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            offered.append(value.strip())
    if cookie:
        offered.append(cookie)
    return any(hmac.compare_digest(value.encode(), expected.encode()) for value in offered)
