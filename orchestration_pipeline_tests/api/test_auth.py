"""Who may call the API: loopback by default; any other bind needs ORCH_API_TOKEN, and serve refuses
to start without it; with a token, /api needs it (header, or the page's cookie), the page and the
probes do not."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from orchestration_pipeline.cli import serve as serve_cli
from orchestration_pipeline.errors import ConfigError
from orchestration_pipeline.lib.api.app import create_app
from orchestration_pipeline.lib.api.config import ApiConfig, check_bind, is_loopback, token_matches
from orchestration_pipeline_tests.api._support import (
    REPO_ROOT,
    api_config,
    free_port,
    serve_env,
    start_serve,
    stop,
)
from orchestration_pipeline_tests.conftest import clean_env

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("api.example.com", False)],
)  # fmt: skip
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_binding_beyond_loopback_needs_a_real_token():
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(ConfigError, match="refusing to serve on 0.0.0.0 without a token.*set ORCH_API_TOKEN"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ConfigError, match="ORCH_API_TOKEN is 5 characters; use at least 16"):
        check_bind("127.0.0.1", "short")
    with pytest.raises(ConfigError, match="without a token"):
        ApiConfig(dsn="postgresql://x/y", host="10.0.0.1")


def test_token_comparison():
    assert token_matches(TOKEN, f"Bearer {TOKEN}", None)
    assert token_matches(TOKEN, f"bearer  {TOKEN}", None)
    assert token_matches(TOKEN, None, TOKEN)
    assert not token_matches(TOKEN, f"Basic {TOKEN}", None)
    assert not token_matches(TOKEN, "Bearer wrong", "also-wrong")
    assert not token_matches(TOKEN, None, None)


def test_serve_refuses_a_public_bind_without_a_token_before_touching_anything():
    group = serve_cli.ErrorReportingGroup(commands={"serve": serve_cli.serve})
    result = CliRunner().invoke(
        group, ["serve", "--host", "0.0.0.0"], env=clean_env(), catch_exceptions=False
    )
    assert result.exit_code == 1
    assert "error: refusing to serve on 0.0.0.0 without a token" in result.output
    assert "ORCH_API_TOKEN" in result.output


@pytest.mark.db
def test_with_a_token_the_api_needs_it_and_the_page_and_probes_do_not(orch_dsn):
    with TestClient(create_app(api_config(orch_dsn, host="0.0.0.0", token=TOKEN))) as client:
        for path in ("/api/activity", "/api/activity/stream", "/api/decisions/summary", "/api/nope"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
            assert (
                refused.json()["error"] == "unauthorized"
                and "Authorization: Bearer" in refused.json()["message"]
            )
        assert (
            client.get(
                "/api/activity", headers={"Authorization": "Bearer wrong-token-0123456789"}
            ).status_code
            == 401
        )
        assert client.get("/api/activity", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        client.cookies.set("orch_api_token", TOKEN)
        assert client.get("/api/activity").status_code == 200
        client.cookies.clear()
        for path in ("/", "/static/app.js", "/healthz", "/readyz", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        schema = client.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
        assert schema["paths"]["/api/activity"]["get"]["security"] == [{"bearer": []}]


@pytest.mark.slow
def test_serve_exits_naming_the_token_when_bound_publicly_without_one(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "orchestration_pipeline.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        env=clean_env(ORCH_HOME=str(tmp_path), PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 1
    assert "refusing to serve on 0.0.0.0 without a token" in done.stderr and "ORCH_API_TOKEN" in done.stderr
    assert not (tmp_path / "pg").exists(), "refused before starting the embedded database"


@pytest.mark.slow
@pytest.mark.db
def test_serve_bound_to_every_interface_answers_only_with_the_token(orch_dsn, tasks_dsn, tmp_path):
    port = free_port()
    env = serve_env(orch_dsn, tasks_dsn, tmp_path / "home", ORCH_API_TOKEN=TOKEN)
    proc = start_serve(env, port, tmp_path / "serve.log", host="0.0.0.0")
    try:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/api/activity").status_code == 401
        ok = httpx.get(f"{url}/api/activity", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["total"] == 0
    finally:
        stop(proc)
