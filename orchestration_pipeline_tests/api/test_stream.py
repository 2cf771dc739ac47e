"""The live feed (``GET /api/activity/stream``) against a real server and database: every event
once, in commit order; resuming with Last-Event-ID gives exactly the missed events; a late commit
is delivered, not skipped; NOTIFY wakes it, polling covers a lost notification; filters; heartbeats."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from orchestration_pipeline.lib.activity import StreamPosition
from orchestration_pipeline.lib.api.routes import activity_filter
from orchestration_pipeline.lib.api.stream import stream_filter
from orchestration_pipeline_tests.api._support import (
    SseClient,
    agent_events,
    api_config,
    ingest,
    running_api,
    wait_until,
)
from orchestration_pipeline_tests.conftest import make_event

pytestmark = pytest.mark.db


def _ids(messages) -> list[str]:
    return [json.loads(m.data)["event_id"] for m in messages]


def _positions(messages) -> list[StreamPosition]:
    return [StreamPosition.parse(m.id) for m in messages]


@pytest.mark.parametrize("buffer_events", [10_000, 2], ids=["from-buffer", "from-database"])
def test_reconnecting_with_last_event_id_gets_exactly_the_missed_events(orch_dsn, tmp_path, buffer_events):
    with running_api(api_config(orch_dsn, buffer_events=buffer_events)) as api:
        stream = f"{api.url}/api/activity/stream"
        with SseClient(stream) as first:
            sent = ingest(orch_dsn, tmp_path / "a.jsonl", agent_events(5))
            got = first.events(5)
        assert sorted(_ids(got)) == sorted(sent)
        positions = _positions(got)
        assert positions == sorted(positions) and len(set(positions)) == 5, "ids increase in commit order"
        assert all(m.id == json.loads(m.data)["position"] for m in got)

        missed = ingest(orch_dsn, tmp_path / "b.jsonl", agent_events(4))
        missed += ingest(orch_dsn, tmp_path / "c.jsonl", agent_events(3))
        with SseClient(stream, headers={"Last-Event-ID": got[-1].id}) as second:
            resumed = second.events(7)
            assert second.quiet(1.0) == [], "nothing after the missed events: no repeat"
        assert sorted(_ids(resumed)) == sorted(missed)

        # resuming from the middle of one transaction's events gives the rest of them, then the later ones
        with SseClient(stream, headers={"Last-Event-ID": got[2].id}) as third:
            rest = third.events(9)
            assert third.quiet(0.7) == []
        assert _ids(rest) == _ids(got[3:]) + _ids(resumed)


def test_a_new_server_resumes_a_client_from_its_last_event_id(orch_dsn, tmp_path):
    """The stream killed with its server: the next server (empty buffer) serves what was missed."""
    with running_api(api_config(orch_dsn)) as api:
        with SseClient(f"{api.url}/api/activity/stream") as client:
            ingest(orch_dsn, tmp_path / "a.jsonl", agent_events(2))
            last = client.events(2)[-1].id
    missed = ingest(orch_dsn, tmp_path / "b.jsonl", agent_events(3))
    with running_api(api_config(orch_dsn)) as api:
        with SseClient(f"{api.url}/api/activity/stream", headers={"Last-Event-ID": last}) as client:
            assert sorted(_ids(client.events(3))) == sorted(missed)
            assert client.quiet(0.7) == []


def test_a_transaction_that_commits_late_is_delivered_not_skipped(orch_dsn, tmp_path):
    late_id = uuid.uuid4()
    with running_api(api_config(orch_dsn)) as api, SseClient(f"{api.url}/api/activity/stream") as client:
        with psycopg.connect(orch_dsn) as late:
            late.execute(
                """INSERT INTO events (event_id, event_type, occurred_at, session_id, payload)
                   VALUES (%s, 'decision', %s, 's-late', '{"rationale": "slow writer"}')""",
                (late_id, datetime.now(UTC)),
            )
            early = ingest(
                orch_dsn, tmp_path / "a.jsonl", agent_events(1)
            )  # a newer transaction commits first
            assert client.quiet(1.5) == [], "held back while an older transaction may still commit"
            late.commit()
        got = client.events(2)
    assert _ids(got) == [str(late_id), *early], "in commit-position order: the older transaction first"


def test_notify_wakes_the_stream_without_waiting_for_a_poll(orch_dsn, tmp_path):
    with running_api(api_config(orch_dsn, poll_interval_s=60)) as api:
        wait_until(lambda: api.hub.listening, 10, "the hub to LISTEN")
        with SseClient(f"{api.url}/api/activity/stream") as client:
            started = time.time()
            ingest(orch_dsn, tmp_path / "a.jsonl", agent_events(1))
            [message] = client.events(1, timeout=5)
        assert message.received - started < 1.5
        assert api.hub.counts["notifications"] >= 1


def test_polling_delivers_when_notifications_are_lost(orch_dsn, tmp_path):
    """Polling only, then with the LISTEN connection killed: events still arrive, and it listens again."""
    with running_api(api_config(orch_dsn, listen=False, poll_interval_s=0.3)) as api:
        with SseClient(f"{api.url}/api/activity/stream") as client:
            sent = ingest(orch_dsn, tmp_path / "a.jsonl", agent_events(2))
            assert sorted(_ids(client.events(2, timeout=5))) == sorted(sent)
        assert api.hub.counts["notifications"] == 0 and api.hub.counts["polls"] > 0

    with running_api(api_config(orch_dsn, poll_interval_s=0.5)) as api:
        wait_until(lambda: api.hub.listening, 10, "the hub to LISTEN")
        with psycopg.connect(orch_dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
            ).fetchall()
        assert killed == [(True,)]
        with SseClient(f"{api.url}/api/activity/stream") as client:
            sent = ingest(orch_dsn, tmp_path / "b.jsonl", agent_events(1))
            assert _ids(client.events(1, timeout=5)) == sent
        wait_until(lambda: api.hub.listening, 10, "the hub to LISTEN again")


def test_filters_select_the_same_events_as_the_activity_query(orch_dsn, tmp_path):
    events = [
        *agent_events(2, project="p1"),
        *agent_events(2, project="p2", severity="error"),
        *agent_events(1, project="p2", session_id="s-9"),
        make_event("error", minutes_ago=1, payload={"message": "x", "project_id": "p2"}, severity="ERR"),
    ]
    with running_api(api_config(orch_dsn)) as api:
        stream = f"{api.url}/api/activity/stream"
        filters = [{"project": "p2"}, {"project": "p2", "severity_meaning": "error"}, {"session": "s-9"}, {}]
        counts = [4, 3, 1, 6]  # ERR means error: the meaning filter finds it
        clients = [SseClient(stream, params=f) for f in filters]
        try:
            ingest(orch_dsn, tmp_path / "a.jsonl", events)
            for flt, count, client in zip(filters, counts, clients, strict=True):
                page = httpx.get(f"{api.url}/api/activity", params=flt).json()
                expected = sorted(r["event_id"] for r in page["rows"])
                assert len(expected) == page["total"] == count, flt
                got = client.events(len(expected))
                assert sorted(_ids(got)) == expected, flt
                assert client.quiet(0.5) == [], f"{flt}: only the matching events"
        finally:
            for client in clients:
                client.close()


def test_idle_streams_get_heartbeats(orch_dsn):
    with running_api(api_config(orch_dsn, heartbeat_s=0.2)) as api:
        with SseClient(f"{api.url}/api/activity/stream") as client:
            time.sleep(1.2)
    beats = [m for m in list(client.messages.queue) if "heartbeat" in m.comments]
    assert len(beats) >= 3


def test_a_stream_starts_after_the_position_of_an_activity_page(orch_dsn, tmp_path):
    """Nothing committed after the page is missed; an event in the page is streamed again only
    when an older transaction was still open as the page was read (the page dedupes by id)."""
    before = ingest(orch_dsn, tmp_path / "a.jsonl", agent_events(2))
    with running_api(api_config(orch_dsn)) as api:
        page = httpx.get(f"{api.url}/api/activity").json()
        assert sorted(r["event_id"] for r in page["rows"]) == sorted(before)
        after = ingest(orch_dsn, tmp_path / "b.jsonl", agent_events(2))
        with SseClient(f"{api.url}/api/activity/stream", params={"after": page["position"]}) as client:
            got: list[str] = []
            while not set(after) <= set(got):
                got += _ids(client.events(1))
            got += _ids(client.quiet(0.5))
    assert len(got) == len(set(got)), "none twice"
    assert set(got) - set(before) == set(after)


@pytest.mark.parametrize(
    ("headers", "params", "name"),
    [
        ({"Last-Event-ID": "yesterday"}, {}, "Last-Event-ID"),
        ({}, {"after": "12-not-a-uuid"}, "after"),
        ({}, {"after": "1-" + "-" * 36}, "after"),
        ({}, {"limit": "5", "severity_meaning": "loud"}, "severity_meaning"),
    ],
)
def test_a_bad_resume_position_or_filter_is_a_400_naming_it(orch_dsn, headers, params, name):
    with running_api(api_config(orch_dsn)) as api:
        response = httpx.get(f"{api.url}/api/activity/stream", headers=headers, params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == name and name in body["message"]


def test_stream_filter_ignores_paging_and_is_none_without_filters():
    assert stream_filter(activity_filter()) is None
    flt = stream_filter(activity_filter(project="p1"))
    assert flt is not None and flt.project_id == "p1" and flt.limit == 100 and flt.offset == 0
