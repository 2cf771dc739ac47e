"""Verifications of ingested events: the logic behind the ``raw_events`` asset checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.verdict import Verdict
from orchestration_pipeline.lib.wording import plural

SAMPLE = 10


def events_accounted_for(conn: psycopg.Connection) -> Verdict:
    """Every ledger entry balances, and its quarantine count matches the quarantine table."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            SELECT f.path, f.file_sha256, f.lines, f.accepted, f.quarantined, f.duplicates, f.collapsed,
                   coalesce(q.n, 0) AS quarantine_rows
            FROM ingest_files f
            LEFT JOIN (SELECT file_sha256, count(*) AS n FROM quarantine GROUP BY 1) q USING (file_sha256)
            WHERE f.lines <> f.accepted + f.quarantined + f.duplicates + f.collapsed
               OR f.quarantined <> coalesce(q.n, 0)
            ORDER BY f.ingested_at DESC
            LIMIT %s
            """,
            (SAMPLE,),
        ).fetchall()
        totals = cur.execute(
            """SELECT count(*) AS files, coalesce(sum(lines), 0) AS lines, coalesce(sum(accepted), 0) AS accepted,
                      coalesce(sum(quarantined), 0) AS quarantined, coalesce(sum(duplicates), 0) AS duplicates,
                      coalesce(sum(collapsed), 0) AS collapsed FROM ingest_files"""
        ).fetchone()
    end_read(conn)
    unbalanced = [
        {
            "path": r["path"],
            "lines": r["lines"],
            "accounted": r["accepted"] + r["quarantined"] + r["duplicates"] + r["collapsed"],
            "quarantined": r["quarantined"],
            "quarantine_rows": r["quarantine_rows"],
        }
        for r in rows
    ]
    totals = {k: int(v) for k, v in totals.items()}
    if unbalanced:
        return Verdict(
            False, f"{len(unbalanced)}+ ledger entries do not balance", {"unbalanced": unbalanced, **totals}
        )
    return Verdict(
        True,
        f"all {plural(totals['files'], 'file')} balance: lines = accepted + quarantined + duplicates + collapsed",
        totals,
    )


COVERAGE_SQL = """
WITH active AS (
    SELECT DISTINCT session_id FROM events
    WHERE session_id IS NOT NULL AND occurred_at >= now() - %(lookback)s
), recent AS (
    -- all of an active session's events, so a pair that straddles the lookback is not a gap
    SELECT e.session_id, e.event_type, e.task_id, e.payload, e.occurred_at
    FROM events e JOIN active a USING (session_id)
), sessions AS (
    SELECT session_id, max(occurred_at) AS last_event FROM recent GROUP BY 1
), pairs AS (
    SELECT session_id,
           CASE WHEN event_type LIKE 'task_%%' THEN 'task' ELSE 'command' END AS kind,
           CASE WHEN event_type LIKE 'task_%%' THEN coalesce(task_id, '')
                ELSE coalesce(payload->>'command_id', coalesce(task_id, '') || ':' || coalesce(payload->>'command', ''))
           END AS pair_key,
           count(*) FILTER (WHERE event_type IN ('task_start', 'command_start')) AS starts,
           count(*) FILTER (WHERE event_type IN ('task_end', 'command_end')) AS ends
    FROM recent
    WHERE event_type IN ('task_start', 'task_end', 'command_start', 'command_end')
    GROUP BY 1, 2, 3
)
SELECT s.session_id, s.last_event,
       s.last_event > now() - %(grace)s AS in_grace,
       coalesce(jsonb_agg(jsonb_build_object('kind', p.kind, 'key', p.pair_key, 'starts', p.starts, 'ends', p.ends))
                FILTER (WHERE p.starts > p.ends), '[]') AS missing_end,
       coalesce(jsonb_agg(jsonb_build_object('kind', p.kind, 'key', p.pair_key, 'starts', p.starts, 'ends', p.ends))
                FILTER (WHERE p.ends > p.starts), '[]') AS orphan_end
FROM sessions s LEFT JOIN pairs p USING (session_id)
GROUP BY s.session_id, s.last_event
ORDER BY s.session_id
"""


def core_event_coverage(
    conn: psycopg.Connection,
    *,
    grace: timedelta = timedelta(minutes=15),
    lookback: timedelta = timedelta(days=7),
    max_sessions_with_gaps: int = 2,
) -> Verdict:
    """Per session: every task_start/command_start has its end (else FAIL_CORE_MISSING).

    Sessions whose last event is within ``grace`` are not judged yet. An end without a start is
    a gap too. The check fails on any FAIL_CORE_MISSING, or when more than
    ``max_sessions_with_gaps`` sessions have gaps.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(COVERAGE_SQL, {"grace": grace, "lookback": lookback}).fetchall()
    end_read(conn)
    judged = [r for r in rows if not r["in_grace"]]
    report: list[dict[str, Any]] = []
    core_missing = 0
    for r in judged:
        if not r["missing_end"] and not r["orphan_end"]:
            continue
        status = "FAIL_CORE_MISSING" if r["missing_end"] else "GAPS"
        core_missing += status == "FAIL_CORE_MISSING"
        missing = [f"{m['kind']}_end for {m['key'] or '(no id)'}" for m in r["missing_end"]]
        missing += [f"{m['kind']}_start for {m['key'] or '(no id)'}" for m in r["orphan_end"]]
        report.append({"session_id": r["session_id"], "status": status, "missing": missing[:SAMPLE]})
    with_gaps = len(report)
    overall = (
        "FAIL" if core_missing or with_gaps > max_sessions_with_gaps else ("GAPS" if with_gaps else "PASS")
    )
    coverage = {
        "overall_status": overall,
        "sessions_judged": len(judged),
        "sessions_in_grace": len(rows) - len(judged),
        "sessions_with_gaps": with_gaps,
        "fail_core_missing": core_missing,
        "sessions": report[:SAMPLE],
    }
    passed = overall != "FAIL"
    description = (
        f"{plural(core_missing, 'session')} FAIL_CORE_MISSING, {with_gaps} with gaps (limit {max_sessions_with_gaps})"
        if not passed
        else f"{plural(len(judged), 'session')} judged, {with_gaps} with gaps, none missing core events"
    )
    return Verdict(
        passed,
        description,
        {"coverage_report": coverage, "sessions_with_gaps": with_gaps, "fail_core_missing": core_missing},
    )


def policy_violations_complete(conn: psycopg.Connection) -> Verdict:
    """No policy_violation event lacks file, policy or rule; names the producers that left them out."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            WITH violations AS (
                SELECT coalesce(source, '(unknown source)') AS producer, event_id, occurred_at,
                       nullif(btrim(payload->>'file'), '') IS NULL AS no_file,
                       nullif(btrim(payload->>'policy'), '') IS NULL AS no_policy,
                       nullif(btrim(payload->>'rule'), '') IS NULL AS no_rule
                FROM events WHERE event_type = 'policy_violation'
            )
            SELECT producer, count(*) AS incomplete,
                   bool_or(no_file) AS no_file, bool_or(no_policy) AS no_policy, bool_or(no_rule) AS no_rule,
                   (array_agg(event_id::text ORDER BY occurred_at DESC))[1:5] AS sample_event_ids
            FROM violations WHERE no_file OR no_policy OR no_rule
            GROUP BY producer ORDER BY incomplete DESC LIMIT %s
            """,
            (SAMPLE,),
        ).fetchall()
        total = cur.execute(
            "SELECT count(*) AS n FROM events WHERE event_type = 'policy_violation'"
        ).fetchone()["n"]
    end_read(conn)
    if rows:
        producers = [
            {
                "producer": r["producer"],
                "incomplete": r["incomplete"],
                "missing_fields": [f for f in ("file", "policy", "rule") if r[f"no_{f}"]],
                "sample_event_ids": r["sample_event_ids"],
            }
            for r in rows
        ]
        names = ", ".join(p["producer"] for p in producers)
        return Verdict(
            False,
            f"policy violations with null file/policy/rule from: {names}",
            {"producers": producers, "policy_violations": total},
        )
    return Verdict(
        True, f"all {total} policy violations name file, policy and rule", {"policy_violations": total}
    )


def provider_metric_present(conn: psycopg.Connection, *, lookback: timedelta = timedelta(days=7)) -> Verdict:
    """Each session that selected a provider has provider_type (1 or 2) and provider_cache_hit metrics."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            WITH selected AS (
                SELECT DISTINCT session_id FROM events
                WHERE session_id IS NOT NULL AND occurred_at >= now() - %(lookback)s
                  AND (payload ? 'provider'
                       OR (event_type = 'metric' AND payload->>'name' IN ('provider_type', 'provider_cache_hit')))
            ), have AS (
                SELECT session_id,
                       bool_or(name = 'provider_type' AND value IN (1, 2)) AS has_type,
                       bool_or(name = 'provider_type' AND value NOT IN (1, 2)) AS bad_type,
                       bool_or(name = 'provider_cache_hit') AS has_cache_hit
                FROM metrics WHERE session_id IN (SELECT session_id FROM selected)
                GROUP BY 1
            )
            SELECT s.session_id, coalesce(h.has_type, false) AS has_type, coalesce(h.bad_type, false) AS bad_type,
                   coalesce(h.has_cache_hit, false) AS has_cache_hit
            FROM selected s LEFT JOIN have h USING (session_id)
            """,
            {"lookback": lookback},
        ).fetchall()
    end_read(conn)
    lacking = []
    for r in rows:
        missing = []
        if not r["has_type"]:
            missing.append("provider_type (1=Microsoft, 2=System)")
        if r["bad_type"]:
            missing.append("provider_type has a value other than 1 or 2")
        if not r["has_cache_hit"]:
            missing.append("provider_cache_hit")
        if missing:
            lacking.append({"session_id": r["session_id"], "missing": missing})
    meta = {"sessions_with_provider": len(rows), "sessions_lacking": len(lacking), "sample": lacking[:SAMPLE]}
    if lacking:
        return Verdict(
            False,
            f"{len(lacking)} of {plural(len(rows), 'session')} lack provider metrics",
            meta,
            warn_only=True,
        )
    return Verdict(
        True, f"all {plural(len(rows), 'session')} that selected a provider have both metrics", meta
    )
