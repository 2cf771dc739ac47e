"""Turning a lib ``Verdict`` into a Dagster ``AssetCheckResult``."""

import dagster as dg

from orchestration_pipeline.lib.verdict import Verdict


def to_check_result(verdict: Verdict, *, warn: bool = False) -> dg.AssetCheckResult:
    """ERROR severity unless ``warn`` (or the verdict says warn_only); metadata is JSON-safe."""
    metadata = {}
    for key, value in verdict.metadata.items():
        if isinstance(value, bool):
            metadata[key] = dg.MetadataValue.bool(value)
        elif isinstance(value, int):
            metadata[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            metadata[key] = dg.MetadataValue.float(value)
        elif isinstance(value, str):
            metadata[key] = dg.MetadataValue.text(value)
        else:
            metadata[key] = dg.MetadataValue.json(value)
    severity = dg.AssetCheckSeverity.WARN if (warn or verdict.warn_only) else dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckResult(
        passed=verdict.passed, severity=severity, description=verdict.description, metadata=metadata
    )
