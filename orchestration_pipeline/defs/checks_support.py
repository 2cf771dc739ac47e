"""Turning a lib ``Verdict`` into a Dagster ``AssetCheckResult``."""

import dagster as dg

from orchestration_pipeline.lib.verdict import Verdict


def to_check_result(verdict: Verdict) -> dg.AssetCheckResult:
    """ERROR severity unless the verdict is ``warn_only``; Dagster types the metadata values itself."""
    severity = dg.AssetCheckSeverity.WARN if verdict.warn_only else dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=severity,
        description=verdict.description,
        metadata=dict(verdict.metadata),
    )
