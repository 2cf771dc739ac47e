import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from orchestration_pipeline.definitions import defs
from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.defs.schema.assets import orchestration_schema
from orchestration_pipeline.defs.schema.checks import schema_migrations_current
from orchestration_pipeline.lib.db import connection, discover_migrations
from orchestration_pipeline_tests.conftest import REPO_ROOT, clean_env


def test_definitions_load():
    dg.Definitions.validate_loadable(defs())


SNAPSHOT = Path(__file__).with_name("asset_graph.snapshot.json")


def asset_graph_snapshot(definitions: dg.Definitions) -> dict:
    """The code location's shape as reviewable data: assets and their parents, checks with their
    declared severity and whether they block, jobs, sensors, schedules and resources."""
    graph = definitions.resolve_asset_graph()
    checks = []
    for key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        spec = graph.get_check_spec(key)
        checks.append(
            {
                "asset": key.asset_key.to_user_string(),
                "check": key.name,
                "blocking": spec.blocking,
                "severity": spec.metadata.get("severity"),
            }
        )
    return {
        "assets": {
            key.to_user_string(): sorted(p.to_user_string() for p in graph.get(key).parent_keys)
            for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
        },
        "checks": checks,
        "jobs": sorted(j.name for j in definitions.jobs),
        "sensors": sorted(
            (
                {"name": s.name, "jobs": sorted(j.name for j in s.jobs) if s.has_jobs else []}
                for s in definitions.sensors
            ),
            key=lambda s: s["name"],
        ),
        "schedules": sorted(
            (
                {"name": s.name, "job": s.job_name, "cron": s.cron_schedule, "timezone": s.execution_timezone}
                for s in definitions.schedules
            ),
            key=lambda s: s["name"],
        ),  # fmt: skip
        "resources": sorted(definitions.resources),
    }


def test_asset_graph_matches_its_snapshot():
    """A change to the asset graph shows in review: regenerate the snapshot with
    ORCH_UPDATE_SNAPSHOT=1 pytest orchestration_pipeline_tests/dagster/test_definitions.py"""
    current = asset_graph_snapshot(defs())
    if os.environ.get("ORCH_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, (
        "the asset graph changed; if that is intended, regenerate the snapshot with "
        "ORCH_UPDATE_SNAPSHOT=1 pytest orchestration_pipeline_tests/dagster/test_definitions.py"
    )


def test_snapshot_sees_a_changed_check():
    """The snapshot is not blind: turning a blocking check into a non-blocking one changes it."""
    snapshot = asset_graph_snapshot(defs())
    changed = [dict(c) for c in snapshot["checks"]]
    changed[0]["blocking"] = not changed[0]["blocking"]
    assert {**snapshot, "checks": changed} != json.loads(SNAPSHOT.read_text())


def test_dg_check_defs_passes_from_a_fresh_checkout_with_no_environment():
    """`dg check defs` from the repository root, with none of the pipeline's settings set."""
    dg_cli = Path(sys.executable).with_name("dg")
    result = subprocess.run(
        [str(dg_cli), "check", "defs"],
        cwd=REPO_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


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


def test_every_job_has_a_schedule_in_utc():
    from orchestration_pipeline.definitions import defs as load

    definitions = load()
    repo = definitions.get_repository_def()
    scheduled = {s.job_name for s in repo.schedule_defs}
    jobs = {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")}
    assert jobs - scheduled == set(), "every job needs a schedule (its times go in the README)"
    assert {s.execution_timezone for s in repo.schedule_defs} == {"UTC"}


def test_the_executor_moves_with_orch_executor_and_a_missing_package_is_named():
    import dagster as dg

    from orchestration_pipeline.definitions import EXECUTOR, select_executor
    from orchestration_pipeline.errors import ConfigError

    assert select_executor(None) is EXECUTOR and select_executor("multiprocess") is EXECUTOR
    assert select_executor("in_process") is dg.in_process_executor
    with pytest.raises(ConfigError, match="one of multiprocess, in_process, celery, docker, k8s"):
        select_executor("spark")
    try:
        import dagster_celery  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install dagster-celery"):
            select_executor("celery")
