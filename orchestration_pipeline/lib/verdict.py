"""The result of a verification: what a Dagster asset check reports, without Dagster."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """Pass or fail, one line of description, and bounded metadata (counts, first ids)."""

    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    warn_only: bool = False  # a failure that should be reported as WARN, not ERROR
