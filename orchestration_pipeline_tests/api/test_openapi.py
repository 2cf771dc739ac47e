"""The API against its own OpenAPI document, with schemathesis generating requests (valid ones, and
ones that break the document's rules) for every operation, on a live server with data: no 500,
every status, content type and body as documented, and invalid input refused.

Valid-looking input may still be refused with a 400 (a date like 2026-02-31, ``since`` after
``until``): a schema cannot say that, so schemathesis' positive-acceptance check is not applied.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from orchestration_pipeline.lib.index.runtime import runtime_from_settings
from orchestration_pipeline.settings import load_settings
from orchestration_pipeline_tests.api._support import agent_events, api_config, ingest, running_api
from orchestration_pipeline_tests.conftest import make_event

pytestmark = [pytest.mark.db, pytest.mark.slow]  # the search runs a shard host process

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
STREAM = "/api/activity/stream"
FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def live_api(orch_dsn, tmp_path):
    events = [*agent_events(5, project="p1"), make_event("decision"), make_event("error", severity="ERR")]
    ingest(orch_dsn, tmp_path / "a.jsonl", events)
    runtime = runtime_from_settings(
        load_settings({"ORCH_HOME": str(tmp_path / "home"), "ORCH_EMBEDDER": "hashing"})
    )
    with running_api(api_config(orch_dsn, index_runtime=runtime, heartbeat_s=0.2)) as api:
        yield api


def _operations(api):
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_no_generated_request_gets_a_500_and_every_answer_is_as_documented(live_api):
    operations = [op for op in _operations(live_api) if op.path != STREAM]
    assert {op.path for op in operations} >= {"/api/activity", "/api/search", "/api/changes", "/readyz"}
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if operation.query or operation.headers:
            modes.append(GenerationMode.NEGATIVE)  # only what has parameters can be given wrong ones
        for mode in modes:

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                case.call_and_validate(checks=CHECKS, timeout=30)

            check()


def test_no_generated_stream_request_gets_a_500(live_api):
    """The stream never ends, so each generated request is read up to its first bytes."""
    [operation] = [op for op in _operations(live_api) if op.path == STREAM]
    statuses = set()
    with httpx.Client(base_url=live_api.url, timeout=10) as client:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                headers = {k: str(v) for k, v in (case.headers or {}).items()}
                with client.stream("GET", STREAM, params=case.query, headers=headers) as response:
                    statuses.add(response.status_code)
                    assert response.status_code in (200, 400), response.read()
                    if response.status_code == 200:
                        assert response.headers["content-type"].startswith("text/event-stream")
                        assert next(response.iter_bytes()).startswith(b"retry: ")
                    else:
                        response.read()
                        assert response.json()["parameter"]

            check()
    assert statuses == {200, 400}
