"""The vocabulary of alerting: severities, the threshold, observations and Dagster UI paths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from orchestration_pipeline.errors import OrchError

#: The words of the ``alerts.severity`` column, lowest first.
SEVERITIES = ("info", "warning", "error", "critical")
#: ORCH_ALERT_MIN_SEVERITY's values, as Dagster names check severities, and the alert word of each.
THRESHOLDS = {"WARN": "warning", "ERROR": "error"}
DEFAULT_THRESHOLD = "WARN"
#: The kinds of streak source, the prefix of ``alerts.source`` (``check:<asset>:<check>`` ...).
SOURCE_KINDS = ("check", "freshness", "run")
#: Where an alert points when its source declares no runbook section of its own.
RUNBOOK = "docs/runbooks/alerting.md"
MESSAGE_MAX = 300


class AlertError(OrchError):
    """An alerting request was refused (unknown alert, bad threshold, missing reason)."""


def parse_threshold(value: str | None) -> str:
    """``WARN`` or ``ERROR`` (any case); unset means ``WARN``. Anything else is refused naming the fix."""
    word = (value or DEFAULT_THRESHOLD).strip().upper()
    if word not in THRESHOLDS:
        raise AlertError(
            f"ORCH_ALERT_MIN_SEVERITY must be WARN or ERROR, not {value!r} — WARN alerts on warnings and "
            "errors, ERROR on errors only"
        )
    return word


def alert_severity(dagster_severity: str) -> str:
    """The alert word of a Dagster check severity (``WARN`` -> warning, ``ERROR`` -> error)."""
    word = str(dagster_severity).strip().upper()
    if word not in THRESHOLDS:
        raise AlertError(f"unknown check severity {dagster_severity!r} — expected WARN or ERROR")
    return THRESHOLDS[word]


def rank(severity: str) -> int:
    """The position of an alert severity, lowest first."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise AlertError(
            f"unknown alert severity {severity!r} — use one of {', '.join(SEVERITIES)}"
        ) from None


def meets(severity: str, threshold: str) -> bool:
    """True when an alert of ``severity`` is at or above the threshold (``WARN`` or ``ERROR``)."""
    return rank(severity) >= rank(THRESHOLDS[parse_threshold(threshold)])


def one_line(text: str | None, limit: int = MESSAGE_MAX) -> str:
    """``text`` as one line of at most ``limit`` characters: whitespace runs folded, cut with "…"."""
    folded = " ".join((text or "").split())
    return folded if len(folded) <= limit else folded[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Observation:
    """One fact about a source, read from Dagster: it failed (with a severity) or it passed.

    ``source`` names the streak (``check:<asset>:<check>``, ``freshness:<asset>``, ``run:<job>``);
    ``event_ref`` names the Dagster event it came from, so that reading the same event twice
    changes nothing. ``details`` is plain JSON: the check's metadata (counts, sample ids) and
    whatever else explains the failure.
    """

    source: str
    failing: bool
    observed_at: datetime
    event_ref: str
    message: str
    severity: str = "error"
    details: Mapping[str, Any] = field(default_factory=dict)
    link_path: str | None = None
    runbook: str | None = None
    run_id: str | None = None
    check_key: str | None = None
    asset_key: str | None = None
    job_name: str | None = None

    def __post_init__(self) -> None:
        kind = self.source.split(":", 1)[0]
        if kind not in SOURCE_KINDS or self.source == f"{kind}:":
            raise AlertError(
                f"observation source {self.source!r} must be <kind>:<name>, kind one of {', '.join(SOURCE_KINDS)}"
            )
        if self.observed_at.tzinfo is None:
            raise AlertError("observation time must carry a timezone (UTC)")
        rank(self.severity)

    @property
    def kind(self) -> str:
        return self.source.split(":", 1)[0]


# --- paths into the Dagster UI -----------------------------------------------------------------


def asset_path(asset_path_parts: Sequence[str], **query: str) -> str:
    """``/assets/<key>``: the asset's page in the Dagster UI (``query``: e.g. ``view="checks"``)."""
    path = "/assets/" + "/".join(quote(part, safe="") for part in asset_path_parts)
    return f"{path}?{urlencode(query)}" if query else path


def check_path(asset_path_parts: Sequence[str], check_name: str) -> str:
    """The check's detail on its asset's Checks tab."""
    return asset_path(asset_path_parts, view="checks", checkDetail=check_name)


def run_path(run_id: str) -> str:
    """The run's page (its logs and the failed step)."""
    return f"/runs/{quote(run_id, safe='')}"


def ui_link(link_path: str | None, ui_url: str | None) -> str | None:
    """An absolute link when the Dagster UI's base URL is known, the path otherwise."""
    if not link_path:
        return None
    return f"{ui_url.rstrip('/')}{link_path}" if ui_url else link_path
