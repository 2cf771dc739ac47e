"""The Python activity API the HTTP API serves: session and task filters, totals, DataFrames for
notebooks, stream positions and reads in commit order, and live filtering matching the query."""

from __future__ import annotations

import time
import uuid

import pandas as pd
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestration_pipeline.lib.activity import (
    ActivityFilter,
    StreamPosition,
    activity_stats,
    count_activity,
    match_events,
    query_activity,
    read_stream,
    stream_position,
)
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline_tests.api._support import agent_events, ingest
from orchestration_pipeline_tests.conftest import make_event

DB = pytest.mark.db


def _mixed_events() -> list[dict]:
    return [
        *agent_events(
            3, project="p1", session_id="s-a", task_id="T-1", severity="info", status="in_progress"
        ),
        *agent_events(
            2, project="p2", agent_type="reviewer", session_id="s-b", task_id="T-2", severity="error"
        ),
        make_event(
            "task_end", minutes_ago=3, session_id="s-b", task_id="T-2", status="FAILURE", severity="ERR"
        ),
        make_event("decision", minutes_ago=2, session_id="s-a"),
    ]


def _read_until(conn, position: StreamPosition, count: int, *, limit: int = 500, timeout: float = 30):
    """Stream pages from ``position`` until ``count`` events are read (a transaction elsewhere on
    the server may hold the horizon back a moment); returns the rows and the pages' ends."""
    rows, ends = [], []
    deadline = time.monotonic() + timeout
    while len(rows) < count:
        assert time.monotonic() < deadline, f"read {len(rows)} of {count} events"
        batch = read_stream(conn, position, limit=limit)
        assert position < batch.position or not batch.rows
        rows += batch.rows
        position = batch.position
        ends.append(batch.full)
        if not batch.rows:
            time.sleep(0.05)
    return rows, position


@DB
def test_session_and_task_filters_and_the_total(orch_dsn, tmp_path):
    ingest(orch_dsn, tmp_path / "a.jsonl", _mixed_events())
    with connection(orch_dsn) as conn:
        by_session = query_activity(conn, ActivityFilter(session_id="s-a"))
        by_task = query_activity(conn, ActivityFilter(task_id="T-2"))
        both = query_activity(conn, ActivityFilter(session_id="s-b", task_id="T-2", event_type="task_end"))
        paged = ActivityFilter(session_id="s-b", limit=1, offset=1)
        assert len(query_activity(conn, paged)) == 1
        assert count_activity(conn, paged) == 3  # the total ignores limit and offset
        assert count_activity(conn, ActivityFilter(), cap=100) == 7
        assert count_activity(conn, ActivityFilter(), cap=4) == 5  # stops counting: "more than 4"
    assert len(by_session) == 4 and {r["session_id"] for r in by_session} == {"s-a"}
    assert len(by_task) == 3 and {r["task_id"] for r in by_task} == {"T-2"}
    assert [r["status"] for r in both] == ["FAILURE"]


@DB
def test_rows_and_stats_convert_to_dataframes(orch_dsn, tmp_path):
    ingest(orch_dsn, tmp_path / "a.jsonl", _mixed_events())
    with connection(orch_dsn) as conn:
        rows = query_activity(conn, ActivityFilter(limit=100))
        stats = activity_stats(conn)
        empty = query_activity(conn, ActivityFilter(project_id="nobody"))
    frame = rows.to_dataframe()
    assert len(frame) == 7 and list(frame.columns[:3]) == ["event_id", "event_type", "occurred_at"]
    assert isinstance(frame["occurred_at"].dtype, pd.DatetimeTZDtype)
    assert frame.set_index("occurred_at").resample("1min").size().sum() == 7  # a plot in one line
    wide = rows.to_dataframe(expand_payload=True)
    assert "payload" not in wide.columns
    assert sorted(wide["payload.agent_type"].dropna().unique()) == ["coder", "reviewer"]
    assert empty == [] and list(empty.to_dataframe().columns) == list(frame.columns)

    agents = stats.to_dataframe("agents")
    assert set(agents["agent_type"]) == {"coder", "reviewer"} and "success_rate" in agents.columns
    severities = stats.to_dataframe("by_severity")
    assert dict(zip(severities["severity"], severities["count"], strict=True)) == stats["by_severity"]
    assert isinstance(stats, dict) and stats["total"] == 7  # still the dict it was
    with pytest.raises(ValueError, match="use one of agents"):
        stats.to_dataframe("nope")


def test_stream_positions_read_back_and_refuse_garbage():
    event = uuid.uuid4()
    assert StreamPosition.parse(f"42-{event}") == StreamPosition(42, event)
    assert StreamPosition.parse("42") == StreamPosition(42) and str(StreamPosition(42)) == "42"
    assert StreamPosition(42) < StreamPosition(42, event) < StreamPosition(43)
    for bad in ("", "x", "-1", "42-", "42-nope", f"{'9' * 21}", f"42-{event}-1"):
        with pytest.raises(ValueError, match="not a stream position"):
            StreamPosition.parse(bad)


@DB
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 2**40), st.uuids()), min_size=2, max_size=30, unique=True))
def test_positions_sort_as_postgresql_sorts_xid8_and_uuid(orch_dsn, pairs):
    with psycopg.connect(orch_dsn) as conn:
        ordered = conn.execute(
            "SELECT x::text, u FROM unnest(%s::text[], %s::uuid[]) AS t(x, u) ORDER BY x::xid8, u",
            ([str(x) for x, _ in pairs], [u for _, u in pairs]),
        ).fetchall()
    assert [StreamPosition(int(x), u) for x, u in ordered] == sorted(StreamPosition(x, u) for x, u in pairs)


@DB
def test_reading_the_stream_in_pages_returns_every_event_once_in_commit_order(orch_dsn, tmp_path):
    with connection(orch_dsn) as conn:
        start = stream_position(conn)
    files = [ingest(orch_dsn, tmp_path / f"{i}.jsonl", agent_events(n)) for i, n in enumerate((9, 1, 15))]
    with connection(orch_dsn) as conn:
        seen, position = _read_until(conn, start, 25, limit=7)
        assert read_stream(conn, position).rows == []
    ids = [str(r["event_id"]) for r in seen]
    assert len(ids) == 25 and len(set(ids)) == 25
    # one file is one transaction: its events come together, the files in commit order
    assert [set(ids[:9]), set(ids[9:10]), set(ids[10:])] == [set(f) for f in files]
    positions = [StreamPosition.parse(r["position"]) for r in seen]
    assert positions == sorted(positions)


FILTERS = st.builds(
    ActivityFilter,
    project_id=st.sampled_from([None, "p1", "p2"]),
    agent_type=st.sampled_from([None, "coder", "reviewer"]),
    session_id=st.sampled_from([None, "s-a", "s-b"]),
    severity_meaning=st.sampled_from([None, "error", "info"]),
    status_meaning=st.sampled_from([None, "failed", "running"]),
    event_type=st.sampled_from([None, "agent.progress", "task_end"]),
)


@DB
def test_live_matching_selects_exactly_what_the_query_selects(orch_dsn, tmp_path):
    ingest(orch_dsn, tmp_path / "a.jsonl", _mixed_events())
    with connection(orch_dsn) as conn:
        everything, _ = _read_until(conn, StreamPosition(1), 7)
        assert len(everything) == 7

        @settings(max_examples=40, deadline=None)
        @given(FILTERS)
        def check(flt: ActivityFilter) -> None:
            expected = {r["event_id"] for r in query_activity(conn, flt)}
            assert match_events(conn, flt, everything) == expected

        check()
