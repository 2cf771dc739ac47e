"""What alerting relies on in Dagster below its public API: if Dagster changes it, these fail.

``defs/alerting/events.py: read_event_log`` is the one function that reads the event log through
``event_log_storage.get_event_records`` (check evaluations, freshness changes by storage id) and
``get_records_for_run`` (a run's step failures); the converters next to it read the event data
classes. Each test below pins one of those assumptions against a real instance.
"""

import warnings
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from orchestration_pipeline.defs.alerting.events import (
    check_evaluation,
    freshness_change,
    read_event_log,
    run_failure,
)
from orchestration_pipeline.defs.checks_support import check_metadata
from orchestration_pipeline_tests.alerting._support import report_freshness_change

EVALUATION = dg.DagsterEventType.ASSET_CHECK_EVALUATION


@dg.asset(
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=50), warn_window=timedelta(hours=26)
    )
)
def daily():
    return 1


@dg.asset_check(asset=daily, metadata=check_metadata("WARN", "docs/runbooks/alerting.md#a-check-failed"))
def daily_rows() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description="2 rows missing",
        metadata={"missing": 2, "samples": dg.MetadataValue.json(["e1", "e2"])},
    )


@dg.asset
def broken():
    raise RuntimeError("disk full\nmore detail")


DEFS = dg.Definitions(assets=[daily, broken], asset_checks=[daily_rows])


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def _repository():
    return DEFS.get_repository_def()


def test_check_evaluations_are_read_oldest_first_after_a_storage_id_without_warnings(instance):
    for _ in range(3):
        dg.materialize([daily, daily_rows], instance=instance)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecation here would be a change to act on
        records = read_event_log(instance, EVALUATION)
    ids = [r.storage_id for r in records]
    assert len(ids) == 3 and ids == sorted(ids)
    assert [r.storage_id for r in read_event_log(instance, EVALUATION, after_storage_id=ids[0])] == ids[1:]
    assert len(read_event_log(instance, EVALUATION, after_storage_id=ids[0], limit=1)) == 1
    future = (datetime.now(UTC) + timedelta(hours=1)).timestamp()
    assert read_event_log(instance, EVALUATION, after_timestamp=future) == []


def test_an_evaluation_record_carries_what_an_alert_needs(instance):
    result = dg.materialize([daily, daily_rows], instance=instance)
    [record] = read_event_log(instance, EVALUATION)
    evaluation = check_evaluation(record, _repository())
    assert evaluation.asset == ("daily",) and evaluation.check_name == "daily_rows"
    assert (evaluation.passed, evaluation.severity, evaluation.blocking) == (False, "WARN", False)
    assert evaluation.description == "2 rows missing"
    assert evaluation.metadata == {"missing": 2, "samples": ["e1", "e2"]}
    assert evaluation.run_id == result.run_id and evaluation.storage_id == record.storage_id
    assert evaluation.declared == {"severity": "WARN", "runbook": "docs/runbooks/alerting.md#a-check-failed"}
    assert abs((datetime.now(UTC) - evaluation.evaluated_at).total_seconds()) < 60


def test_a_check_of_another_code_location_has_no_declared_metadata(instance):
    dg.materialize([daily, daily_rows], instance=instance)
    [record] = read_event_log(instance, EVALUATION)
    assert check_evaluation(record, None).declared == {}
    other = dg.Definitions(assets=[broken]).get_repository_def()
    assert check_evaluation(record, other).declared == {}


def test_freshness_state_changes_are_read_with_the_assets_policy(instance):
    dg.materialize([daily], instance=instance)
    report_freshness_change(instance, dg.AssetKey("daily"), "FAIL", "WARN", 1_800_000_000.0)
    [record] = read_event_log(instance, dg.DagsterEventType.FRESHNESS_STATE_CHANGE)
    change = freshness_change(record, _repository(), instance)
    assert change.asset == ("daily",) and (change.new_state, change.previous_state) == ("FAIL", "WARN")
    assert change.changed_at == datetime.fromtimestamp(1_800_000_000.0, tz=UTC)
    assert change.policy == "warn after 26h, fail after 50h without a materialization"
    assert change.last_materialized_at is not None


def test_a_failed_runs_step_failures_are_read_with_the_error_its_code_raised(instance):
    job = DEFS.resolve_implicit_global_asset_job_def()  # what UI and CLI materializations run
    result = job.execute_in_process(instance=instance, asset_selection=[broken.key], raise_on_error=False)
    changes = instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=10, ascending=True)
    [record] = changes.records
    failure = run_failure(record, instance)
    assert failure.run_id == result.run_id and failure.reason == "STEP_FAILURE"
    assert failure.job_name == "__ASSET_JOB" and failure.asset_selection == ("broken",)
    [step] = failure.steps
    assert (step.step_key, step.error) == ("broken", "RuntimeError: disk full")
    assert step.error_class == "DagsterExecutionStepExecutionError"


def test_a_run_failed_by_a_blocking_check_names_the_check_error_class(instance):
    @dg.asset_check(asset=daily, blocking=True)
    def daily_blocking() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False)

    dg.materialize([daily, daily_blocking], instance=instance, raise_on_error=False)
    [record] = instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=10).records
    [step] = run_failure(record, instance).steps
    assert step.error_class == "DagsterAssetCheckFailedError"


def test_a_cursor_reads_dagsters_default_sqlite_storage_by_the_runs_updated_since(tmp_path):
    """One SQLite database per run: storage ids are not comparable across runs, so the cursor's
    time (runs updated after it) is what such a storage reads from, and reading must not fail."""
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path)) as instance:
        assert instance.event_log_storage.is_run_sharded
        dg.materialize([daily, daily_rows], instance=instance)
        [first] = read_event_log(instance, EVALUATION, after_storage_id=0, runs_updated_after=0.0)
        between = datetime.now(UTC).timestamp()
        dg.materialize([daily, daily_rows], instance=instance)
        later = read_event_log(
            instance, EVALUATION, after_storage_id=first.storage_id, runs_updated_after=between
        )
        assert [r.run_id for r in later] != [first.run_id] and len(later) == 1
        assert len(read_event_log(instance, EVALUATION, after_storage_id=10**9, runs_updated_after=0.0)) == 2
