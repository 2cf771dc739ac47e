"""Delivering notices to a real webhook receiver on the loopback, and to stderr: bounded retries
with backoff, every attempt recorded, refusals, a webhook that is down, and no double sends."""

import io
import threading
from datetime import UTC, datetime

import pytest

from orchestration_pipeline.lib.alerting.delivery import WebhookConfig, deliver_pending, retry_failed
from orchestration_pipeline.lib.alerting.model import Observation
from orchestration_pipeline.lib.alerting.streaks import apply_observations
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline_tests.alerting._support import attempts_of, notices_of, webhook_receiver

pytestmark = pytest.mark.db


def _raise_alerts(dsn: str, *sources: str) -> None:
    observations = [
        Observation(source, True, datetime(2026, 3, 1, 12, n, tzinfo=UTC), f"r#{n}", f"{source} failed",
                    details={"metadata": {"rows": n}}, link_path="/runs/r", runbook="docs/runbooks/x.md#y")
        for n, source in enumerate(sources)
    ]  # fmt: skip
    with connection(dsn) as conn:
        apply_observations(conn, observations, min_severity="WARN")


def _deliver(dsn: str, url: str | None, *, attempts: int = 4, sleeps: list | None = None, **kwargs):
    config = WebhookConfig(url, attempts=attempts, backoff_s=0.01, timeout_s=5.0) if url else None
    stderr = io.StringIO()
    waits = sleeps if sleeps is not None else []
    with connection(dsn) as conn:
        report = deliver_pending(conn, config, stderr=stderr, sleep=waits.append, **kwargs)
    return report, stderr.getvalue()


def test_a_webhook_that_fails_twice_then_accepts_gets_the_alert_exactly_once(orch_dsn):
    _raise_alerts(orch_dsn, "check:a:c")
    sleeps: list[float] = []
    with webhook_receiver(fail_first=2) as receiver:
        report, stderr = _deliver(orch_dsn, receiver.url, sleeps=sleeps)
        [accepted] = receiver.accepted
        assert [status for status, _ in receiver.requests] == [503, 503, 200]
    assert accepted["text"].endswith("[ERROR] check:a:c failed") and accepted["blocks"]
    assert (report.delivered, report.failed, report.attempts) == (1, 0, 3)
    assert sleeps == [0.01, 0.02]  # backoff doubles between attempts
    host = receiver.url.split("/services/")[0]  # the recorded target: scheme and host, not the secret path
    assert attempts_of(orch_dsn) == [
        (1, "failed", 503, host),
        (2, "failed", 503, host),
        (3, "delivered", 200, host),
    ]
    assert notices_of(orch_dsn)[0][2] == "delivered"
    assert stderr.count("alert #") == 1 and "check:a:c failed" in stderr
    again, _ = _deliver(orch_dsn, receiver.url)
    assert (again.delivered, again.attempts) == (0, 0)  # delivered notices are never sent again


def test_a_refusal_is_not_retried(orch_dsn):
    _raise_alerts(orch_dsn, "check:a:c")
    with webhook_receiver(fail_first=10, fail_status=404) as receiver:
        report, _ = _deliver(orch_dsn, receiver.url)
        assert len(receiver.requests) == 1
    assert (report.failed, report.attempts) == (1, 1)
    assert attempts_of(orch_dsn)[0][:3] == (1, "failed", 404)
    assert notices_of(orch_dsn)[0][2] == "failed"


def test_a_webhook_that_stays_down_fails_one_notice_after_its_attempts_and_keeps_the_rest(orch_dsn):
    _raise_alerts(orch_dsn, "check:a:c", "check:a:d", "check:a:e")
    with webhook_receiver(fail_first=100) as receiver:
        report, _ = _deliver(orch_dsn, receiver.url, attempts=3)
        assert len(receiver.requests) == 3
    assert (report.failed, report.left_pending) == (1, 2)
    assert [n[2] for n in notices_of(orch_dsn)] == ["failed", "pending", "pending"]
    with webhook_receiver() as receiver:  # fixed: the rest go, then the failed one on request
        report, _ = _deliver(orch_dsn, receiver.url)
        assert report.delivered == 2 and len(receiver.accepted) == 2
        with connection(orch_dsn) as conn:
            assert retry_failed(conn) == 1
        report, _ = _deliver(orch_dsn, receiver.url)
        assert report.delivered == 1 and len(receiver.accepted) == 3
    first_notice_attempts = [a for a in attempts_of(orch_dsn) if a[1] == "failed"]
    assert [a[0] for a in first_notice_attempts] == [1, 2, 3]  # earlier attempts stay recorded
    assert [n[2] for n in notices_of(orch_dsn)] == ["delivered"] * 3


def test_an_unreachable_webhook_is_recorded_as_a_failed_attempt(orch_dsn):
    _raise_alerts(orch_dsn, "run:ingest_job")
    with webhook_receiver() as receiver:
        url = receiver.url
    report, _ = _deliver(orch_dsn, url, attempts=2)  # the server is gone: connection refused
    assert (report.failed, report.attempts) == (1, 2)
    [(_, outcome, status, _target), _] = attempts_of(orch_dsn)
    assert (outcome, status) == ("failed", None)
    assert "Connection refused" in report.errors[0] or "URLError" in report.errors[0]


def test_without_a_webhook_notices_go_to_stderr_only(orch_dsn):
    _raise_alerts(orch_dsn, "check:a:c")
    report, stderr = _deliver(orch_dsn, None)
    assert (report.unsent, report.attempts) == (1, 0)
    assert stderr.startswith(
        "alert #1 raised [error] check:a:c failed | ui /runs/r | runbook docs/runbooks/x.md#y"
    )
    assert notices_of(orch_dsn)[0][2] == "unsent" and attempts_of(orch_dsn) == []


def test_the_deadline_leaves_the_rest_pending(orch_dsn):
    _raise_alerts(orch_dsn, "check:a:c", "check:a:d")
    with webhook_receiver() as receiver:
        report, _ = _deliver(orch_dsn, receiver.url, deadline_s=0.0)
        assert receiver.requests == []
    assert report.left_pending == 2 and [n[2] for n in notices_of(orch_dsn)] == ["pending", "pending"]


def test_two_deliverers_at_once_send_each_notice_once(orch_dsn):
    _raise_alerts(orch_dsn, *(f"check:a:c{i}" for i in range(12)))
    with webhook_receiver() as receiver:
        threads = [threading.Thread(target=_deliver, args=(orch_dsn, receiver.url)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        texts = [body["text"] for body in receiver.accepted]
    assert len(texts) == 12 and len(set(texts)) == 12
    assert [n[2] for n in notices_of(orch_dsn)] == ["delivered"] * 12
