"""What the alerting sensors read from Dagster, copied into lib.alerting's plain records.

Dagster has public APIs for run status changes (``fetch_run_status_changes``) and runs
(``get_run_records``), used as they are. It has none for asset-check evaluations or freshness state
changes by storage id: :func:`read_event_log` is the one function that reaches below the public
API for those (and for a run's step failures), and ``orchestration_pipeline_tests/alerting/
test_dagster_event_log.py`` fails if Dagster changes what it relies on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from orchestration_pipeline.lib.alerting.sources import (
    CheckEvaluation,
    FailedStep,
    FreshnessChange,
    RunFailure,
)

PARTITION_TAG = "dagster/partition"


def read_event_log(
    instance: dg.DagsterInstance,
    event_type: dg.DagsterEventType,
    *,
    after_storage_id: int | None = None,
    runs_updated_after: float | None = None,
    after_timestamp: float | None = None,
    run_id: str | None = None,
    limit: int = 500,
) -> list[dg.EventLogRecord]:
    """Event-log records of one type, oldest first: after a cursor (or a time), or of one run.

    The cursor pairs a storage id (what an event log in PostgreSQL orders by) with a time: Dagster's
    default SQLite storage keeps one database per run, whose ids are not comparable, and reads the
    runs updated after that time instead, all of their events (``limit`` would cut a run's events
    off where no cursor can resume). The caller applies what it reads idempotently, so reading an
    event twice there is harmless.

    The only use of Dagster internals in alerting: ``event_log_storage.get_event_records`` (what
    the deprecated ``DagsterInstance.get_event_records`` calls, minus its warning) and
    ``DagsterInstance.get_records_for_run`` for one run's events.
    """
    if run_id is not None:
        return list(instance.get_records_for_run(run_id, of_type=event_type, limit=limit).records)
    cursor = None
    if after_storage_id is not None:
        since = datetime.fromtimestamp(runs_updated_after or 0.0, tz=UTC)
        cursor = dg.RunShardedEventsCursor(id=after_storage_id, run_updated_after=since)
    records_filter = dg.EventRecordsFilter(
        event_type=event_type, after_cursor=cursor, after_timestamp=after_timestamp
    )
    storage = instance.event_log_storage
    batch = None if storage.is_run_sharded else limit
    return list(storage.get_event_records(records_filter, limit=batch, ascending=True))


def _when(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as plain JSON: each MetadataValue's value; anything else JSON cannot hold as text."""
    unwrapped = {str(k): getattr(v, "value", v) for k, v in values.items()}
    return json.loads(json.dumps(unwrapped, default=str))


def _declared_check_metadata(repository: dg.RepositoryDefinition | None, key: dg.AssetCheckKey) -> dict:
    """The check spec's metadata (severity, runbook) when the check is defined in this code location."""
    if repository is None:
        return {}
    graph = repository.asset_graph
    if key not in graph.asset_check_keys:
        return {}
    return plain(graph.get_check_spec(key).metadata)


def check_evaluation(
    record: dg.EventLogRecord, repository: dg.RepositoryDefinition | None
) -> CheckEvaluation:
    """An ASSET_CHECK_EVALUATION record as a plain CheckEvaluation."""
    evaluation = record.event_log_entry.dagster_event.event_specific_data
    key = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)
    return CheckEvaluation(
        asset=tuple(evaluation.asset_key.path),
        check_name=evaluation.check_name,
        passed=bool(evaluation.passed),
        severity=evaluation.severity.value,
        description=evaluation.description,
        metadata=plain(evaluation.metadata),
        run_id=record.event_log_entry.run_id,
        storage_id=record.storage_id,
        evaluated_at=_when(record.event_log_entry.timestamp),
        partition=evaluation.partition,
        blocking=bool(evaluation.blocking),
        declared=_declared_check_metadata(repository, key),
    )


def _describe_policy(policy: Any) -> str | None:
    """A freshness policy in words: its windows when it has them (a time-window policy)."""
    if policy is None:
        return None
    parts = []
    for name, verb in (("warn_window", "warn"), ("fail_window", "fail")):
        window = getattr(policy, name, None)
        if hasattr(window, "to_timedelta"):
            window = window.to_timedelta()
        if window is not None and hasattr(window, "total_seconds"):
            parts.append(f"{verb} after {window.total_seconds() / 3600:g}h")
    return (", ".join(parts) + " without a materialization") if parts else type(policy).__name__


def freshness_change(
    record: dg.EventLogRecord, repository: dg.RepositoryDefinition | None, instance: dg.DagsterInstance
) -> FreshnessChange:
    """A FRESHNESS_STATE_CHANGE record as a plain FreshnessChange, with the asset's policy, its
    last materialization and its declared runbook (asset metadata ``runbook``) when known."""
    change = record.event_log_entry.dagster_event.event_specific_data
    policy, runbook = None, None
    if repository is not None and repository.asset_graph.has(change.key):
        node = repository.asset_graph.get(change.key)
        policy = _describe_policy(getattr(node, "freshness_policy", None))
        runbook = plain(node.metadata or {}).get("runbook")
    latest = instance.get_latest_materialization_event(change.key)
    return FreshnessChange(
        asset=tuple(change.key.path),
        new_state=str(getattr(change.new_state, "value", change.new_state)),
        previous_state=str(getattr(change.previous_state, "value", change.previous_state)),
        changed_at=_when(change.state_change_timestamp),
        storage_id=record.storage_id,
        policy=policy,
        last_materialized_at=_when(latest.timestamp) if latest else None,
        runbook=runbook,
    )


def _innermost(error: Any) -> Any:
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error


def _first_line(error: Any) -> str:
    if error is None:
        return "(no error recorded)"
    inner = _innermost(error)
    text = (inner.message or "").strip().splitlines()
    return text[0] if text else (inner.cls_name or "error")


def run_failure(record: dg.EventLogRecord, instance: dg.DagsterInstance) -> RunFailure:
    """A RUN_FAILURE record as a plain RunFailure, with each failed step's class and first line."""
    entry = record.event_log_entry
    data = entry.dagster_event.event_specific_data
    run = instance.get_run_by_id(entry.run_id)
    steps = []
    for step_record in read_event_log(instance, dg.DagsterEventType.STEP_FAILURE, run_id=entry.run_id):
        step_entry = step_record.event_log_entry
        error = step_entry.dagster_event.event_specific_data.error
        steps.append(
            FailedStep(
                step_entry.step_key or "?", (error.cls_name if error else None) or "", _first_line(error)
            )
        )
    reason = getattr(data, "failure_reason", None)
    return RunFailure(
        run_id=entry.run_id,
        job_name=entry.job_name or (run.job_name if run else "?"),
        failed_at=_when(entry.timestamp),
        storage_id=record.storage_id,
        reason=getattr(reason, "value", None),
        error=_first_line(data.error) if getattr(data, "error", None) else (entry.user_message or None),
        steps=tuple(steps),
        asset_selection=run_selection(run) if run else None,
        partition=run.tags.get(PARTITION_TAG) if run else None,
    )


def run_selection(run: dg.DagsterRun) -> tuple[str, ...] | None:
    """A run's asset selection as strings (None: the whole job)."""
    return tuple(sorted(k.to_user_string() for k in run.asset_selection)) if run.asset_selection else None
