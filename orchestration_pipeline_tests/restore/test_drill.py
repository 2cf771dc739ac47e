"""A whole drill on realistic data: backup, checksum, restore into a scratch database, every check,
the verdict in restore_drills, the scratch database gone (or kept)."""

from __future__ import annotations

import json

import psycopg
import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.restore.drill import run_drill
from orchestration_pipeline.lib.restore.scratch import SCRATCH_PREFIX
from orchestration_pipeline_tests.restore._support import index_opener_for, options, seed

pytestmark = pytest.mark.db

CHECKS = [
    "dump_checksum",
    "restore",
    "migrations",
    "row_counts",
    "content_hashes",
    "audit_chain",
    "projection_drift",
    "health",
    "outbox_repopulated",
]


def scratch_databases(dsn: str) -> list[str]:
    """The scratch databases of the drills of this source database (the server may be shared)."""
    with connection(dsn) as conn:
        rows = conn.execute(
            """SELECT datname FROM pg_database WHERE datname LIKE %s
               AND datname IN (SELECT scratch_db FROM restore_drills) ORDER BY datname""",
            (SCRATCH_PREFIX + "%",),
        )
        return [r[0] for r in rows]


def test_a_drill_restores_verifies_reports_and_cleans_up(orch_dsn, tasks_dsn, tmp_path, server_mode):
    seeded = seed(orch_dsn, tasks_dsn, tmp_path)
    with index_opener_for(tmp_path / "qdrant") as opener:
        result = run_drill(options(orch_dsn, tasks_dsn, tmp_path, server_mode, open_index=opener))
    body = result.as_dict()
    assert result.state == "passed", json.dumps(body, indent=2, default=str)
    assert result.exit_code == 0 and body["pass"] is True
    assert [c["name"] for c in body["checks"]] == CHECKS
    assert all(c["passed"] for c in body["checks"])
    assert body["rto_s"] > 0 and body["rpo_s"] > 0
    assert {"leftovers", "backup", "checksum", "restore", "verify", "report", "cleanup"} <= set(
        body["phases"]
    )
    assert body["rto_s"] >= body["phases"]["restore"]
    counts = next(c for c in body["checks"] if c["name"] == "row_counts")
    assert counts["found"]["events"] == seeded["events"] > 0
    hashes = next(c for c in body["checks"] if c["name"] == "content_hashes")
    assert set(hashes["expected"]) == {
        "events",
        "decisions",
        "audit_ledger",
        "task_projection",
        "decision_executions",
    }
    outbox = next(c for c in body["checks"] if c["name"] == "outbox_repopulated")
    # the index is empty and the outbox rows are pending: every decision is in flight already
    with connection(orch_dsn) as conn:
        decisions = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    assert outbox["found"]["decisions"] == decisions >= 12 and outbox["found"]["remaining_drift"] == 0
    audit = next(c for c in body["checks"] if c["name"] == "audit_chain")
    assert audit["expected"]["checkpoint_head"].startswith(f"{seeded['checkpoint']}:")
    with connection(orch_dsn) as conn:
        row = conn.execute(
            "SELECT state, passed, rto_s, backup_id, scratch_dropped_at IS NOT NULL, verdict FROM restore_drills"
        ).fetchone()
        backups = conn.execute("SELECT count(*) FROM backups").fetchone()[0]
        metrics = dict(conn.execute("SELECT name, value FROM metrics WHERE name LIKE 'restore.%'").fetchall())
    assert row[:2] == ("passed", True) and row[2] == pytest.approx(result.rto_s)
    assert row[3] == result.backup_id and row[4] is True and row[5]["pass"] is True
    assert row[5]["phases"]["cleanup"] >= 0
    assert backups == 1 and metrics["restore.drill_passed"] == 1 and metrics["restore.rto_s"] > 0
    assert scratch_databases(orch_dsn) == []


def test_keep_leaves_the_scratch_database_queryable_until_discarded(
    orch_dsn, tasks_dsn, tmp_path, server_mode
):
    from orchestration_pipeline.lib.embedded import with_database
    from orchestration_pipeline.lib.restore.drill import discard_kept

    seed(orch_dsn, tasks_dsn, tmp_path, sessions=2)
    result = run_drill(options(orch_dsn, tasks_dsn, tmp_path, server_mode, keep=True))
    assert result.state == "passed" and result.kept and result.scratch_db in scratch_databases(orch_dsn)
    with connection(with_database(orch_dsn, result.scratch_db)) as copy:
        assert copy.execute("SELECT count(*) FROM events").fetchone()[0] > 0
    # a later drill leaves the kept database alone
    second = run_drill(options(orch_dsn, tasks_dsn, tmp_path, server_mode, from_backup=result.backup_id))
    assert second.state == "passed" and second.leftovers_removed == []
    assert scratch_databases(orch_dsn) == [result.scratch_db]
    removed = discard_kept(orch_dsn)
    assert [r["scratch_db"] for r in removed] == [result.scratch_db]
    assert scratch_databases(orch_dsn) == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(with_database(orch_dsn, result.scratch_db), connect_timeout=5).close()
