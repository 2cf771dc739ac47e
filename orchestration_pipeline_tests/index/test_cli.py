"""The index commands and `search`, end to end through the CLI, the shard host and PostgreSQL."""

import json
import os

import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli import main
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.index import outbox
from orchestration_pipeline.lib.index.decisions import put_decisions
from orchestration_pipeline.lib.index.host import host_running
from orchestration_pipeline.lib.index.host_client import stop_host
from orchestration_pipeline_tests.index._support import RATIONALES

pytestmark = [pytest.mark.db, pytest.mark.slow]


@pytest.fixture
def cli(orch_dsn, tasks_dsn, tmp_path):
    home = tmp_path / "home"

    def _cli(*args: str, **env: str):
        cleared = {k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))}
        full_env = {
            **cleared,
            "ORCH_HOME": str(home),
            "ORCH_DATABASE_URL": orch_dsn,
            "TASKS_DATABASE_URL": tasks_dsn,
            "ORCH_ACTOR": "test:cli",
            "ORCH_EMBEDDER": "hashing",
            **env,
        }
        return CliRunner().invoke(main, list(args), env=full_env, catch_exceptions=False)

    yield _cli
    stop_host(home / "qdrant")


def _seed(orch_dsn):
    with connection(orch_dsn) as conn:
        put_decisions(
            conn,
            [{"decision_id": f"k{i}", "rationale": text, "org_id": "acme" if i < 5 else "globex",
              "policy_id": f"pol-{i % 2}", "status": "approved"} for i, text in enumerate(RATIONALES)],
        )  # fmt: skip
        conn.commit()


def test_sync_search_status_and_quantization_rollback(cli, orch_dsn, tmp_path):
    _seed(orch_dsn)
    synced = cli("index", "sync", "--json")
    assert synced.exit_code == 0, synced.output
    assert json.loads(synced.output.splitlines()[-1])["indexed"] == len(RATIONALES)
    assert host_running(tmp_path / "home" / "qdrant")  # the CLI went through the shard host

    found = cli("search", "rolled back payments latency", "-k", "3", "--json")
    assert found.exit_code == 0, found.output
    body = json.loads(found.output.splitlines()[0])
    assert body["results"][0]["decision_id"] == "k2"
    assert body["results"][0]["payload"]["org_id"] == "acme"

    # the rollback: the same search with quantization off (no rebuild) gives the same top result
    off = cli("search", "rolled back payments latency", "-k", "3", "--json", ORCH_INDEX_QUANTIZATION="off")
    assert json.loads(off.output.splitlines()[0])["results"][0]["decision_id"] == "k2"

    filtered = cli("search", "registry returned 503", "--org", "globex", "--json")
    results = json.loads(filtered.output.splitlines()[0])["results"]
    assert results and {r["payload"]["org_id"] for r in results} == {"globex"}

    status = cli("index", "status", "--json")
    state = json.loads(status.output)
    assert state["points"] == len(RATIONALES) and state["outbox_pending"] == 0 and state["dead_letters"] == 0
    assert set(state["payload_indexes"]) >= {"org_id", "policy_id", "status", "created_at"}


def test_reconcile_and_dead_letter_replay_from_the_cli(cli, orch_dsn):
    _seed(orch_dsn)
    with connection(orch_dsn, autocommit=True) as conn:
        claim = outbox.claim(conn, "s", 2, 60)
        failures = [
            outbox.Failure(w, "ConnectError", "[Errno 111] Connection refused") for w in claim.winners
        ]
        outbox.fail(conn, "s", failures, outbox.RetryPolicy(max_attempts=1))
    listed = cli("index", "dead-letters")
    assert "Connection refused" in listed.output and listed.output.count("after 1 attempts") == 2
    refused = cli("index", "replay-dead-letters")
    assert refused.exit_code == 2 and "--reason" in refused.output
    replayed = cli("index", "replay-dead-letters", "--reason", "network restored", "--json")
    assert len(json.loads(replayed.output)["replayed"]) == 2
    reconciled = cli("index", "reconcile", "--json")
    assert reconciled.exit_code == 0, reconciled.output
    assert json.loads(reconciled.output.splitlines()[-1])["remaining_drift"] == 0
    assert "no dead letters" in cli("index", "dead-letters").output


def test_search_rejects_bad_input_naming_the_fix(cli, orch_dsn):
    empty = cli("search", "   ")
    assert empty.exit_code == 2 and "empty" in empty.output
    bad_since = cli("search", "deploy", "--since", "last tuesday")
    assert bad_since.exit_code == 1 and "30m, 24h, 7d" in bad_since.output
    bad_k = cli("search", "deploy", "-k", "0")
    assert bad_k.exit_code == 2 and "-k" in bad_k.output


def test_rebuild_with_another_embedder_after_the_mismatch_error(cli, orch_dsn):
    _seed(orch_dsn)
    assert cli("index", "sync").exit_code == 0
    refused = cli("index", "sync", ORCH_EMBEDDER="minilm")
    assert refused.exit_code == 1 and "index rebuild" in refused.output
    assert cli("index", "rebuild").exit_code == 2  # needs --yes
    rebuilt = cli("index", "rebuild", "--yes", "--json", ORCH_EMBEDDER="minilm")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads(rebuilt.output.splitlines()[-1])["repairs_enqueued"] == len(RATIONALES)
    status = json.loads(cli("index", "status", "--json", ORCH_EMBEDDER="minilm").output)
    assert status["embedder"] == "all-MiniLM-L6-v2" and status["points"] == len(RATIONALES)
    found = cli(
        "search", "why was the payments release reverted", "-k", "1", "--json", ORCH_EMBEDDER="minilm"
    )
    assert json.loads(found.output.splitlines()[0])["results"][0]["decision_id"] == "k2"
