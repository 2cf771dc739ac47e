"""What every asset check shares: its declared metadata, and turning a lib ``Verdict`` into a result."""

from collections.abc import Callable
from typing import Any

import dagster as dg

from orchestration_pipeline.lib.verdict import Verdict

SEVERITIES = ("ERROR", "WARN")
RUNBOOK_DIR = "docs/runbooks/"


def check_metadata(severity: str, runbook: str) -> dict[str, str]:
    """The check spec's metadata: the severity of a failure and the runbook section explaining it.

    ``runbook`` is ``docs/runbooks/<file>.md#<anchor>``; ``orchestration-pipeline run`` prints both
    beside each check, and a test keeps every anchor a heading of its file.
    """
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    path, _, anchor = runbook.partition("#")
    if not (path.startswith(RUNBOOK_DIR) and path.endswith(".md") and anchor):
        raise ValueError(f"runbook must look like {RUNBOOK_DIR}<file>.md#<anchor>, not {runbook!r}")
    return {"severity": severity, "runbook": runbook}


def pipeline_check(
    asset: dg.AssetsDefinition, runbook: str, *, severity: str = "ERROR", blocking: bool = False
):
    """``dg.asset_check`` with the metadata every check of the pipeline declares: the function's
    docstring is the check's description, and the section named after the function in
    ``docs/runbooks/<runbook>`` explains a failure."""

    def decorate(fn):
        metadata = check_metadata(severity, f"{RUNBOOK_DIR}{runbook}#{fn.__name__}")
        return dg.asset_check(asset=asset, blocking=blocking, metadata=metadata)(fn)

    return decorate


def verdict_of(database: Any, verdict: Callable[..., Verdict], **options: Any) -> dg.AssetCheckResult:
    """Run a lib check (``verdict(conn, **options)``) on a connection from ``database``."""
    with database.connection() as conn:
        return to_check_result(verdict(conn, **options))


def to_check_result(verdict: Verdict) -> dg.AssetCheckResult:
    """ERROR severity unless the verdict is ``warn_only``; Dagster types the metadata values itself."""
    severity = dg.AssetCheckSeverity.WARN if verdict.warn_only else dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=severity,
        description=verdict.description,
        metadata=dict(verdict.metadata),
    )
