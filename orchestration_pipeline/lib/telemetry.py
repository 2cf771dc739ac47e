"""The pipeline's own records in the orchestration DB: metric rows and ``decision`` events.

Both write in the caller's transaction, so a record commits (or rolls back) with the work it
describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def record_metric(
    conn: psycopg.Connection,
    name: str,
    value: float,
    unit: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> None:
    """Append one row to ``metrics`` (pipeline telemetry, plotted over time)."""
    conn.execute(
        "INSERT INTO metrics (name, value, unit, tags) VALUES (%s, %s, %s, %s)",
        (name, float(value), unit, Jsonb(dict(tags or {}))),
    )


def record_decision(
    conn: psycopg.Connection,
    *,
    source: str,
    stage: str,
    rationale: str,
    severity: str = "info",
    details: Mapping[str, Any] | None = None,
) -> str:
    """Append one ``decision`` event explaining what the pipeline decided; returns its event_id."""
    payload = {**(details or {}), "rationale": rationale}
    row = conn.execute(
        """
        INSERT INTO events (event_id, event_type, occurred_at, source, stage, severity, payload)
        VALUES (gen_random_uuid(), 'decision', now(), %s, %s, %s, %s)
        RETURNING event_id
        """,
        (source, stage, severity, Jsonb(payload)),
    ).fetchone()
    return str(row[0])


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])
