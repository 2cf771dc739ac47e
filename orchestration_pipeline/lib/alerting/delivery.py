"""The sinks after the ``alerts`` table: a Slack-compatible webhook, and stderr.

Notices are written with their alerts (:mod:`.streaks`); :func:`deliver_pending` delivers them
after commit. A deliverer leases one notice at a time (so two sensors never send the same one),
prints it to stderr, and POSTs it to the webhook with bounded retries and exponential backoff,
recording every attempt in ``alert_delivery_attempts`` as it happens. A 2xx ends it (delivered);
a 4xx other than 408 and 429 is a refusal that retrying cannot fix (failed at once); anything else
(5xx, 408, 429, a timeout, a refused connection) is retried until the attempts run out (failed).
A pass stops at its deadline, or after a notice whose attempts all failed (the webhook is down):
the notices left are delivered by a later pass.

HTTP goes through ``urllib.request`` from the standard library: one JSON POST with a timeout needs
nothing more, and the pipeline does not depend on an HTTP client package for it.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.lib.alerting.model import AlertError, one_line, ui_link

USER_AGENT = "orchestration-pipeline-alerts"
#: Statuses worth retrying among the 4xx: request timeout, too many requests.
RETRYABLE_4XX = (408, 429)
NOTICE_TITLES = {"raised": "Alert", "escalated": "Alert escalated", "resolved": "Resolved"}
SEVERITY_MARKS = {"info": "ℹ️", "warning": "⚠️", "error": "🔴", "critical": "🚨"}
DETAIL_FIELDS_MAX = 8
FIELD_TEXT_MAX = 500


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how hard to try: ``attempts`` per round, waiting ``backoff_s`` × 2^n (at most
    ``backoff_max_s``) between them, each request given ``timeout_s``."""

    url: str
    attempts: int = 4
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        check_webhook_url(self.url)
        if self.attempts < 1:
            raise AlertError("webhook attempts must be at least 1")

    @property
    def target(self) -> str:
        """The scheme and host, safe to store and print (the path of a webhook URL is its secret)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))


def check_webhook_url(url: str) -> str:
    """``url`` when it is an http(s) URL with a host; an error that never echoes it otherwise."""
    try:
        parts = urlsplit(url or "")
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed "[": its message would quote the URL
        usable = False
    if not usable:
        raise AlertError(
            "ORCH_ALERT_WEBHOOK_URL must be an http:// or https:// URL (e.g. a Slack incoming webhook) — "
            "fix it, or unset it to alert only to the alerts table and stderr"
        )
    return url


@dataclass(frozen=True)
class PostResult:
    """One HTTP attempt: delivered, or why not and whether trying again may help."""

    delivered: bool
    http_status: int | None = None
    error: str | None = None
    retryable: bool = True
    retry_after_s: float | None = None


def post_json(url: str, body: dict[str, Any], timeout_s: float) -> PostResult:
    """POST ``body`` as JSON; never raises for a network or HTTP failure."""
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", "User-Agent": USER_AGENT}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (http(s) checked)
            return PostResult(True, response.status)
    except urllib.error.HTTPError as exc:
        text = exc.read(300).decode("utf-8", "replace") if exc.fp else ""
        retry_after = _seconds(exc.headers.get("Retry-After")) if exc.headers else None
        retryable = exc.code >= 500 or exc.code in RETRYABLE_4XX
        return PostResult(
            False, exc.code, one_line(f"HTTP {exc.code} {exc.reason}: {text}", 300), retryable, retry_after
        )
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return PostResult(False, None, one_line(f"{type(exc).__name__}: {reason}", 300))


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff applies instead


# --- the message -------------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Text for Slack's mrkdwn: &, < and > are control characters there."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _detail_fields(details: dict[str, Any]) -> list[dict[str, str]]:
    """The check's metadata (counts, sample ids) as Slack fields, bounded."""
    shown = dict(details.get("metadata") or {})
    for key in ("partition", "reason", "state", "policy"):
        if details.get(key):
            shown[key] = details[key]
    fields = []
    for key, value in list(shown.items())[:DETAIL_FIELDS_MAX]:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        fields.append(
            {"type": "mrkdwn", "text": f"*{_escape(key)}*\n{_escape(one_line(text, FIELD_TEXT_MAX))}"}
        )
    return fields


def slack_payload(alert: dict[str, Any], kind: str, *, ui_url: str | None = None) -> dict[str, Any]:
    """A Slack-compatible message: ``text`` (the fallback one line) and ``blocks``."""
    title = NOTICE_TITLES[kind]
    severity = alert["severity"]
    mark = "✅" if kind == "resolved" else SEVERITY_MARKS.get(severity, "")
    line = alert["resolution"] if kind == "resolved" and alert.get("resolution") else alert["message"]
    text = f"{mark} {title} #{alert['alert_id']} [{severity.upper()}] {line}".strip()
    link = ui_link(alert.get("link_path"), ui_url)
    context = [f"source `{_escape(alert['source'])}`"]
    if link:
        context.append(f"<{link}|Dagster UI>" if link.startswith("http") else f"Dagster UI `{_escape(link)}`")
    if alert.get("runbook"):
        context.append(f"runbook `{_escape(alert['runbook'])}`")
    if guide_link(alert):
        context.append(f"operator guide `{_escape(guide_link(alert))}`")
    if alert.get("occurrences", 1) > 1:
        context.append(f"failed {alert['occurrences']} times")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{mark} {title} #{alert['alert_id']} "
                                                                f"[{severity.upper()}]*\n{_escape(line)}"}},
    ]  # fmt: skip
    fields = [] if kind == "resolved" else _detail_fields(alert.get("details") or {})
    if fields:
        blocks.append({"type": "section", "fields": fields})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    return {"text": text, "blocks": blocks}


def stderr_line(alert: dict[str, Any], kind: str) -> str:
    """One line for stderr: what, how bad, where to look."""
    line = alert["resolution"] if kind == "resolved" and alert.get("resolution") else alert["message"]
    extra = "".join(
        f" | {label} {alert[k]}" for label, k in (("ui", "link_path"), ("runbook", "runbook")) if alert.get(k)
    )
    guide = guide_link(alert)
    return f"alert #{alert['alert_id']} {kind} [{alert['severity']}] {line}{extra}" + (
        f" | guide {guide}" if guide else ""
    )


#: Every check's entry in the operator guide (generated from the Definitions: docs/operator-guide.md).
OPERATOR_GUIDE = "docs/operator-guide.md"


def guide_link(alert: dict[str, Any]) -> str | None:
    """The operator guide's entry of the check an alert is about (None for runs and freshness)."""
    source = str(alert.get("source") or "")
    if not source.startswith("check:"):
        return None
    return f"{OPERATOR_GUIDE}#{source.rsplit(':', 1)[-1]}"


# --- delivering --------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    unsent: int = 0
    left_pending: int = 0
    attempts: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.delivered} delivered, {self.failed} failed, {self.unsent} unsent (no webhook), "
            f"{self.left_pending} left pending; {self.attempts} webhook attempts"
        )


_NOTICE = """SELECT n.notice_id, n.kind, n.attempts, a.*
             FROM alert_notices n JOIN alerts a USING (alert_id) WHERE n.notice_id = %s"""


def _claim(conn: psycopg.Connection, lease_s: float) -> dict[str, Any] | None:
    """Lease the oldest pending notice nobody holds; None when there is none."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """UPDATE alert_notices SET leased_until = now() + make_interval(secs => %s)
               WHERE notice_id = (SELECT notice_id FROM alert_notices
                                  WHERE state = 'pending' AND (leased_until IS NULL OR leased_until < now())
                                  ORDER BY notice_id LIMIT 1 FOR UPDATE SKIP LOCKED)
               RETURNING notice_id""",
            (lease_s,),
        ).fetchone()
        return None if row is None else cur.execute(_NOTICE, (row["notice_id"],)).fetchone()


def _finish(conn: psycopg.Connection, notice_id: int, state: str) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE alert_notices SET state = %s, finished_at = now(), leased_until = NULL WHERE notice_id = %s",
            (state, notice_id),
        )


def _record(
    conn: psycopg.Connection, notice_id: int, config: WebhookConfig, result: PostResult, ms: int
) -> None:
    """One attempt, committed at once: the record survives whatever happens next."""
    with conn.transaction():
        conn.execute(
            """INSERT INTO alert_delivery_attempts (notice_id, sink, attempt, outcome, http_status, error,
                                                    duration_ms, target)
               SELECT %s, 'webhook', coalesce(max(attempt), 0) + 1, %s, %s, %s, %s, %s
               FROM alert_delivery_attempts WHERE notice_id = %s AND sink = 'webhook'""",
            (notice_id, "delivered" if result.delivered else "failed", result.http_status, result.error, ms,
             config.target, notice_id),
        )  # fmt: skip
        conn.execute("UPDATE alert_notices SET attempts = attempts + 1 WHERE notice_id = %s", (notice_id,))


def _send(
    conn: psycopg.Connection,
    notice: dict[str, Any],
    config: WebhookConfig,
    deadline: float,
    report: DeliveryReport,
    *,
    ui_url: str | None,
    post: Callable[[str, dict[str, Any], float], PostResult],
    sleep: Callable[[float], None],
) -> str:
    """Try one notice until it is delivered, refused, out of attempts or out of time; returns
    ``delivered``, ``refused`` (a 4xx retrying cannot fix), ``exhausted`` (every attempt failed) or
    ``pending`` (the deadline came first)."""
    body = slack_payload(notice, notice["kind"], ui_url=ui_url)
    attempt = notice["attempts"]
    while attempt < config.attempts:
        if time.monotonic() >= deadline:
            return "pending"
        started = time.monotonic()
        result = post(config.url, body, config.timeout_s)
        _record(conn, notice["notice_id"], config, result, int((time.monotonic() - started) * 1000))
        report.attempts += 1
        attempt += 1
        if result.delivered:
            return "delivered"
        report.errors.append(f"notice {notice['notice_id']} attempt {attempt}: {result.error}")
        if not result.retryable:
            return "refused"
        if attempt < config.attempts:
            wait = min(config.backoff_max_s, max(config.backoff(attempt), result.retry_after_s or 0.0))
            if time.monotonic() + wait >= deadline:
                return "pending"
            sleep(wait)
    return "exhausted"


def deliver_pending(
    conn: psycopg.Connection,
    webhook: WebhookConfig | None,
    *,
    deadline_s: float = 40.0,
    ui_url: str | None = None,
    stderr: TextIO | None = None,
    post: Callable[[str, dict[str, Any], float], PostResult] = post_json,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryReport:
    """Deliver the pending notices, oldest first, within ``deadline_s`` seconds."""
    stream = stderr if stderr is not None else sys.stderr
    deadline = time.monotonic() + deadline_s
    report = DeliveryReport()
    while time.monotonic() < deadline:
        notice = _claim(conn, lease_s=deadline_s + 60)
        if notice is None:
            break
        print(stderr_line(notice, notice["kind"]), file=stream, flush=True)
        if webhook is None:
            _finish(conn, notice["notice_id"], "unsent")
            report.unsent += 1
            continue
        state = _send(conn, notice, webhook, deadline, report, ui_url=ui_url, post=post, sleep=sleep)
        if state == "pending":
            with conn.transaction():  # give it back now rather than when the lease runs out
                conn.execute(
                    "UPDATE alert_notices SET leased_until = NULL WHERE notice_id = %s",
                    (notice["notice_id"],),
                )
            break
        _finish(conn, notice["notice_id"], "delivered" if state == "delivered" else "failed")
        if state == "delivered":
            report.delivered += 1
            continue
        report.failed += 1
        if state == "exhausted":
            break  # the webhook is unreachable or failing: the rest wait for a later pass
    report.left_pending = pending_count(conn)
    return report


def pending_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM alert_notices WHERE state = 'pending'").fetchone()
    if not conn.autocommit:
        conn.rollback()
    return int(row[0])


def retry_failed(conn: psycopg.Connection, notice_ids: list[int] | None = None) -> int:
    """Put failed notices back to pending for a new round of attempts (after the webhook is fixed);
    their earlier attempts stay recorded. Returns how many."""
    with conn.transaction():
        cur = conn.execute(
            """UPDATE alert_notices SET state = 'pending', attempts = 0, finished_at = NULL, leased_until = NULL
               WHERE state = 'failed' AND (%s::bigint[] IS NULL OR notice_id = ANY(%s::bigint[]))""",
            (notice_ids, notice_ids),
        )
        return cur.rowcount
