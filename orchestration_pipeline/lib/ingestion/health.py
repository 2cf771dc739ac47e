"""How ingestion is keeping up: the logic behind the WARN checks ``ingest_kpis_within_targets``
and ``quarantine_backlog`` on ``raw_events``.

The KPIs are those the Ingestor records (:mod:`orchestration_pipeline.lib.ingestion.ingest`): per
file ``ParseDuration`` (ms, the time to read, parse and write it) and ``SkippedDuplicate``; per
run ``DatabaseWriteLatency`` (the p95 of its batch writes, ms) and the run's summary in
``ingest_runs``. Percentiles are nearest-rank (:func:`~orchestration_pipeline.lib.telemetry.percentile`),
as in the ``raw_events`` metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.telemetry import percentile
from orchestration_pipeline.lib.verdict import Verdict
from orchestration_pipeline.lib.wording import plural

SAMPLE = 10


@dataclass(frozen=True)
class KpiTargets:
    """The ingestion KPIs' targets: ParseDuration p95 at most ``parse_p95_ms`` and every file under
    ``parse_max_ms``; DatabaseWriteLatency p95 at most ``write_p95_ms``."""

    parse_p95_ms: float = 3_000.0
    parse_max_ms: float = 10_000.0
    write_p95_ms: float = 200.0

    def __post_init__(self) -> None:
        for name in ("parse_p95_ms", "parse_max_ms", "write_p95_ms"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of milliseconds, got {value!r}")


# The latest runs, newest first, with the ParseDuration of each file they ingested and their
# DatabaseWriteLatency. Metrics are found by name and time (metrics_name_time_idx), then by the
# run_id tag; the day of slack covers a clock difference between the ingester and the server.
_RUNS_SQL = """
WITH runs AS (
    SELECT run_id, started_at, finished_at, summary FROM ingest_runs
    ORDER BY finished_at DESC LIMIT %(runs)s
), since AS (
    SELECT min(started_at) - interval '1 day' AS t FROM runs
), telemetry AS (
    SELECT m.name, m.value, m.tags FROM metrics m, since
    WHERE m.name IN ('ParseDuration', 'DatabaseWriteLatency') AND m.recorded_at >= since.t
      AND m.tags->>'run_id' IN (SELECT run_id::text FROM runs)
)
SELECT r.run_id::text AS run_id, r.finished_at, r.summary,
       coalesce((SELECT array_agg(t.value ORDER BY t.value DESC) FROM telemetry t
                 WHERE t.name = 'ParseDuration' AND t.tags->>'run_id' = r.run_id::text), '{}') AS parse_ms,
       (SELECT array_agg(t.tags->>'file' ORDER BY t.value DESC) FROM telemetry t
        WHERE t.name = 'ParseDuration' AND t.tags->>'run_id' = r.run_id::text) AS files,
       (SELECT max(t.value) FROM telemetry t
        WHERE t.name = 'DatabaseWriteLatency' AND t.tags->>'run_id' = r.run_id::text) AS write_p95_ms
FROM runs r
ORDER BY r.finished_at DESC
"""


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _judge_run(row: dict[str, Any], targets: KpiTargets) -> dict[str, Any]:
    """One run's KPIs and the targets it missed."""
    parse_ms = [float(v) for v in row["parse_ms"]]
    files = row["files"] or []
    summary = row["summary"]
    p95 = percentile(parse_ms, 95) if parse_ms else None
    slowest = parse_ms[0] if parse_ms else None
    write = row["write_p95_ms"]
    breaches = []
    if p95 is not None and p95 > targets.parse_p95_ms:
        breaches.append(f"ParseDuration p95 {_seconds(p95)} > {_seconds(targets.parse_p95_ms)}")
    slow_files = [
        {"file": f, "parse_ms": ms}
        for f, ms in zip(files, parse_ms, strict=False)
        if ms >= targets.parse_max_ms
    ]
    if slow_files:
        breaches.append(
            f"{plural(len(slow_files), 'file')} took {_seconds(targets.parse_max_ms)} or more "
            f"(slowest {slow_files[0]['file']}: {_seconds(slow_files[0]['parse_ms'])})"
        )
    if write is not None and write > targets.write_p95_ms:
        breaches.append(f"DatabaseWriteLatency p95 {_seconds(write)} > {_seconds(targets.write_p95_ms)}")
    return {
        "run_id": row["run_id"],
        "finished_at": row["finished_at"].isoformat(),
        "files_parsed": len(parse_ms),
        "ParseDuration_p95_ms": p95,
        "ParseDuration_max_ms": slowest,
        "DatabaseWriteLatency_p95_ms": write,
        "lines": int(summary.get("lines", 0)),
        "SkippedDuplicate": int(summary.get("duplicates", 0)),
        "files": int(summary.get("files", 0)),
        "redropped_files": int(summary.get("skipped_files", 0)),
        "slow_files": slow_files[:SAMPLE],
        "breaches": breaches,
    }


def _duplicates(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The SkippedDuplicate ratio over the runs: duplicate lines of the lines read, and files
    dropped again whole (skipped unread, so their lines are not among those counted)."""
    lines = sum(r["lines"] for r in runs)
    duplicates = sum(r["SkippedDuplicate"] for r in runs)
    files = sum(r["files"] for r in runs)
    redropped = sum(r["redropped_files"] for r in runs)
    ratio = {
        "lines": lines,
        "duplicate_lines": duplicates,
        "duplicate_line_ratio": round(duplicates / lines, 4) if lines else 0.0,
        "files": files,
        "redropped_files": redropped,
        "redropped_file_ratio": round(redropped / files, 4) if files else 0.0,
    }
    words = (
        f"SkippedDuplicate {ratio['duplicate_line_ratio']:.1%} of {plural(lines, 'line')}, "
        f"{redropped} of {plural(files, 'file')} re-dropped"
    )
    return ratio, words


def ingest_kpis_within_targets(
    conn: psycopg.Connection, *, targets: KpiTargets | None = None, runs: int = 1
) -> Verdict:
    """The latest ``runs`` ingestion runs met the KPI targets (ParseDuration p95 and per-file max,
    DatabaseWriteLatency p95); reports the SkippedDuplicate ratio with re-dropped files counted.

    A miss is a warning (``warn_only``): ingestion was slow, nothing was lost.
    """
    targets = targets or KpiTargets()
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs} — set kpi_runs to 1 or more")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_RUNS_SQL, {"runs": runs}).fetchall()
    end_read(conn)
    if not rows:
        return Verdict(True, "no ingestion run yet", {"runs": []})
    judged = [_judge_run(row, targets) for row in rows]
    ratio, duplicates = _duplicates(judged)
    metadata = {
        "runs": judged,
        "targets_ms": {
            "ParseDuration_p95": targets.parse_p95_ms,
            "ParseDuration_max": targets.parse_max_ms,
            "DatabaseWriteLatency_p95": targets.write_p95_ms,
        },
        "skipped_duplicate": ratio,
    }
    missed = [r for r in judged if r["breaches"]]
    if missed:
        shown = "; ".join(f"run {r['run_id'][:8]}: {', '.join(r['breaches'])}" for r in missed[:3])
        return Verdict(False, f"{shown}; {duplicates}", metadata, warn_only=True)
    latest = judged[0]
    measured = []
    if latest["ParseDuration_p95_ms"] is not None:
        measured.append(
            f"ParseDuration p95 {_seconds(latest['ParseDuration_p95_ms'])} "
            f"(max {_seconds(latest['ParseDuration_max_ms'])})"
        )
    if latest["DatabaseWriteLatency_p95_ms"] is not None:
        measured.append(f"DatabaseWriteLatency p95 {_seconds(latest['DatabaseWriteLatency_p95_ms'])}")
    which = "latest run" if len(judged) == 1 else f"latest {len(judged)} runs"
    return Verdict(
        True, f"{which} within targets: {', '.join(measured) or 'no file parsed'}; {duplicates}", metadata
    )


def quarantine_backlog(conn: psycopg.Connection, *, max_age: timedelta = timedelta(hours=24)) -> Verdict:
    """No quarantined line has been pending (neither replayed nor discarded) longer than ``max_age``.

    Reports the old pending lines by failure type, with the oldest of each; a backlog is a
    warning (``warn_only``): the lines are kept, but nobody has replayed or discarded them.
    """
    if max_age <= timedelta(0):
        raise ValueError(f"max_age must be positive, got {max_age} — set quarantine_max_age_hours above 0")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT failure_type, count(*) AS pending,
                      count(*) FILTER (WHERE quarantined_at < now() - %(age)s) AS overdue,
                      min(quarantined_at) AS oldest, now() - min(quarantined_at) AS oldest_age
               FROM quarantine WHERE replayed_at IS NULL AND discarded_at IS NULL
               GROUP BY failure_type ORDER BY 3 DESC, 1""",
            {"age": max_age},
        ).fetchall()
    end_read(conn)
    hours = f"{max_age.total_seconds() / 3600:g} h"
    overdue = [r for r in rows if r["overdue"]]
    metadata = {
        "max_age_hours": max_age.total_seconds() / 3600,
        "pending": sum(r["pending"] for r in rows),
        "overdue": sum(r["overdue"] for r in rows),
        "by_failure_type": {
            r["failure_type"]: {
                "pending": r["pending"],
                "older_than_max_age": r["overdue"],
                "oldest_at": r["oldest"].isoformat(),
            }
            for r in rows
        },
    }
    if not overdue:
        return Verdict(
            True,
            f"{plural(metadata['pending'], 'quarantined line')} pending, none for longer than {hours}",
            metadata,
        )
    by_type = ", ".join(
        f"{r['failure_type']} {r['overdue']} (oldest {r['oldest_age'].total_seconds() / 3600:.0f} h)"
        for r in overdue[:5]
    )
    return Verdict(
        False,
        f"{plural(metadata['overdue'], 'quarantined line')} pending longer than {hours}: {by_type} — "
        "replay them after a fix, or discard them",
        metadata,
        warn_only=True,
    )
