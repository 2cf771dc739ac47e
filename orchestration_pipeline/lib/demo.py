"""Realistic demo event files, so a new user can watch the checks pass, and fail.

Each session runs a few tasks; each task runs commands, emits artifacts and metrics, records a
provider selection and a decision, and (for agent sessions) agent activity. With ``faults=True``
one extra file adds malformed lines, an error flood, a session missing its ``task_end`` and a
policy violation with a null rule.

The first session also runs :data:`EXAMPLE_TASK_ID` (``T-42``, a flaky integration suite), the
task the README's ``decisions execute`` example labels; it is never one of the deliberately
drifted tasks, so after ``run --demo N`` (any N) it exists in the Tasks DB.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestration_pipeline.lib.db import TASKS_TABLES, require_schema

EXAMPLE_TASK_ID = "T-42"
EXAMPLE_TASK_TITLE = "run the flaky integration suite"
BACKLOG_TASK_ID = "T-demo-backlog"  # the deliberate missing_in_projection drift


def _event(event_type: str, at: datetime, session: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "session_id": session,
        **fields,
    }


class _Clock:
    """A session's time: each event a random few seconds after the one before."""

    def __init__(self, rng: random.Random, start: datetime):
        self.rng = rng
        self.t = start

    def tick(self, lo: int = 1, hi: int = 30) -> datetime:
        self.t += timedelta(seconds=self.rng.randint(lo, hi))
        return self.t

    def ms_since(self, then: datetime) -> int:
        return int((self.t - then).total_seconds() * 1000)


def _session_events(rng: random.Random, session: str, start: datetime) -> Iterator[dict[str, Any]]:
    clock = _Clock(rng, start)
    source = rng.choice(["orchestrator", "pester-harness", "agent-runner"])
    yield from _provider_events(rng, clock, session, source)
    for n in range(rng.randint(1, 3)):
        yield from _task_events(rng, clock, session, source, n)
    if rng.random() < 0.3:
        yield _event(
            "policy_violation", clock.tick(), session, source=source, severity="warning",
            payload={"host": "build-01", "file": "C:/agent/run.ps1", "policy": "ExecutionPolicy",
                     "rule": "RemoteSigned"},
        )  # fmt: skip
    else:
        yield _event(
            "decision", clock.tick(), session, source=source, payload={"rationale": "no policy findings"}
        )


def _provider_events(
    rng: random.Random, clock: _Clock, session: str, source: str
) -> Iterator[dict[str, Any]]:
    """The provider selection: a decision and the provider_type and provider_cache_hit metrics."""
    provider = rng.choice(["Microsoft", "System"])
    yield _event(
        "decision",
        clock.tick(),
        session,
        source=source,
        stage="provider",
        payload={"rationale": f"selected {provider} provider", "provider": provider},
    )
    yield _event(
        "metric",
        clock.tick(),
        session,
        source=source,
        payload={"name": "provider_type", "value": 1 if provider == "Microsoft" else 2},
    )
    yield _event(
        "metric",
        clock.tick(),
        session,
        source=source,
        payload={"name": "provider_cache_hit", "value": rng.choice([0, 1])},
    )


def _task_events(
    rng: random.Random, clock: _Clock, session: str, source: str, n: int
) -> Iterator[dict[str, Any]]:
    """Task ``n`` of a session: its start, commands, artifact, metric, agent activity and end."""
    task = f"T-{session[-4:]}-{n}"
    on_task = {"task_id": task, "source": source}
    task_start = clock.tick()
    yield _event(
        "task_start",
        task_start,
        session,
        **on_task,
        status="started",
        payload={"title": f"populate stage {n}"},
    )
    for c in range(rng.randint(1, 3)):
        yield from _command_events(rng, clock, session, on_task, f"{task}-c{c}")
    body = f"{session}/{task}".encode()
    yield _event(
        "artifact_emit",
        clock.tick(),
        session,
        **on_task,
        payload={
            "path": f"artifacts/{task}/testResults.xml",
            "size_bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        },
    )
    yield _event(
        "metric",
        clock.tick(),
        session,
        **on_task,
        payload={"name": "rows_inserted", "value": rng.randint(0, 5000), "unit": "rows"},
    )
    if source == "agent-runner":
        agent = {
            "agent_type": rng.choice(["coder", "reviewer"]),
            "agent_name": f"agent-{n}",
            "task_description": f"work on {task}",
            "project_id": "demo",
        }
        for event_type, status, severity in (
            ("started", "started", "info"),
            ("completed", "completed", "success"),
        ):
            payload = (
                {**agent, "result": {"summary": f"finished {task}"}} if event_type == "completed" else agent
            )
            yield _event(
                f"agent.{event_type}", clock.tick(), session, **on_task, status=status, severity=severity,
                payload=payload,
            )  # fmt: skip
    ok = rng.random() > 0.15
    yield _event(
        "task_end",
        clock.tick(),
        session,
        **on_task,
        status="succeeded" if ok else "failed",
        severity="success" if ok else "error",
        duration_ms=clock.ms_since(task_start),
        payload={"success": ok, "duration_ms": clock.ms_since(task_start)},
    )


def _command_events(
    rng: random.Random, clock: _Clock, session: str, on_task: dict[str, str], cmd_id: str
) -> Iterator[dict[str, Any]]:
    cmd_start = clock.tick()
    yield _event(
        "command_start",
        cmd_start,
        session,
        **on_task,
        payload={"command_id": cmd_id, "command": "Invoke-Pester -CI"},
    )
    exit_code = 0 if rng.random() > 0.1 else 1
    yield _event(
        "command_end",
        clock.tick(),
        session,
        **on_task,
        payload={"command_id": cmd_id, "exit_code": exit_code, "duration_ms": clock.ms_since(cmd_start)},
    )


def _example_task_events(session: str, after: datetime) -> Iterator[dict[str, Any]]:
    """The README's example task: started and finished (successfully) in ``session``, after ``after``."""
    start, end = after + timedelta(seconds=5), after + timedelta(seconds=65)
    common = {"task_id": EXAMPLE_TASK_ID, "source": "orchestrator"}
    yield _event(
        "task_start", start, session, **common, status="started", payload={"title": EXAMPLE_TASK_TITLE}
    )
    yield _event(
        "task_end",
        end,
        session,
        **common,
        status="succeeded",
        severity="success",
        duration_ms=60_000,
        payload={"success": True, "duration_ms": 60_000},
    )


def _fault_lines(rng: random.Random, start: datetime) -> Iterator[str]:
    session = "sess-faults"
    t = start
    yield '{"event_type": "task_start", "occurred_at": '  # truncated JSON
    yield "this is not json at all"
    yield json.dumps({"event_type": "made_up_type", "occurred_at": t.isoformat()})
    yield json.dumps(
        {
            "event_type": "task_end",
            "occurred_at": t.isoformat(),
            "session_id": session,
            "payload": {"success": "yes", "duration_ms": 5},
        }
    )
    # an error flood: the same SQL error with different ids and durations
    for i in range(500):
        t += timedelta(milliseconds=200)
        yield json.dumps(
            _event(
                "error",
                t,
                session,
                source="orchestrator",
                stage="db_insert",
                severity="error",
                payload={
                    "message": f'insert into "events" failed: duplicate key value violates '
                    f'unique constraint "events_pkey" (id={1000 + i}) after {i % 7} ms',
                    "password": "hunter2",
                },
            )
        )
    # a task that never ends
    yield json.dumps(_event("task_start", t, session, task_id="T-never-ends", source="orchestrator"))
    # a policy violation without its rule
    yield json.dumps(
        _event(
            "policy_violation",
            t,
            session,
            source="host-scanner",
            payload={"host": "build-02", "file": "C:/agent/x.ps1", "policy": "Signing", "rule": None},
        )
    )


def _write_atomically(path: Path, lines: list[str]) -> None:
    """Write via ``path.tmp`` and rename; on failure (read-only, disk full) the temp file is removed."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate_demo(
    landing_dir: Path,
    *,
    sessions: int = 5,
    faults: bool = False,
    seed: int | None = None,
    now: datetime | None = None,
) -> list[Path]:
    """Write one JSON-lines file per session (plus a faults file); returns the paths written."""
    rng = random.Random(seed)
    landing_dir.mkdir(parents=True, exist_ok=True)
    now = now or datetime.now(UTC)
    # Session i starts i minutes after the first; the last one starts 2 hours (and a minute) ago,
    # so every event is in the past (well outside the grace windows) whatever the number of sessions.
    start = now - timedelta(hours=2, minutes=sessions)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    written = []
    for i in range(sessions):
        session = f"sess-{stamp}-{i:04d}"
        events = list(_session_events(rng, session, start + timedelta(minutes=i)))
        if i == 0:
            last = datetime.fromisoformat(events[-1]["occurred_at"].replace("Z", "+00:00"))
            events.extend(_example_task_events(session, last))
        lines = [json.dumps(e) for e in events]
        path = landing_dir / f"demo-{session}.jsonl"
        _write_atomically(path, lines)
        written.append(path)
    if faults:
        path = landing_dir / f"demo-faults-{stamp}.jsonl"
        _write_atomically(path, list(_fault_lines(rng, start)))
        written.append(path)
    return written


@dataclass(frozen=True)
class DemoTask:
    """One row for the Tasks DB."""

    task_id: str
    title: str
    status: str
    priority: int
    tags: list[str]
    updated_at: datetime


def demo_tasks(paths: list[Path], *, drift: bool = True, now: datetime | None = None) -> list[DemoTask]:
    """Tasks DB rows that agree with the task events in ``paths``, plus a little deliberate drift.

    With ``drift``, one task is left out of the Tasks DB (``missing_in_tasks``), one backlog task
    exists only there (``missing_in_projection``) and one finished task has the other outcome
    (``status_mismatch``), so the first reconciliation has something real to report. The example
    task (:data:`EXAMPLE_TASK_ID`) is never one of them.
    """
    seen: dict[str, dict[str, Any]] = {}
    for path in paths:
        for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                continue
            task_id = event.get("task_id") if isinstance(event, dict) else None
            if not task_id or event.get("event_type") not in ("task_start", "task_end"):
                continue
            task = seen.setdefault(task_id, {"title": task_id, "status": "in_progress", "at": None})
            at = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
            task["at"] = max(task["at"] or at, at)
            payload = event.get("payload") or {}
            if event["event_type"] == "task_start" and payload.get("title"):
                task["title"] = payload["title"]
            elif event["event_type"] == "task_end":
                task["status"] = "done" if payload.get("success") is True else "failed"
    rows = [
        DemoTask(task_id, info["title"], info["status"], 1 + i % 5, ["demo"], info["at"])
        for i, (task_id, info) in enumerate(sorted(seen.items()))
    ]
    drifting = [i for i, r in enumerate(rows) if r.task_id != EXAMPLE_TASK_ID]
    if drift and len(drifting) >= 3:
        finished = [i for i in drifting if rows[i].status in ("done", "failed")]
        if finished:
            i = finished[0]
            flipped = "failed" if rows[i].status == "done" else "done"
            rows[i] = DemoTask(**{**rows[i].__dict__, "status": flipped})
        rows.pop(drifting[-1])  # in the events, not in the Tasks DB
        backlog_at = (now or datetime.now(UTC)) - timedelta(hours=1)
        rows.append(
            DemoTask(BACKLOG_TASK_ID, "triage the backlog", "todo", 3, ["demo", "backlog"], backlog_at)
        )
    return rows


def require_tasks_schema(conn: Any) -> None:
    """Raise :class:`SchemaNotReady` unless the Tasks DB is migrated; check before writing demo files."""
    require_schema(conn, TASKS_TABLES, record_decision=False)


def seed_tasks(conn: Any, tasks: list[DemoTask]) -> int:
    """Upsert ``tasks`` into the Tasks DB (demo use only); returns the number written."""
    require_tasks_schema(conn)
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO tasks (task_id, title, status, priority, tags, updated_at)
                VALUES (%s, %s, %s, %s, %s::jsonb, %s)
                ON CONFLICT (task_id) DO UPDATE SET title = EXCLUDED.title, status = EXCLUDED.status,
                    priority = EXCLUDED.priority, tags = EXCLUDED.tags, updated_at = EXCLUDED.updated_at
                """,
                [(t.task_id, t.title, t.status, t.priority, json.dumps(t.tags), t.updated_at) for t in tasks],
            )
    return len(tasks)
