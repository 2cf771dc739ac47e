"""The projection on ingest (``ingest_job``), ``projection_caught_up``, and the freshness checks
``drift_report_fresh`` and ``audit_checkpoint_fresh`` with the schedule that evaluates them alone."""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from orchestration_pipeline.definitions import DEFS_FOLDER, defs
from orchestration_pipeline.defs.freshness.checks import freshness_job, half_hourly_freshness
from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.projection.assets import projection_drift_report
from orchestration_pipeline.defs.resources import (
    IndexSettings,
    IngestionSettings,
    OrchestrationDatabase,
    PipelineHome,
    ProjectionSettings,
    TasksDatabase,
    VectorIndexResource,
)
from orchestration_pipeline.lib.audit.chain import checkpoint_ledger
from orchestration_pipeline.lib.audit.freshness import checkpoint_fresh
from orchestration_pipeline.lib.audit.ledger import record_audit
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.demo import demo_tasks, generate_demo, seed_tasks
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline.lib.projection.checks import drift_report_fresh, projection_caught_up
from orchestration_pipeline.lib.projection.projector import TASK_EVENT_TYPES, project_events, projection_lag

AUDIT_CHECK_OP = "audit_ledger_integrity_audit_checkpoint_fresh"


@pytest.fixture(scope="module")
def loaded() -> dg.Definitions:
    """Everything under defs/, without resources (each test brings its own databases)."""
    return dg.load_from_defs_folder(path_within_project=DEFS_FOLDER)


def _definitions(loaded, orch_dsn, tasks_dsn, home, **settings) -> dg.Definitions:
    resources = {
        "orchestration_db": OrchestrationDatabase(dsn=orch_dsn),
        "tasks_db": TasksDatabase(dsn=tasks_dsn),
        "pipeline_home": PipelineHome(orch_home=str(home)),
        "ingestion_settings": IngestionSettings(),
        "projection_settings": ProjectionSettings(**settings),
        "vector_index": VectorIndexResource(orch_home=str(home), embedder="hashing"),
        "index_settings": IndexSettings(),
    }
    return dg.Definitions.merge(loaded, dg.Definitions(resources=resources))


def _run(definitions, job_name, run_config=None):
    result = definitions.resolve_job_def(job_name).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), run_config=run_config or {}, raise_on_error=False
    )
    return result, {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture
def demo_world(orch_dsn, tasks_dsn, tmp_path):
    written = generate_demo(tmp_path / "landing", sessions=3, seed=5)
    with connection(tasks_dsn) as conn:
        seed_tasks(conn, demo_tasks(written))
    return orch_dsn, tasks_dsn, tmp_path


def _audit_entry(dsn: str, entity_id: str) -> None:
    with connection(dsn) as conn, conn.transaction():
        record_audit(
            conn, actor="test:freshness", request_id="req-fresh", operation="update",
            entity_type="policy", entity_id=entity_id, after={"enabled": True},
        )  # fmt: skip


# --- the projection on ingest --------------------------------------------------------------------


@pytest.mark.db
def test_ingest_job_projects_what_it_ingests(loaded, demo_world):
    definitions = _definitions(loaded, *demo_world)
    result, checks = _run(definitions, "ingest_job")
    assert result.success
    ingested = result.asset_materializations_for_node("raw_events")[0].metadata["accepted"].value
    projected = result.asset_materializations_for_node("task_projection")[0].metadata
    with connection(demo_world[0]) as conn:
        task_events = conn.execute(
            "SELECT count(*) FROM events WHERE task_id IS NOT NULL AND event_type = ANY(%s)",
            (list(TASK_EVENT_TYPES),),
        ).fetchone()[0]
    assert ingested > task_events > 0
    # the run that ingested them applied every task event, unless (on a server shared with other
    # sessions) an older open transaction held the projector back, and then they show as lag
    assert projected["events_applied"].value == task_events or projected["lag_events"].value > 0
    assert checks["projection_caught_up"].passed
    assert checks["projection_caught_up"].metadata["waiting_events"].value == 0


@pytest.mark.db
def test_projection_caught_up_fails_while_old_task_events_wait(loaded, demo_world):
    orch_dsn, tasks_dsn, home = demo_world
    assert dg.materialize(
        [raw_events], resources=_definitions(loaded, *demo_world).resources, raise_on_error=False
    ).success  # ingested, not projected
    later = datetime.now(UTC) + timedelta(minutes=11)
    with connection(orch_dsn) as conn:
        assert projection_caught_up(conn, max_age_minutes=10).passed  # just ingested: within the limit
        stale = projection_caught_up(conn, max_age_minutes=10, now=later)
    assert not stale.passed and stale.metadata["waiting_events"] > 0
    assert "not projected yet" in stale.description and "projection update" in stale.description

    # the same through Dagster: a limit of 0 minutes makes every unprojected event overdue
    _result, checks = _run(_definitions(loaded, *demo_world, unprojected_max_age_minutes=0), "freshness_job")
    failed = checks["projection_caught_up"]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR

    with connection(orch_dsn) as conn, connection(tasks_dsn) as tasks:
        _project_all(conn, tasks)
        assert projection_caught_up(conn, max_age_minutes=10, now=later).passed


def _project_all(conn, tasks, timeout_s: float = 60.0) -> None:
    """Project until nothing is left: on a server shared with other sessions, their open
    transactions may hold the projector back for a moment."""
    deadline = time.monotonic() + timeout_s
    project_events(conn, tasks)
    while projection_lag(conn) and time.monotonic() < deadline:
        time.sleep(0.2)
        project_events(conn, tasks)


@pytest.mark.db
def test_projection_caught_up_names_a_transaction_that_holds_the_projector_back(demo_world):
    orch_dsn, tasks_dsn, home = demo_world
    later = datetime.now(UTC) + timedelta(minutes=11)
    with connection(orch_dsn) as blocker:
        blocker.execute("SELECT pg_current_xact_id()")  # takes a transaction id and keeps it open
        with connection(orch_dsn) as conn, connection(tasks_dsn) as tasks:
            Ingestor(conn).ingest_paths([home / "landing"])
            assert project_events(conn, tasks).events_applied == 0  # held back behind the open transaction
            held = projection_caught_up(conn, max_age_minutes=10, now=later)
        blocker.rollback()
    assert not held.passed and "may hold the projector back" in held.description
    assert held.metadata["oldest_open_transaction"]["pid"] > 0


@pytest.mark.db
def test_projection_caught_up_rejects_a_negative_limit(orch_dsn):
    with connection(orch_dsn) as conn, pytest.raises(ValueError, match="unprojected_max_age_minutes"):
        projection_caught_up(conn, max_age_minutes=-1)


# --- drift_report_fresh ----------------------------------------------------------------------------


def _old_report(dsn: str, hours: float) -> None:
    with connection(dsn) as conn, conn.transaction():
        conn.execute(
            """INSERT INTO drift_reports (started_at, finished_at, grace_minutes, tasks_compared,
                   projection_compared, skipped_in_grace, missing_in_projection, missing_in_tasks,
                   status_mismatch, action)
               VALUES (now() - %(age)s, now() - %(age)s, 15, 0, 0, 0, 0, 0, 0, 'none')""",
            {"age": timedelta(hours=hours)},
        )


@pytest.mark.db
def test_drift_report_fresh_fails_on_a_stale_report_and_passes_on_a_fresh_one(loaded, demo_world):
    orch_dsn, _tasks_dsn, home = demo_world
    with connection(orch_dsn) as conn:
        assert drift_report_fresh(conn, max_age_hours=26).passed  # nothing ingested, nothing to report
        Ingestor(conn).ingest_paths([home / "landing"])
        late = datetime.now(UTC) + timedelta(hours=27)
        never = drift_report_fresh(conn, max_age_hours=26, now=late)
    assert not never.passed and "no drift report at all" in never.description

    _old_report(orch_dsn, hours=27)
    definitions = _definitions(loaded, *demo_world)
    _result, checks = _run(definitions, "freshness_job")
    stale = checks["drift_report_fresh"]
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.ERROR
    assert "over the 26 h limit" in stale.description and stale.metadata["age_hours"].value > 26

    result, checks = _run(definitions, "reconciliation_job")  # a reconciliation: a fresh report
    assert result.success and checks["drift_report_fresh"].passed
    _result, checks = _run(definitions, "freshness_job")
    assert checks["drift_report_fresh"].passed
    with connection(orch_dsn) as conn:  # the same report, judged a day and three hours later
        assert not drift_report_fresh(conn, max_age_hours=26, now=late).passed


def test_the_dagster_freshness_policy_matches_the_checks_limit():
    policy = projection_drift_report.specs_by_key[projection_drift_report.key].freshness_policy
    limit = timedelta(hours=ProjectionSettings().drift_report_max_age_hours)
    assert isinstance(policy, dg.FreshnessPolicy)
    assert policy.fail_window.to_timedelta() == limit


# --- audit_checkpoint_fresh ------------------------------------------------------------------------


@pytest.mark.db
def test_checkpoint_fresh_fails_when_an_entry_waits_too_long_for_its_checkpoint(orch_dsn):
    later = datetime.now(UTC) + timedelta(hours=3)
    with connection(orch_dsn) as conn:
        assert checkpoint_fresh(conn, now=later).passed  # an empty ledger has nothing to seal
    _audit_entry(orch_dsn, "p-1")
    with connection(orch_dsn) as conn:
        assert checkpoint_fresh(conn).passed  # written just now
        unsealed = checkpoint_fresh(conn, now=later)
        assert not unsealed.passed and "no checkpoint yet" in unsealed.description
        assert "audit checkpoint" in unsealed.description and unsealed.metadata["unsealed_entries"] == 1
        assert checkpoint_ledger(conn).entries == 1
        assert checkpoint_fresh(conn, now=later).passed  # an old checkpoint on an idle ledger is fine
    _audit_entry(orch_dsn, "p-2")
    with connection(orch_dsn) as conn:
        waiting = checkpoint_fresh(conn, now=later)
        assert not waiting.passed and "the newest checkpoint, 1, is 3.0 h old" in waiting.description
        with pytest.raises(ValueError, match="max_unsealed_hours"):
            checkpoint_fresh(conn, max_age_hours=-1)


@pytest.mark.db
def test_audit_checkpoint_fresh_through_dagster(loaded, orch_dsn, tasks_dsn, tmp_path):
    definitions = _definitions(loaded, orch_dsn, tasks_dsn, tmp_path)
    _audit_entry(orch_dsn, "p-1")
    overdue = {"ops": {AUDIT_CHECK_OP: {"config": {"max_unsealed_hours": 0}}}}
    _result, checks = _run(definitions, "freshness_job", overdue)
    failed = checks["audit_checkpoint_fresh"]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    result, checks = _run(definitions, "audit_job", overdue)  # the checkpoint seals the entry
    assert result.success and checks["audit_checkpoint_fresh"].passed


# --- the half-hourly evaluation --------------------------------------------------------------------


def test_freshness_job_evaluates_the_three_checks_alone_every_half_hour():
    graph = defs().resolve_asset_graph()
    selection = freshness_job.selection
    assert selection.resolve(graph) == set()  # materializes nothing
    assert {k.name for k in selection.resolve_checks(graph)} == {
        "drift_report_fresh",
        "audit_checkpoint_fresh",
        "projection_caught_up",
    }
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 1, 2, 47, tzinfo=UTC))
    assert half_hourly_freshness.evaluate_tick(context).run_requests
    assert (half_hourly_freshness.job_name, half_hourly_freshness.cron_schedule) == (
        "freshness_job",
        "17,47 * * * *",
    )
