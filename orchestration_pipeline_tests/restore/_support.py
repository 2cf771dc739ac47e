"""Shared pieces of the restore tests: realistic data in both databases, and drill options."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from psycopg import sql

from orchestration_pipeline.lib.audit.chain import checkpoint_ledger
from orchestration_pipeline.lib.audit.ledger import record_audit
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.demo import demo_tasks, generate_demo, seed_tasks
from orchestration_pipeline.lib.index.decisions import put_decisions
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline.lib.projection.projector import project_events, projection_lag
from orchestration_pipeline.lib.restore.drill import DrillOptions
from orchestration_pipeline.lib.restore.tools import EMBEDDED, PATH
from orchestration_pipeline_tests.index._support import RATIONALES, edge_index


@pytest.fixture(autouse=True)
def scratch_janitor(databases):
    """After the test, drop any scratch database left of a drill of this test's databases (a failed
    assertion can stop a test before it discards what it kept); the server may be shared."""
    yield
    names = [f"scratch copy of {name}," for name in databases.created]
    with connection(databases.admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            """SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database
               WHERE datname LIKE 'orch\\_drill\\_%'"""
        ).fetchall()
        for name, comment in rows:
            if comment and any(n in comment for n in names):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def tool_origin(server_mode: bool) -> str:
    """The binaries that match the test server: the PATH's for ORCH_TEST_DATABASE_URL (the machine's
    server), the wheel's for the embedded one."""
    return PATH if server_mode else EMBEDDED


def seed(orch_dsn: str, tasks_dsn: str, work: Path, *, sessions: int = 4, decisions: int = 12) -> dict:
    """Demo events ingested and projected, the Tasks DB agreeing with them, audited decisions, an
    audit entry of each kind of writer, and a checkpoint sealing the ledger."""
    paths = generate_demo(work / "landing", sessions=sessions, seed=7)
    with connection(tasks_dsn) as tasks:
        seed_tasks(tasks, demo_tasks(paths, drift=False))
    with connection(orch_dsn) as conn:
        summary = Ingestor(conn, parse_workers=0).ingest_paths(paths)
        with connection(tasks_dsn) as tasks:
            project_fully(conn, tasks)
        put_decisions(
            conn,
            [{"decision_id": f"dec-{i}", "rationale": RATIONALES[i % len(RATIONALES)], "org_id": "acme",
              "policy_id": "deploy", "status": "approved"} for i in range(decisions)],
        )  # fmt: skip
        record_audit(
            conn, actor="oncall:ana", request_id="INC-7", operation="update", entity_type="policy",
            entity_id="deploy", before={"enabled": False}, after={"enabled": True}, reason="rollout",
        )  # fmt: skip
        conn.commit()
        run = checkpoint_ledger(conn)
    return {"events": summary.counts.accepted, "checkpoint": run.checkpoint_seq}


def project_fully(conn, tasks, timeout_s: float = 60.0) -> None:
    """Project until no task event waits: on a shared server another session's open transaction
    holds back the projector's horizon for a while."""
    deadline = time.monotonic() + timeout_s
    project_events(conn, tasks)
    while projection_lag(conn):
        conn.rollback()
        assert time.monotonic() < deadline, (
            "the projection did not catch up (a long transaction on the server?)"
        )
        time.sleep(0.2)
        project_events(conn, tasks)
    conn.rollback()


@contextmanager
def index_opener_for(path: Path) -> Iterator:
    """An opener of a real qdrant-edge shard in this process (no host), like IndexRuntime.open."""

    @contextmanager
    def open_index():
        index = edge_index(path)
        try:
            yield index, None
        finally:
            index.close()

    yield open_index


def options(orch_dsn: str, tasks_dsn: str, tmp_path: Path, server_mode: bool, **overrides) -> DrillOptions:
    base = DrillOptions(
        source_dsn=orch_dsn,
        tasks_dsn=tasks_dsn,
        backup_dir=tmp_path / "backups",
        tool_origin=tool_origin(server_mode),
        jobs=2,
        created_by="test",
    )
    return replace(base, **overrides)
