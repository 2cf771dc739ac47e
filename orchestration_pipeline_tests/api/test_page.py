"""The activity page in a real browser (Debian's chromium, driven by Playwright): events emitted
with the SDK and ingested appear within 2 s, newest first, coloured by severity; when the server
is killed the page shows it is reconnecting, and once a server is back it shows the events
ingested meanwhile, each once."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from orchestration_pipeline.emit import EventWriter
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.api._support import free_port, serve_env, start_serve, stop

pytestmark = [pytest.mark.db, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with 'apt-get install -y chromium' (.ci/run does)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def emit_and_ingest(dsn: str, landing: Path, *, session: str, n: int) -> list[dict]:
    """Agent activity written with the SDK, then ingested (committed) as one file."""
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir(parents=True)
    with EventWriter(landing, source="page-test", session_id=session) as writer:
        events = [
            writer.agent_started("coder", "ada", "refactor the parser", project_id="web", task_id="T-1")
        ]
        events += [
            writer.agent_progress("coder", "ada", f"step {i}", project_id="web", task_id="T-1")
            for i in range(n)
        ]
        events.append(
            writer.agent_error("reviewer", "bob", "review the parser", project_id="web", task_id="T-2")
        )
    with connection(dsn) as conn:
        Ingestor(conn, parse_workers=0).ingest_paths([landing])
    return events


def _shown(page, event: dict) -> int:
    return page.locator(f'#feed li[data-event-id="{event["event_id"]}"]').count()


def test_the_page_shows_events_live_and_catches_up_after_the_server_is_killed(
    browser, orch_dsn, tasks_dsn, tmp_path
):
    port = free_port()
    env = serve_env(orch_dsn, tasks_dsn, tmp_path / "home")
    server = start_serve(env, port, tmp_path / "serve.log")
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector('#connection[data-state="live"]', timeout=10_000)
        assert page.locator("#token-form").is_hidden(), "no token is asked for on loopback"

        first = emit_and_ingest(orch_dsn, tmp_path / "landing", session="s-1", n=2)
        committed = time.monotonic()
        for event in first:
            page.wait_for_selector(f'#feed li[data-event-id="{event["event_id"]}"]', timeout=2_000)
        assert time.monotonic() - committed < 2.0
        error = page.locator(f'#feed li[data-event-id="{first[-1]["event_id"]}"]')
        assert "sev-error" in error.get_attribute("class") and "bob" in error.inner_text()
        shown = page.locator("#feed li").evaluate_all("items => items.map(i => i.dataset.eventId)")
        assert shown[0] == first[-1]["event_id"], "newest first"

        server.kill()  # the stream dies with its server, mid-connection
        server.wait(10)
        page.wait_for_selector('#connection[data-state="reconnecting"]', timeout=10_000)
        missed = emit_and_ingest(orch_dsn, tmp_path / "landing", session="s-2", n=3)
        server = start_serve(env, port, tmp_path / "serve.log")
        for event in missed:
            page.wait_for_selector(f'#feed li[data-event-id="{event["event_id"]}"]', timeout=20_000)
        page.wait_for_selector('#connection[data-state="live"]', timeout=10_000)
        assert [_shown(page, e) for e in first + missed] == [1] * len(first + missed), "each event once"
        assert page.locator("#feed li").count() == len(first + missed)
        page.select_option('select[name="severity_meaning"]', "error")
        page.wait_for_function("document.querySelectorAll('#feed li').length === 2")
        assert page.locator("#feed li.sev-error").count() == 2
    finally:
        stop(server)
