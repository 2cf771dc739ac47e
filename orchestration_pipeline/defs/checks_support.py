"""What every asset check shares: its declared metadata, and turning a lib ``Verdict`` into a result."""

import re
from collections.abc import Callable
from pathlib import Path
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


GUIDE_INTRO = """# Operator guide: every check, what it means, what to do

Generated from the code location's Definitions (`ORCH_UPDATE_GUIDE=1 pytest
orchestration_pipeline_tests/unit/test_operator_guide.py` regenerates it). Each check's entry
says which asset it guards, how severe a failure is, whether it blocks the run, what a failure
means, and the first steps from its runbook section; alerts link here. An ERROR failure makes
`orchestration-pipeline run` exit 1 and raises an error alert; a WARN failure raises a warning alert
(when `ORCH_ALERT_MIN_SEVERITY` is `WARN`). A blocking check stops the assets downstream in the
same run.
"""


def _runbook_steps(root: Path, runbook: str) -> str:
    """The first paragraphs of the runbook section (what failed, what to do), quoted."""
    path, _, anchor = runbook.partition("#")
    try:
        text = (root / path).read_text(encoding="utf-8")
    except OSError:
        return ""
    section = re.search(rf"^#{{2,3}} `?{re.escape(anchor)}`?\s*\n(.*?)(?=^#{{2,3}} |\Z)", text, re.S | re.M)
    if not section:
        return ""
    paragraphs = [p.strip() for p in section[1].strip().split("\n\n") if p.strip()]
    return "\n\n".join(paragraphs[:2])


def operator_guide(definitions: dg.Definitions, root: Path) -> str:
    """The operator guide's Markdown: every check of ``definitions``, by asset group and asset."""
    graph = definitions.resolve_asset_graph()
    by_group: dict[str, list] = {}
    for key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        spec = graph.get_check_spec(key)
        group = graph.get(key.asset_key).group_name or "default"
        by_group.setdefault(group, []).append(spec)
    out = [GUIDE_INTRO]
    for group in sorted(by_group):
        out.append(f"## {group}\n")
        for spec in by_group[group]:
            meta = {k: getattr(v, "value", v) for k, v in (spec.metadata or {}).items()}
            runbook = meta.get("runbook", "")
            blocking = "blocking" if spec.blocking else "non-blocking"
            out.append(f"### {spec.name}\n")
            out.append(
                f"On `{spec.asset_key.to_user_string()}`, {meta.get('severity', 'ERROR')}, {blocking}. "
                f"{spec.description or ''}\n"
            )
            steps = _runbook_steps(root, runbook)
            if steps:
                out.append("\n".join(f"> {line}" if line else ">" for line in steps.splitlines()) + "\n")
            if runbook:
                out.append(f"Runbook: [{runbook}]({runbook.replace('docs/', '', 1)})\n")
    return "\n".join(out)
