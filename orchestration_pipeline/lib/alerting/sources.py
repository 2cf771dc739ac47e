"""Observations from the three sources: a check evaluation, a freshness state change, a run.

The sensors copy what they read from Dagster into the plain records below (no Dagster types), and
these functions decide what each one means for alerting: which streak it belongs to, whether it
fails or passes, how severe it is, and the one line, the details, the UI path and the runbook
section an operator needs to act on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestration_pipeline.lib.alerting.model import (
    RUNBOOK,
    Observation,
    alert_severity,
    asset_path,
    check_path,
    one_line,
    run_path,
)

#: Freshness states (Dagster's FreshnessState) that fail a streak, and the alert severity of each.
FRESHNESS_FAILING = {"WARN": "warning", "FAIL": "error"}
FRESHNESS_PASSING = ("PASS",)
#: The error a step raises when a blocking check failed: that run is explained by the check's alert.
BLOCKING_CHECK_ERROR = "DagsterAssetCheckFailedError"
#: Longer asset selections are named by a hash in a run streak's source.
SELECTION_NAME_MAX = 200
STEPS_KEPT = 10


def asset_name(parts: Sequence[str]) -> str:
    """An asset key as Dagster's UI writes it: its parts joined by "/"."""
    return "/".join(parts)


# --- asset checks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckEvaluation:
    """One asset-check evaluation as read from the event log, in plain values.

    ``declared`` is the check spec's metadata (``severity`` and ``runbook``, as every check of the
    pipeline declares them); ``metadata`` is the evaluation's own (counts, sample ids).
    """

    asset: tuple[str, ...]
    check_name: str
    passed: bool
    severity: str  # WARN or ERROR, as the evaluation reported it
    description: str | None
    metadata: Mapping[str, Any]
    run_id: str
    storage_id: int
    evaluated_at: datetime
    partition: str | None = None
    blocking: bool = False
    declared: Mapping[str, Any] = field(default_factory=dict)

    @property
    def check_key(self) -> str:
        return f"{asset_name(self.asset)}:{self.check_name}"


def check_observation(evaluation: CheckEvaluation) -> Observation:
    """A failed evaluation fails the check's streak at the evaluation's severity; a pass ends it."""
    e = evaluation
    asset = asset_name(e.asset)
    severity = alert_severity(e.severity)
    verb = "passes again" if e.passed else f"failed ({e.severity})"
    described = f": {e.description}" if e.description else ""
    where = f" [partition {e.partition}]" if e.partition else ""
    details = {
        "metadata": dict(e.metadata),
        "description": e.description,
        "declared_severity": e.declared.get("severity"),
        "blocking": e.blocking,
        "partition": e.partition,
    }
    return Observation(
        source=f"check:{e.check_key}",
        failing=not e.passed,
        observed_at=e.evaluated_at,
        event_ref=f"{e.run_id or 'runless'}#{e.storage_id}",
        message=one_line(f"{e.check_name} on {asset}{where} {verb}{described}"),
        severity=severity,
        details=details,
        link_path=check_path(e.asset, e.check_name),
        runbook=str(e.declared.get("runbook") or f"{RUNBOOK}#a-check-failed"),
        run_id=e.run_id or None,
        check_key=e.check_key,
        asset_key=asset,
    )


# --- freshness ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FreshnessChange:
    """A change of an asset's freshness state (PASS, WARN, FAIL, UNKNOWN, NOT_APPLICABLE)."""

    asset: tuple[str, ...]
    new_state: str
    previous_state: str
    changed_at: datetime
    storage_id: int
    policy: str | None = None  # e.g. "warn after 26h, fail after 50h without a materialization"
    last_materialized_at: datetime | None = None
    runbook: str | None = None  # the asset's declared runbook, if it has one


def freshness_observation(change: FreshnessChange) -> Observation | None:
    """WARN and FAIL fail the asset's freshness streak, PASS ends it; UNKNOWN (never materialized)
    and NOT_APPLICABLE (no policy) say nothing, so they are not observations."""
    state = change.new_state.upper()
    if state not in FRESHNESS_FAILING and state not in FRESHNESS_PASSING:
        return None
    asset = asset_name(change.asset)
    failing = state in FRESHNESS_FAILING
    last = (
        change.last_materialized_at.isoformat(timespec="seconds") if change.last_materialized_at else "never"
    )
    policy = f" (policy: {change.policy})" if change.policy else ""
    if failing:
        message = f"{asset} is stale: freshness {state}, last materialized {last}{policy}"
    else:
        message = f"{asset} is fresh again (materialized {last})"
    return Observation(
        source=f"freshness:{asset}",
        failing=failing,
        observed_at=change.changed_at,
        event_ref=f"freshness#{change.storage_id}",
        message=one_line(message),
        severity=FRESHNESS_FAILING.get(state, "info"),
        details={
            "state": state,
            "previous_state": change.previous_state.upper(),
            "policy": change.policy,
            "last_materialized_at": change.last_materialized_at.isoformat()
            if change.last_materialized_at
            else None,
        },
        link_path=asset_path(change.asset),
        runbook=change.runbook or f"{RUNBOOK}#an-asset-is-stale",
        asset_key=asset,
    )


# --- runs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedStep:
    step_key: str
    error_class: str
    error: str  # the innermost cause's first line (what the user code raised)


@dataclass(frozen=True)
class RunFailure:
    """A failed run: its job, the assets it selected, and each failed step's error."""

    run_id: str
    job_name: str
    failed_at: datetime
    storage_id: int
    reason: str | None = None  # Dagster's RunFailureReason (STEP_FAILURE, RUN_EXCEPTION, ...)
    error: str | None = None  # the run's own error, when no step failed
    steps: tuple[FailedStep, ...] = ()
    asset_selection: tuple[str, ...] | None = None
    partition: str | None = None


def run_source(job_name: str, asset_selection: Sequence[str] | None) -> str:
    """The streak a run belongs to: its job; for Dagster's implicit asset jobs (``__ASSET_JOB``,
    materializations started from the UI), the job and the assets selected, so that a failing
    materialization of one asset is not resolved by a successful one of another."""
    if not job_name.startswith("__") or not asset_selection:
        return f"run:{job_name}"
    selection = ",".join(sorted(asset_selection))
    if len(selection) > SELECTION_NAME_MAX:
        digest = hashlib.sha256(selection.encode()).hexdigest()[:12]
        selection = f"{len(asset_selection)} assets #{digest}"
    return f"run:{job_name}[{selection}]"


def covered_by_checks(failure: RunFailure) -> bool:
    """True when every failed step failed because a blocking check failed at ERROR severity: the
    check sensor raises that check's alert, and a second alert for the same fault would be noise."""
    return bool(failure.steps) and all(step.error_class == BLOCKING_CHECK_ERROR for step in failure.steps)


def run_failure_observation(failure: RunFailure) -> Observation:
    """A failed run fails its job's streak at error severity."""
    f = failure
    if f.steps:
        first = f.steps[0]
        more = (
            f" (and {len(f.steps) - 1} more step{'s' if len(f.steps) > 2 else ''})"
            if len(f.steps) > 1
            else ""
        )
        cause = f"failed at step {first.step_key}{more}: {first.error}"
    else:
        cause = f"failed ({f.reason or 'no step failed'}): {f.error or 'see the run log'}"
    where = f" [partition {f.partition}]" if f.partition else ""
    return Observation(
        source=run_source(f.job_name, f.asset_selection),
        failing=True,
        observed_at=f.failed_at,
        event_ref=f"{f.run_id}#{f.storage_id}",
        message=one_line(f"run {f.run_id[:8]} of {f.job_name}{where} {cause}"),
        severity="error",
        details={
            "reason": f.reason,
            "error": f.error,
            "failed_steps": [
                {"step": s.step_key, "error_class": s.error_class, "error": s.error}
                for s in f.steps[:STEPS_KEPT]
            ],
            "asset_selection": list(f.asset_selection) if f.asset_selection else None,
            "partition": f.partition,
        },
        link_path=run_path(f.run_id),
        runbook=f"{RUNBOOK}#a-run-failed",
        run_id=f.run_id,
        job_name=f.job_name,
    )


def run_success_observation(
    job_name: str, asset_selection: Sequence[str] | None, run_id: str, ended_at: datetime
) -> Observation:
    """A successful run ends its job's failure streak."""
    return Observation(
        source=run_source(job_name, asset_selection),
        failing=False,
        observed_at=ended_at,
        event_ref=f"{run_id}#success",
        message=one_line(f"run {run_id[:8]} of {job_name} succeeded"),
        severity="info",
        link_path=run_path(run_id),
        run_id=run_id,
        job_name=job_name,
    )
