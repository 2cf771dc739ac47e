"""Verifications of ingested events: the logic behind the ``raw_events`` asset checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.ingestion.guard import guard_problems
from orchestration_pipeline.lib.verdict import Verdict
from orchestration_pipeline.lib.wording import plural

SAMPLE = 10


# Per path: the events its ledger entries accepted (every version of a file that grew, plus the
# lines replayed from its quarantine rows), against the events that name it as their source_file.
# An error line collapsed into its group adds no row (the ledger counts it as collapsed); the one
# event of a group per run is the accepted line of the file it came from. A purged day's rows count
# as stored when its archive was verified (archive_manifests). Artifacts and metrics are
# rows of other tables beside their event. Events the pipeline writes itself have no source_file.
ROWS_PER_FILE_SQL = """
WITH expected AS (
    SELECT path, sum(accepted)::bigint AS accepted, max(ingested_at) AS last_ingested_at
    FROM ingest_files GROUP BY path
), replayed AS (
    SELECT source_file AS path, count(*) AS accepted
    FROM quarantine WHERE replay_outcome = 'accepted' GROUP BY 1
), stored AS (
    -- rows still in events, plus those of purged days, as their verified archive counted them
    SELECT path, sum(n)::bigint AS n FROM (
        SELECT source_file AS path, count(*) AS n FROM events WHERE source_file IS NOT NULL GROUP BY 1
        UNION ALL
        SELECT f.key, sum(f.value::bigint)
        FROM archive_manifests m, jsonb_each_text(m.source_file_counts) f
        WHERE m.table_name = 'events' AND m.status = 'purged' GROUP BY 1
    ) s GROUP BY path
), compared AS (
    SELECT coalesce(e.path, r.path, s.path) AS path,
           coalesce(e.accepted, 0) + coalesce(r.accepted, 0) AS expected,
           coalesce(s.n, 0) AS stored, e.last_ingested_at
    FROM expected e
    FULL JOIN replayed r USING (path)
    FULL JOIN stored s ON s.path = coalesce(e.path, r.path)
)
SELECT path, expected, stored, last_ingested_at,
       count(*) FILTER (WHERE stored < expected) OVER () AS files_short,
       coalesce(sum(expected - stored) FILTER (WHERE stored < expected) OVER (), 0)::bigint AS rows_missing,
       count(*) FILTER (WHERE stored > expected) OVER () AS files_over,
       coalesce(sum(stored - expected) FILTER (WHERE stored > expected) OVER (), 0)::bigint AS rows_unaccounted
FROM compared
WHERE stored <> expected
ORDER BY stored < expected DESC, last_ingested_at DESC NULLS LAST, path
LIMIT %s
"""


def _unbalanced_entries(cur: psycopg.Cursor) -> list[dict[str, Any]]:
    """Ledger entries whose arithmetic is off, or whose quarantine count differs from its rows."""
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
    return [
        {
            "path": r["path"],
            "lines": r["lines"],
            "accounted": r["accepted"] + r["quarantined"] + r["duplicates"] + r["collapsed"],
            "quarantined": r["quarantined"],
            "quarantine_rows": r["quarantine_rows"],
        }
        for r in rows
    ]


def _rows_per_file(cur: psycopg.Cursor) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """Files with fewer events stored than accepted, files with more, and the totals of both."""
    rows = cur.execute(ROWS_PER_FILE_SQL, (SAMPLE,)).fetchall()

    def sample(r: dict[str, Any], difference: str, amount: int) -> dict[str, Any]:
        return {"path": r["path"], "accepted": r["expected"], "stored": r["stored"], difference: amount}

    short = [sample(r, "missing", r["expected"] - r["stored"]) for r in rows if r["stored"] < r["expected"]]
    over = [
        sample(r, "unaccounted", r["stored"] - r["expected"]) for r in rows if r["stored"] > r["expected"]
    ]
    first = rows[0] if rows else {}
    totals = {
        name: int(first.get(name, 0))
        for name in ("files_short", "rows_missing", "files_over", "rows_unaccounted")
    }
    return short, over, totals


def _paths(files: list[dict[str, Any]], total: int, count_key: str) -> str:
    """The first files named, with their count, and how many more there are."""
    named = ", ".join(f"{f['path']} ({f[count_key]})" for f in files[:3])
    return named + (f" and {plural(total - 3, 'more file')}" if total > 3 else "")


def events_accounted_for(conn: psycopg.Connection) -> Verdict:
    """Every ledger entry balances, its quarantine count matches the quarantine table, every file
    still has the events it accepted, and the guard that keeps them (migration 0015) is in place.

    A file's stored events are those naming it as their ``source_file``; they should number its
    entries' ``accepted`` plus its quarantined lines replayed as accepted. Fewer means rows were
    removed after ingestion (the files are named); more means rows were written outside ingestion.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        unbalanced = _unbalanced_entries(cur)
        short, over, mismatch = _rows_per_file(cur)
        totals = cur.execute(
            """SELECT count(*) AS files, coalesce(sum(lines), 0) AS lines, coalesce(sum(accepted), 0) AS accepted,
                      coalesce(sum(quarantined), 0) AS quarantined, coalesce(sum(duplicates), 0) AS duplicates,
                      coalesce(sum(collapsed), 0) AS collapsed FROM ingest_files"""
        ).fetchone()
    end_read(conn)
    problems = guard_problems(conn)
    totals = {k: int(v) for k, v in totals.items()}
    metadata = {
        "unbalanced": unbalanced,
        "files_missing_rows": short,
        "files_with_unaccounted_rows": over,
        **mismatch,
        "guard_problems": problems[:SAMPLE],
        **totals,
    }
    failures = []
    if mismatch["files_short"]:
        failures.append(
            f"{plural(mismatch['rows_missing'], 'event')} gone from "
            f"{plural(mismatch['files_short'], 'file')} after ingestion: "
            + _paths(short, mismatch["files_short"], "missing")
        )
    if unbalanced:
        n = len(unbalanced)
        failures.append(
            f"{n}{'+' if n == SAMPLE else ''} {'ledger entry does' if n == 1 else 'ledger entries do'} not balance"
        )
    if mismatch["files_over"]:
        failures.append(
            f"{plural(mismatch['rows_unaccounted'], 'event')} that no ledger entry accepted, in "
            + _paths(over, mismatch["files_over"], "unaccounted")
        )
    if problems:
        failures.append(
            f"guard: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    if failures:
        return Verdict(False, "; ".join(failures), metadata)
    return Verdict(
        True,
        f"all {plural(totals['files'], 'file')} balance and still hold the events they accepted; "
        "the guard is in place",
        metadata,
    )


# An agent run is keyed by its task and agent name: agent.started pairs with agent.completed or
# agent.error. A result that is absent, null, blank, {} or [] is no result.
_AGENT_KEY = "concat_ws(':', task_id, payload->>'agent_name')"
COVERAGE_SQL = f"""
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
           CASE WHEN event_type LIKE 'task_%%' THEN 'task'
                WHEN event_type LIKE 'agent.%%' THEN 'agent' ELSE 'command' END AS kind,
           CASE WHEN event_type LIKE 'task_%%' THEN coalesce(task_id, '')
                WHEN event_type LIKE 'agent.%%' THEN {_AGENT_KEY}
                ELSE coalesce(payload->>'command_id', coalesce(task_id, '') || ':' || coalesce(payload->>'command', ''))
           END AS pair_key,
           count(*) FILTER (WHERE event_type IN ('task_start', 'command_start', 'agent.started')) AS starts,
           count(*) FILTER (WHERE event_type IN ('task_end', 'command_end', 'agent.completed', 'agent.error')) AS ends
    FROM recent
    WHERE event_type IN ('task_start', 'task_end', 'command_start', 'command_end',
                         'agent.started', 'agent.completed', 'agent.error')
    GROUP BY 1, 2, 3
), no_result AS (
    SELECT session_id, jsonb_agg(DISTINCT {_AGENT_KEY}) AS keys
    FROM recent
    WHERE event_type = 'agent.completed'
      AND coalesce(nullif(btrim(payload->>'result'), ''), 'null') IN ('null', '{{}}', '[]')
    GROUP BY 1
)
SELECT s.session_id, s.last_event,
       s.last_event > now() - %(grace)s AS in_grace,
       coalesce(jsonb_agg(jsonb_build_object('kind', p.kind, 'key', p.pair_key, 'starts', p.starts, 'ends', p.ends))
                FILTER (WHERE p.starts > p.ends), '[]') AS missing_end,
       coalesce(jsonb_agg(jsonb_build_object('kind', p.kind, 'key', p.pair_key, 'starts', p.starts, 'ends', p.ends))
                FILTER (WHERE p.ends > p.starts), '[]') AS orphan_end,
       coalesce(n.keys, '[]') AS no_result
FROM sessions s LEFT JOIN pairs p USING (session_id) LEFT JOIN no_result n USING (session_id)
GROUP BY s.session_id, s.last_event, n.keys
ORDER BY s.session_id
"""
# What a session lacks, by the kind of pair.
_END_OF = {"task": "task_end", "command": "command_end", "agent": "agent.completed or agent.error"}
_START_OF = {"task": "task_start", "command": "command_start", "agent": "agent.started"}


def _session_report(row: dict[str, Any]) -> dict[str, Any] | None:
    """A judged session's code and what it lacks; None when it lacks nothing."""
    if not (row["missing_end"] or row["orphan_end"] or row["no_result"]):
        return None
    if row["missing_end"]:
        status = "FAIL_CORE_MISSING"
    else:
        status = "FAIL_NO_RESULT" if row["no_result"] else "GAPS"
    missing = [f"{_END_OF[m['kind']]} for {m['key'] or '(no id)'}" for m in row["missing_end"]]
    missing += [f"result of agent.completed for {key or '(no id)'}" for key in row["no_result"]]
    missing += [f"{_START_OF[m['kind']]} for {m['key'] or '(no id)'}" for m in row["orphan_end"]]
    return {"session_id": row["session_id"], "status": status, "missing": missing[:SAMPLE]}


def core_event_coverage(
    conn: psycopg.Connection,
    *,
    grace: timedelta = timedelta(minutes=15),
    lookback: timedelta = timedelta(days=7),
    max_sessions_with_gaps: int = 2,
) -> Verdict:
    """Per session: every task_start/command_start has its end, every agent.started its
    agent.completed or agent.error (else FAIL_CORE_MISSING), and every agent.completed carries a
    result (else FAIL_NO_RESULT).

    Sessions whose last event is within ``grace`` are not judged yet. An end without a start is
    a gap too. The check fails on any FAIL_CORE_MISSING or FAIL_NO_RESULT, or when more than
    ``max_sessions_with_gaps`` sessions have gaps.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(COVERAGE_SQL, {"grace": grace, "lookback": lookback}).fetchall()
    end_read(conn)
    judged = [r for r in rows if not r["in_grace"]]
    report = [entry for r in judged if (entry := _session_report(r)) is not None]
    core_missing = sum(entry["status"] == "FAIL_CORE_MISSING" for entry in report)
    no_result = sum(bool(r["no_result"]) for r in judged)
    with_gaps = len(report)
    failing = core_missing or no_result or with_gaps > max_sessions_with_gaps
    overall = "FAIL" if failing else ("GAPS" if with_gaps else "PASS")
    coverage = {
        "overall_status": overall,
        "sessions_judged": len(judged),
        "sessions_in_grace": len(rows) - len(judged),
        "sessions_with_gaps": with_gaps,
        "fail_core_missing": core_missing,
        "fail_no_result": no_result,
        "sessions": report[:SAMPLE],
    }
    passed = overall != "FAIL"
    if passed:
        description = (
            f"{plural(len(judged), 'session')} judged, {with_gaps} with gaps, none missing core events"
        )
    else:
        codes = [(core_missing, "FAIL_CORE_MISSING"), (no_result, "FAIL_NO_RESULT")]
        parts = [f"{plural(n, 'session')} {code}" for n, code in codes if n]
        parts.append(f"{plural(with_gaps, 'session') if not parts else with_gaps} with gaps")
        description = f"{', '.join(parts)} (limit {max_sessions_with_gaps})"
    return Verdict(
        passed,
        description,
        {
            "coverage_report": coverage,
            "sessions_with_gaps": with_gaps,
            "fail_core_missing": core_missing,
            "fail_no_result": no_result,
        },
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


# --- no_emitter_drops -----------------------------------------------------------------------

# The emit SDK's drop notice: a decision in stage "emit" whose payload counts the events its
# buffer dropped (dropped_events) and says why (reason). See orchestration_pipeline.emit.
EMITTER_DROPS_SQL = """
WITH notices AS (
    SELECT coalesce(source, '(unknown source)') AS producer, session_id, occurred_at,
           payload->>'reason' AS reason,
           CASE WHEN jsonb_typeof(payload->'dropped_events') = 'number'
                THEN (payload->>'dropped_events')::numeric END AS dropped
    FROM events
    WHERE event_type = 'decision' AND stage = 'emit' AND occurred_at >= now() - %(lookback)s
)
SELECT producer, sum(dropped)::bigint AS dropped, count(*) AS notices,
       max(occurred_at) AS last_notice_at,
       (array_agg(reason ORDER BY occurred_at DESC))[1] AS last_reason,
       (array_agg(DISTINCT session_id) FILTER (WHERE session_id IS NOT NULL))[1:5] AS sample_sessions,
       sum(sum(dropped)) OVER ()::bigint AS total_dropped,
       count(*) OVER () AS total_producers
FROM notices
WHERE dropped > 0
GROUP BY producer
ORDER BY dropped DESC, producer
LIMIT %(sample)s
"""


def no_emitter_drops(conn: psycopg.Connection, *, lookback: timedelta = timedelta(hours=24)) -> Verdict:
    """No producer reported events dropped by its emitter (the SDK's drop notice) within ``lookback``.

    Fails naming each producer (the events' ``source``) and how many events it dropped: those
    events are lost, and the notice is the only trace of them.
    """
    if lookback <= timedelta(0):
        raise ValueError(
            f"lookback must be positive, got {lookback} — set emitter_drops_lookback_hours above 0"
        )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(EMITTER_DROPS_SQL, {"lookback": lookback, "sample": SAMPLE}).fetchall()
    end_read(conn)
    window = f"the last {lookback.total_seconds() / 3600:g} h"
    if not rows:
        return Verdict(True, f"no producer reported dropped events in {window}", {"producers": []})
    producers = [
        {
            "producer": r["producer"],
            "dropped_events": int(r["dropped"]),
            "notices": int(r["notices"]),
            "last_notice_at": r["last_notice_at"].isoformat(),
            "last_reason": r["last_reason"],
            "sample_sessions": r["sample_sessions"] or [],
        }
        for r in rows
    ]
    named = ", ".join(f"{p['producer']} ({plural(p['dropped_events'], 'event')})" for p in producers)
    total, everyone = int(rows[0]["total_dropped"]), int(rows[0]["total_producers"])
    if everyone > len(producers):
        named += f" and {plural(everyone - len(producers), 'other producer')}"
    return Verdict(
        False,
        f"{plural(total, 'event')} dropped by emitters in {window}: {named}",
        {"producers": producers, "dropped_events": total, "producers_with_drops": everyone},
    )
