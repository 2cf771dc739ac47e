"""decision_index_sync and qdrant_index_state through Dagster (the shard host in a real process),
their checks made to fail, the outbox sensor and the nightly schedule."""

import dagster as dg
import pytest

from orchestration_pipeline.defs.index.assets import decision_index_sync, qdrant_index_state
from orchestration_pipeline.defs.index.checks import (
    index_drift_zero,
    no_dead_letters,
    outbox_freshness,
    payload_indexes_present,
    search_slo,
)
from orchestration_pipeline.defs.index.sensors import index_outbox_sensor, nightly_index_reconcile
from orchestration_pipeline.defs.resources import IndexSettings, OrchestrationDatabase, VectorIndexResource
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.index import outbox
from orchestration_pipeline.lib.index.decisions import put_decisions
from orchestration_pipeline.lib.index.host_client import stop_host
from orchestration_pipeline_tests.index._support import RATIONALES

pytestmark = [pytest.mark.db, pytest.mark.slow]

CHECKS = [index_drift_zero, no_dead_letters, outbox_freshness, payload_indexes_present, search_slo]


@pytest.fixture
def home(tmp_path):
    yield tmp_path / "home"
    stop_host(tmp_path / "home" / "qdrant")


def _resources(orch_dsn, home, **settings):
    return {
        "orchestration_db": OrchestrationDatabase(dsn=orch_dsn),
        "vector_index": VectorIndexResource(orch_home=str(home), embedder="hashing"),
        "index_settings": IndexSettings(**{"base_delay_s": 0.0, **settings}),
    }


def _materialize(orch_dsn, home, **settings):
    return dg.materialize(
        [decision_index_sync, qdrant_index_state, *CHECKS],
        resources=_resources(orch_dsn, home, **settings),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _seed(orch_dsn, n=40):
    with connection(orch_dsn) as conn:
        put_decisions(
            conn,
            [{"decision_id": f"g{i}", "rationale": f"{RATIONALES[i % 10]} ({i})", "org_id": f"org-{i % 4}",
              "policy_id": "deploy", "status": "approved"} for i in range(n)],
        )  # fmt: skip
        conn.commit()


def test_sync_and_reconcile_through_dagster_pass_every_check(orch_dsn, home):
    _seed(orch_dsn)
    result = _materialize(orch_dsn, home)
    assert result.success
    sync = result.asset_materializations_for_node("decision_index_sync")[0].metadata
    state = result.asset_materializations_for_node("qdrant_index_state")[0].metadata
    assert sync["indexed"].value == 40 and sync["backlog_pending"].value == 0
    assert state["points"].value == 40 and state["remaining_drift"].value == 0
    assert _checks(result) == {
        "index_drift_zero": True,
        "no_dead_letters": True,
        "outbox_freshness": True,
        "payload_indexes_present": True,
        "search_slo": True,
    }


def test_dead_letters_and_slow_search_fail_their_checks(orch_dsn, home):
    _seed(orch_dsn, 10)
    with connection(orch_dsn, autocommit=True) as conn:
        claim = outbox.claim(conn, "s", 1, 60)
        outbox.fail(
            conn, "s", [outbox.Failure(claim.winners[0], "ValueError", "bad input")], outbox.RetryPolicy(1)
        )
    result = _materialize(orch_dsn, home, slo_p95_ms=0.001)
    checks = _checks(result)
    assert checks["no_dead_letters"] is False and checks["search_slo"] is False
    assert checks["index_drift_zero"] is True  # the reconciler repaired the dead-lettered decision
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert {e.severity for e in failed} == {dg.AssetCheckSeverity.ERROR}


def test_outbox_sensor_requests_a_sync_only_when_rows_are_pending(orch_dsn, home):
    resources = _resources(orch_dsn, home)
    wanted = {k: resources[k] for k in ("orchestration_db", "index_settings")}

    def tick():
        with dg.build_sensor_context(resources=wanted) as context:
            return index_outbox_sensor(context)

    assert isinstance(tick(), dg.SkipReason)
    _seed(orch_dsn, 3)
    request = tick()
    assert isinstance(request, dg.RunRequest) and request.tags["outbox_pending"] == "3"


def test_nightly_reconcile_runs_in_utc():
    assert nightly_index_reconcile.cron_schedule == "45 2 * * *"
    assert nightly_index_reconcile.execution_timezone == "UTC"
