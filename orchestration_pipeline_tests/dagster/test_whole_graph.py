"""The whole code location, end to end on demo data: every asset materializes and every check passes."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from orchestration_pipeline.definitions import DEFS_FOLDER
from orchestration_pipeline.defs.resources import (
    IndexSettings,
    IngestionSettings,
    OrchestrationDatabase,
    PipelineHome,
    ProjectionSettings,
    TasksDatabase,
    VectorIndexResource,
)
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.demo import demo_tasks, generate_demo, seed_tasks
from orchestration_pipeline.lib.index.host_client import stop_host

pytestmark = pytest.mark.db


def _definitions(orch_dsn: str, tasks_dsn: str, home) -> dg.Definitions:
    """Everything under defs/ (as the code location loads it), on the test databases."""
    resources = {
        "orchestration_db": OrchestrationDatabase(dsn=orch_dsn),
        "tasks_db": TasksDatabase(dsn=tasks_dsn),
        "pipeline_home": PipelineHome(orch_home=str(home)),
        "ingestion_settings": IngestionSettings(),
        "projection_settings": ProjectionSettings(),
        "vector_index": VectorIndexResource(orch_home=str(home), embedder="hashing"),
        "index_settings": IndexSettings(),
    }
    loaded = dg.load_from_defs_folder(path_within_project=DEFS_FOLDER)
    return dg.Definitions.merge(loaded, dg.Definitions(resources=resources))


def _failures(evaluations) -> list[str]:
    return [
        f"{e.asset_key.to_user_string()}.{e.check_name}: {e.description}" for e in evaluations if not e.passed
    ]


@pytest.fixture(autouse=True)
def _index_host_stopped(tmp_path):
    yield
    stop_host(tmp_path / "qdrant")


def test_every_check_of_the_graph_passes_on_demo_data(orch_dsn, tasks_dsn, tmp_path):
    written = generate_demo(tmp_path / "landing", sessions=6, seed=17)
    with connection(tasks_dsn) as conn:
        seed_tasks(conn, demo_tasks(written))  # with its deliberate drift, which the reconciliation repairs
    definitions = _definitions(orch_dsn, tasks_dsn, tmp_path)
    every_check = {
        (k.asset_key.to_user_string(), k.name) for k in definitions.resolve_asset_graph().asset_check_keys
    }
    instance = dg.DagsterInstance.ephemeral()
    # the daily-partitioned retention assets run one day at a time: a day past the archive window
    retention = dg.AssetSelection.groups("retention")
    definitions = dg.Definitions.merge(
        definitions,
        dg.Definitions(
            jobs=[
                dg.define_asset_job("whole_graph", selection=dg.AssetSelection.all() - retention),
                dg.define_asset_job("whole_retention", selection=retention),
            ]
        ),
    )

    result = definitions.resolve_job_def("whole_graph").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    day = (datetime.now(UTC) - timedelta(days=40)).date().isoformat()
    archived = definitions.resolve_job_def("whole_retention").execute_in_process(
        instance=instance, raise_on_error=False, partition_key=day
    )
    assert archived.success, [e.message for e in archived.all_events if e.is_failure]
    evaluations = result.get_asset_check_evaluations() + archived.get_asset_check_evaluations()
    assert _failures(evaluations) == []
    assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} == every_check  # none left out
    assert len(every_check) >= 15

    # what the schedules and sensors run afterwards passes as well
    for job in ("freshness_job", "ingest_job", "audit_job", "reconciliation_job"):
        again = definitions.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False)
        assert again.success, job
        assert _failures(again.get_asset_check_evaluations()) == [], job
