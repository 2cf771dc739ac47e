"""The read-only routes on a real database: activity with filters and totals, statistics,
executions and their summary cards, drift, changes, health and readiness; 400s that name the
parameter, 404s and 405s in JSON, 503s naming the fix when the database is missing or unmigrated."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from orchestration_pipeline.lib.activity import StreamPosition, activity_stats
from orchestration_pipeline.lib.api.app import create_app
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.executions.executor import Action, execute_action
from orchestration_pipeline.lib.executions.policies import Policy, upsert_policy
from orchestration_pipeline.lib.projection.drift import reconcile
from orchestration_pipeline.lib.projection.projector import project_events
from orchestration_pipeline.lib.projection.repair import AuditContext
from orchestration_pipeline_tests.api._support import agent_events, api_config, free_port, ingest
from orchestration_pipeline_tests.conftest import make_event

WHO = {"actor": "test:api", "request_id": "req-api"}


@pytest.fixture
def client(orch_dsn) -> Iterator[TestClient]:
    with TestClient(create_app(api_config(orch_dsn))) as test_client:
        yield test_client


def _events() -> list[dict]:
    return [
        *agent_events(3, project="p1", session_id="s-a", task_id="T-1"),
        *agent_events(2, project="p2", agent_type="reviewer", severity="error", status="failed"),
        make_event("error", minutes_ago=120, session_id="s-a", severity="ERR", payload={"message": "boom"}),
    ]


@pytest.mark.db
def test_activity_pages_filters_and_totals(client, orch_dsn, tmp_path):
    ingest(orch_dsn, tmp_path / "a.jsonl", _events())
    page = client.get("/api/activity", params={"project": "p1", "limit": 2}).json()
    assert (len(page["rows"]), page["total"], page["limit"], page["offset"]) == (2, 3, 2, 0)
    assert page["total_exact"] is True
    StreamPosition.parse(page["position"])  # where a stream picks up
    assert {r["payload"]["project_id"] for r in page["rows"]} == {"p1"}
    rest = client.get("/api/activity", params={"project": "p1", "limit": 2, "offset": 2}).json()
    assert len(rest["rows"]) == 1 and rest["rows"][0]["event_id"] not in {r["event_id"] for r in page["rows"]}

    errors = client.get("/api/activity", params={"severity_meaning": "error"}).json()
    assert errors["total"] == 3 and {r["severity_meaning"] for r in errors["rows"]} == {"error"}
    assert [
        r["severity"] for r in client.get("/api/activity", params={"severity": "ERR"}).json()["rows"]
    ] == ["ERR"]
    session = client.get("/api/activity", params={"session": "s-a", "task": "T-1"}).json()
    assert session["total"] == 3
    recent = client.get("/api/activity", params={"since": "1h"}).json()
    assert recent["total"] == 5  # the error two hours ago is left out
    start = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    until = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert client.get("/api/activity", params={"since": start, "until": until}).json()["total"] == 1
    assert (
        client.get("/api/activity", params={"agent_type": "reviewer", "status_meaning": "failed"}).json()[
            "total"
        ]
        == 2
    )

    stats = client.get("/api/activity/stats", params={"project": "p2"}).json()
    with connection(orch_dsn) as conn:
        from orchestration_pipeline.lib.activity import ActivityFilter

        expected = activity_stats(conn, ActivityFilter(project_id="p2"))
    assert stats["total"] == expected["total"] == 2
    assert stats["agents"][0]["agent_type"] == "reviewer" and stats["agents"][0]["success_rate"] == 0.0
    assert stats["by_severity"] == expected["by_severity"] == {"error": 2}


@pytest.mark.db
@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/api/activity", {"limit": "0"}, "limit"),
        ("/api/activity", {"limit": "1001"}, "limit"),
        ("/api/activity", {"limit": "many"}, "limit"),
        ("/api/activity", {"offset": "-1"}, "offset"),
        ("/api/activity", {"event_type": "bogus"}, "event_type"),
        ("/api/activity", {"severity_meaning": "loud"}, "severity_meaning"),
        ("/api/activity", {"since": "yesterday"}, "since"),
        ("/api/activity", {"until": "99999999999999d"}, "until"),
        ("/api/activity", {"since": "1h", "until": "2h"}, "since"),
        ("/api/activity", {"severity": "   "}, "severity"),
        ("/api/activity", {"status": "x" * 65}, "status"),
        ("/api/activity", {"project": ""}, "project"),
        ("/api/activity", {"session": "a\x00b"}, "session"),
        ("/api/activity/stats", {"status_meaning": "cancelled", "status": "6\x00\u00b5"}, "status"),
        ("/api/changes", {"task": "t\x00"}, "task"),
        ("/api/search", {"q": "deploy", "org": "\x00"}, "org"),
        ("/api/activity/stats", {"task": "x" * 201}, "task"),
        ("/api/decisions/executions", {"state": "exploded"}, "state"),
        ("/api/decisions/executions", {"limit": "501"}, "limit"),
        ("/api/changes", {"run": "not-a-uuid"}, "run"),
        ("/api/changes", {"cause": "magic"}, "cause"),
        ("/api/search", {}, "q"),
        ("/api/search", {"q": "   "}, "q"),
        ("/api/search", {"q": "x", "k": "0"}, "k"),
    ],
)
def test_invalid_input_is_a_400_naming_the_parameter_and_what_it_accepts(client, path, params, name):
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_parameter" and body["parameter"] == name
    assert f" {name} " in f" {body['message']} ".replace(":", " ")
    assert any(word in body["message"] for word in ("must", "takes", "required", "invalid", "one of"))


@pytest.mark.db
def test_the_400_says_what_a_parameter_accepts(client):
    assert client.get("/api/activity", params={"limit": "0"}).json()["message"] == (
        "query parameter limit must be a whole number from 1 to 1000, got '0'"
    )
    assert (
        "must be one of debug, info, success, warning, error, critical"
        in (client.get("/api/activity", params={"severity_meaning": "loud"}).json()["message"])
    )
    assert "30m, 24h, 7d" in client.get("/api/activity", params={"since": "later"}).json()["message"]


@pytest.mark.db
def test_unknown_routes_and_methods_answer_in_json(client):
    for path in ("/api/nope", "/nope", "/api/activity/nope"):
        response = client.get(path)
        assert response.status_code == 404 and response.headers["content-type"] == "application/json"
        assert response.json()["error"] == "not_found" and path in response.json()["message"]
    response = client.post("/api/activity")
    assert response.status_code == 405 and "read-only" in response.json()["message"]


@pytest.mark.db
def test_execution_history_and_summary_cards(client, orch_dsn):
    empty = client.get("/api/decisions/summary").json()
    assert (empty["total"], empty["last_execution_at"]) == (0, None)
    with connection(orch_dsn) as conn:
        upsert_policy(conn, Policy("page", "Page", "notify", enabled=True, dry_run=False), **WHO)
        upsert_policy(conn, Policy("tag", "Tag", "notify", enabled=True, dry_run=True), **WHO)
        execute_action(conn, Action("page", "notify", None, {"message": "disk full"}), **WHO)
        execute_action(conn, Action("tag", "notify", None, {"message": "flaky"}), **WHO)
    cards = client.get("/api/decisions/summary").json()
    assert {k: cards[k] for k in ("total", "enabled", "dry_run_on", "live_on")} == {
        "total": 2, "enabled": 2, "dry_run_on": 1, "live_on": 1,
    }  # fmt: skip
    assert cards["last_execution_at"] is not None
    rows = client.get("/api/decisions/executions").json()["rows"]
    assert [(r["policy_id"], r["mode"], r["state"]) for r in rows] == [
        ("tag", "simulated", "succeeded"),
        ("page", "live", "succeeded"),
    ]
    assert [
        r["policy_id"]
        for r in client.get("/api/decisions/executions", params={"policy": "page"}).json()["rows"]
    ] == ["page"]


@pytest.mark.db
def test_drift_report_and_the_change_feed(client, orch_dsn, tasks_dsn, tmp_path):
    assert client.get("/api/drift/latest").json() == {"report": None}
    assert client.get("/api/changes").json()["total"] == 0
    with connection(tasks_dsn) as tasks:
        tasks.execute(
            "INSERT INTO tasks (task_id, title, status, priority, tags) VALUES ('T-7', 'Build', 'done', 1, '[]')"
        )
        tasks.commit()
    start = make_event("task_start", minutes_ago=30, task_id="T-7")
    end = make_event("task_end", minutes_ago=20, task_id="T-7", payload={"success": True, "duration_ms": 5})
    ingest(orch_dsn, tmp_path / "a.jsonl", [start, end])
    with connection(orch_dsn) as orch, connection(tasks_dsn) as tasks:
        assert project_events(orch, tasks).events_applied == 2
        report = reconcile(orch, tasks, AuditContext(**WHO))
    latest = client.get("/api/drift/latest").json()["report"]
    assert latest["report_id"] == report.report_id and latest["drift_count"] == report.drift_count
    changes = client.get("/api/changes", params={"task": "T-7"}).json()
    assert changes["total"] >= 1 and {r["task_id"] for r in changes["rows"]} == {"T-7"}
    run = changes["rows"][0]["run_id"]
    by_run = client.get("/api/changes", params={"run": run, "cause": "event"}).json()
    assert by_run["total"] >= 1 and {r["run_id"] for r in by_run["rows"]} == {run}


@pytest.mark.db
def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["pending"] == []


@pytest.mark.db
def test_an_unmigrated_database_is_not_ready_and_routes_name_the_migration(fresh_dsn):
    with TestClient(create_app(api_config(fresh_dsn))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "db migrate" in ready.json()["reason"]
        response = client.get("/api/activity")
        assert response.status_code == 503 and "db migrate" in response.json()["message"]
        assert client.get("/healthz").status_code == 200


def test_a_database_that_is_down_is_a_503_naming_it_and_the_app_stays_up():
    dsn = f"postgresql://nobody@127.0.0.1:{free_port()}/orchestration"
    with TestClient(create_app(api_config(dsn, db_timeout_s=1))) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "did not answer" in ready.json()["reason"]
        for path in ("/api/activity", "/api/activity/stream", "/api/decisions/summary"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert "orchestration-pipeline up" in response.json()["message"]


@pytest.mark.db
@pytest.mark.slow  # the index is served by a shard host process
def test_search_finds_decisions_by_meaning_with_filters(orch_dsn, tmp_path):
    from orchestration_pipeline.lib.index.decisions import put_decisions
    from orchestration_pipeline.lib.index.runtime import runtime_from_settings
    from orchestration_pipeline.lib.index.sync import sync_outbox
    from orchestration_pipeline.settings import load_settings

    runtime = runtime_from_settings(
        load_settings({"ORCH_HOME": str(tmp_path / "home"), "ORCH_EMBEDDER": "hashing"})
    )
    with connection(orch_dsn) as conn:
        with conn.transaction():
            put_decisions(
                conn,
                [
                    {"decision_id": "d-1", "rationale": "rolled back the payments deploy", "org_id": "acme"},
                    {"decision_id": "d-2", "rationale": "skipped the slow e2e suite", "org_id": "acme"},
                    {
                        "decision_id": "d-3",
                        "rationale": "rolled back the payments deploy",
                        "org_id": "globex",
                    },
                ],
            )
        with runtime.open() as (index, embedder):
            sync_outbox(conn, index, embedder)
    with TestClient(create_app(api_config(orch_dsn, index_runtime=runtime))) as client:
        found = client.get("/api/search", params={"q": "payments rolled back", "org": "acme", "k": 2}).json()
        assert found["results"][0]["decision_id"] == "d-1"
        assert {r["payload"]["org_id"] for r in found["results"]} == {"acme"}
        assert found["results"][0]["rationale"] == "rolled back the payments deploy"
        off = client.get("/api/search", params={"q": "payments rolled back", "quantization": "off"}).json()
        assert {r["decision_id"] for r in off["results"][:2]} == {"d-1", "d-3"}
    with TestClient(create_app(api_config(orch_dsn))) as client:
        response = client.get("/api/search", params={"q": "anything"})
        assert response.status_code == 503 and response.json()["error"] == "search_unavailable"
