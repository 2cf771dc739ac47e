import dagster as dg
import pytest

from orchestration_pipeline.definitions import defs
from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.defs.schema.assets import orchestration_schema
from orchestration_pipeline.defs.schema.checks import schema_migrations_current
from orchestration_pipeline.lib.db import connection, discover_migrations


def test_definitions_load():
    dg.Definitions.validate_loadable(defs())


def test_asset_graph_snapshot():
    """Changes to the asset graph show up here, in review."""
    d = defs()
    graph = d.resolve_asset_graph()
    assets = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
    checks = sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys)
    assert assets == [
        "audit_ledger_integrity",
        "decision_execution_summary",
        "orchestration_schema",
        "projection_drift_report",
        "raw_events",
        "task_projection",
    ]
    assert checks == [
        "audit_ledger_integrity:audit_chain_intact",
        "audit_ledger_integrity:audit_guard_present",
        "decision_execution_summary:no_stale_pending_executions",
        "orchestration_schema:schema_migrations_current",
        "projection_drift_report:drift_not_persistent",
        "projection_drift_report:zero_drift_after_reconcile",
        "raw_events:core_event_coverage",
        "raw_events:events_accounted_for",
        "raw_events:policy_violations_complete",
        "raw_events:provider_metric_present",
        "task_projection:projection_columns_present",
        "task_projection:projection_sync_latency",
    ]
    for asset in ("raw_events", "audit_ledger_integrity", "decision_execution_summary"):
        assert graph.get(dg.AssetKey(asset)).parent_keys == {dg.AssetKey("orchestration_schema")}
    assert graph.get(dg.AssetKey("task_projection")).parent_keys == {dg.AssetKey("raw_events")}
    assert graph.get(dg.AssetKey("projection_drift_report")).parent_keys == {dg.AssetKey("task_projection")}
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert blocking == {
        "audit_chain_intact",
        "audit_guard_present",
        "events_accounted_for",
        "schema_migrations_current",
        "zero_drift_after_reconcile",
    }
    assert sorted(j.name for j in d.jobs) == ["audit_job", "ingest_job", "reconciliation_job"]
    assert sorted(s.name for s in d.sensors) == ["landing_zone_sensor", "projection_lag_sensor"]
    assert sorted((s.name, s.cron_schedule, s.execution_timezone) for s in d.schedules) == [
        ("hourly_audit", "7 * * * *", "UTC"),
        ("nightly_reconciliation", "30 2 * * *", "UTC"),
    ]
    assert {s.name: s.job_name for s in d.schedules}["hourly_audit"] == "audit_job"
    assert sorted(d.resources) == [
        "ingestion_settings",
        "orchestration_db",
        "pipeline_home",
        "projection_settings",
        "tasks_db",
        "vector_index",
    ]


def _run(dsn, selection=None):
    return dg.materialize(
        [orchestration_schema, schema_migrations_current],
        resources={"orchestration_db": OrchestrationDatabase(dsn=dsn)},
        instance=dg.DagsterInstance.ephemeral(),
        selection=selection,
        raise_on_error=False,
    )


def _check_evaluation(result):
    evals = result.get_asset_check_evaluations()
    assert len(evals) == 1
    return evals[0]


@pytest.mark.db
def test_materialize_on_fresh_database_passes_its_check(fresh_dsn):
    result = _run(fresh_dsn)
    assert result.success
    mat = result.asset_materializations_for_node("orchestration_schema")[0]
    expected = [f"{m.version:04d}_{m.name}" for m in discover_migrations("orchestration")]
    assert mat.metadata["applied_versions"].value == expected
    assert isinstance(mat.metadata["timescaledb_available"].value, bool)
    evaluation = _check_evaluation(result)
    assert evaluation.passed


@pytest.mark.db
def test_check_fails_when_a_migration_is_pending(fresh_dsn):
    assert _run(fresh_dsn).success
    with connection(fresh_dsn) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = 1")
        conn.commit()
    result = _run(fresh_dsn, selection=dg.AssetSelection.checks(schema_migrations_current))
    evaluation = _check_evaluation(result)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["pending"].value == ["0001_core.sql"]


@pytest.mark.db
def test_check_fails_on_checksum_drift(fresh_dsn):
    assert _run(fresh_dsn).success
    with connection(fresh_dsn) as conn:
        conn.execute("UPDATE schema_migrations SET sha256 = repeat('0', 64) WHERE version = 1")
        conn.commit()
    evaluation = _check_evaluation(
        _run(fresh_dsn, selection=dg.AssetSelection.checks(schema_migrations_current))
    )
    assert not evaluation.passed
    assert evaluation.metadata["checksum_drift"].value == ["0001_core.sql"]
