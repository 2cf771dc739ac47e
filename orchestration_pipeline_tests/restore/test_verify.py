"""Every check of the copy, made to fail by damaging the restored copy between the restore and the
verification (or, for the checks reading outside the copy, the index and the server)."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.index.embedders import HashingEmbedder
from orchestration_pipeline.lib.index.location import IndexUnavailable
from orchestration_pipeline.lib.index.sync import sync_outbox
from orchestration_pipeline.lib.restore.drill import run_drill
from orchestration_pipeline.lib.restore.verify import check_health
from orchestration_pipeline_tests.index._support import edge_index
from orchestration_pipeline_tests.restore._support import index_opener_for, options, seed

pytestmark = pytest.mark.db


def damage(*statements: str):
    """A hook running ``statements`` on the restored copy, past its guard triggers (as a superuser
    with replication role: how a corrupted or tampered copy would look)."""

    def hook(scratch_dsn: str) -> None:
        with connection(scratch_dsn) as copy:
            copy.execute("SET session_replication_role = replica")
            for statement in statements:
                copy.execute(statement)
            copy.commit()

    return hook


@pytest.fixture
def seeded(orch_dsn, tasks_dsn, tmp_path):
    return seed(orch_dsn, tasks_dsn, tmp_path, sessions=3)


def drill(orch_dsn, tasks_dsn, tmp_path, server_mode, **overrides):
    result = run_drill(options(orch_dsn, tasks_dsn, tmp_path, server_mode, **overrides))
    return result, {c.name: c for c in result.checks}


def test_migrations_and_health_fail_when_the_copy_records_another_checksum(
    seeded, orch_dsn, tasks_dsn, tmp_path, server_mode
):
    hook = damage("UPDATE schema_migrations SET sha256 = repeat('0', 64) WHERE version = 1")
    result, checks = drill(orch_dsn, tasks_dsn, tmp_path, server_mode, before_verify=hook)
    assert result.state == "failed" and result.exit_code == 1
    assert not checks["migrations"].passed and "versions 1" in checks["migrations"].detail
    assert checks["migrations"].found["differ"][0]["found"]["sha256"] == "0" * 64
    assert not checks["health"].passed and "0001_core.sql" in checks["health"].detail
    assert checks["row_counts"].passed and checks["content_hashes"].passed
    assert result.summary().startswith("drill FAILED") and "migrations:" in result.summary()


def test_row_counts_fail_naming_the_table_that_gained_a_row(
    seeded, orch_dsn, tasks_dsn, tmp_path, server_mode
):
    hook = damage("INSERT INTO metrics (name, value) VALUES ('forged', 1)")
    result, checks = drill(orch_dsn, tasks_dsn, tmp_path, server_mode, before_verify=hook)
    assert result.state == "failed"
    detail = checks["row_counts"].detail
    assert not checks["row_counts"].passed and "1 table: metrics (expected" in detail
    assert checks["row_counts"].found["metrics"] == checks["row_counts"].expected["metrics"] + 1
    assert checks["content_hashes"].passed  # metrics are counted, not hashed


def test_content_hashes_fail_naming_the_table_with_an_altered_row(
    seeded, orch_dsn, tasks_dsn, tmp_path, server_mode
):
    hook = damage("UPDATE decisions SET rationale = rationale || ' (edited)' WHERE decision_id = 'dec-0'")
    result, checks = drill(orch_dsn, tasks_dsn, tmp_path, server_mode, before_verify=hook)
    assert result.state == "failed" and checks["row_counts"].passed
    assert not checks["content_hashes"].passed and checks["content_hashes"].detail.endswith(
        "1 table: decisions"
    )
    assert checks["content_hashes"].expected["decisions"] != checks["content_hashes"].found["decisions"]


def test_audit_chain_fails_on_a_forged_entry(seeded, orch_dsn, tasks_dsn, tmp_path, server_mode):
    hook = damage(
        "UPDATE audit_ledger SET reason = 'forged' WHERE audit_id = (SELECT max(audit_id) FROM audit_ledger)"
    )
    result, checks = drill(orch_dsn, tasks_dsn, tmp_path, server_mode, before_verify=hook)
    assert result.state == "failed"
    assert not checks["audit_chain"].passed and "changed after it was written" in checks["audit_chain"].detail
    assert checks["audit_chain"].found["broken_chains"] >= 1


def test_audit_chain_fails_when_the_manifests_checkpoint_is_not_in_the_copy(
    seeded, orch_dsn, tasks_dsn, tmp_path, server_mode
):
    hook = damage(
        "DELETE FROM audit_checkpoints WHERE checkpoint_seq = (SELECT max(checkpoint_seq) FROM audit_checkpoints)"
    )
    result, checks = drill(orch_dsn, tasks_dsn, tmp_path, server_mode, before_verify=hook)
    assert not checks["audit_chain"].passed and checks["audit_chain"].expected["checkpoint_head"]
    assert "kept outside the database is not in the checkpoint chain" in checks["audit_chain"].detail


def test_projection_drift_fails_when_the_copy_disagrees_with_the_tasks_db(
    seeded, orch_dsn, tasks_dsn, tmp_path, server_mode
):
    hook = damage(
        "UPDATE task_projection SET status = 'cancelled' WHERE task_id = "
        "(SELECT min(task_id) FROM task_projection WHERE status <> 'cancelled')"
    )
    result, checks = drill(orch_dsn, tasks_dsn, tmp_path, server_mode, before_verify=hook)
    check = checks["projection_drift"]
    assert not check.passed and check.found["status_mismatch"] == 1 and "status_mismatch 1" in check.detail


def test_projection_drift_fails_when_the_tasks_db_cannot_be_reached(seeded, orch_dsn, tmp_path, server_mode):
    from orchestration_pipeline.lib.embedded import with_database

    gone = with_database(orch_dsn, "no_such_tasks_db")
    result, checks = drill(orch_dsn, gone, tmp_path, server_mode)
    assert result.state == "failed"
    assert not checks["projection_drift"].passed and "no_such_tasks_db" in checks["projection_drift"].detail


def test_health_fails_when_the_query_does_not_answer_in_time(orch_dsn):
    with connection(orch_dsn) as locker, connection(orch_dsn) as conn:
        locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        check = check_health(conn, timeout_s=0.3)
        locker.rollback()
        assert not check.passed and "statement timeout" in check.detail
        assert check_health(conn, timeout_s=5).passed


def test_outbox_counts_the_decisions_it_re_enqueues_for_an_index_that_lost_them(
    seeded, orch_dsn, tasks_dsn, tmp_path, server_mode
):
    index = edge_index(tmp_path / "qdrant")
    try:
        with connection(orch_dsn) as conn:
            sync_outbox(conn, index, HashingEmbedder())
            lost = ["dec-1", "dec-2", "dec-3"]
            index.delete([(d, 1 << 40) for d in lost])  # the index lost three decisions
    finally:
        index.close()
    with index_opener_for(tmp_path / "qdrant") as opener:
        result, checks = drill(orch_dsn, tasks_dsn, tmp_path, server_mode, open_index=opener)
    check = checks["outbox_repopulated"]
    assert result.state == "passed" and check.passed
    assert (
        check.found["missing_in_index"] == 3
        and check.found["enqueued"] == 3
        and check.found["in_flight"] == 0
    )


def test_outbox_fails_and_blocks_when_the_copys_outbox_refuses_repairs(
    seeded, orch_dsn, tasks_dsn, tmp_path, server_mode
):
    hook = damage(
        "UPDATE search_outbox SET done_at = now(), outcome = 'indexed', searchable_at = now()",
        "ALTER TABLE search_outbox ADD CONSTRAINT no_repairs CHECK (cause <> 'repair') NOT VALID",
    )
    with index_opener_for(tmp_path / "qdrant") as opener:
        result, checks = drill(
            orch_dsn, tasks_dsn, tmp_path, server_mode, open_index=opener, before_verify=hook
        )
    check = checks["outbox_repopulated"]
    assert result.state == "failed" and not check.passed and check.blocking
    assert "no_repairs" in check.detail


def test_an_unreachable_index_fails_the_outbox_check_without_failing_the_drill(
    seeded, orch_dsn, tasks_dsn, tmp_path, server_mode
):
    @contextmanager
    def down():
        raise IndexUnavailable("connection refused: the index at 127.0.0.1:1 is down")
        yield  # pragma: no cover

    hook = damage("UPDATE search_outbox SET done_at = now(), outcome = 'indexed', searchable_at = now()")
    result, checks = drill(orch_dsn, tasks_dsn, tmp_path, server_mode, open_index=down, before_verify=hook)
    check = checks["outbox_repopulated"]
    assert not check.passed and not check.blocking and "127.0.0.1:1" in check.detail
    with connection(orch_dsn) as conn:
        decisions = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    assert check.found["enqueued"] == decisions  # repopulated against an empty index: every decision
    assert (
        result.state == "passed"
        and result.exit_code == 0
        and "advisory: outbox_repopulated" in result.summary()
    )


def test_the_hook_runs_while_the_copy_exists_and_its_time_is_not_counted(
    seeded, orch_dsn, tasks_dsn, tmp_path, server_mode
):
    seen = threading.Event()

    def slow(scratch_dsn: str) -> None:
        with connection(scratch_dsn) as copy:
            assert copy.execute("SELECT count(*) FROM events").fetchone()[0] > 0
        seen.set()
        threading.Event().wait(1.5)

    result, _ = drill(orch_dsn, tasks_dsn, tmp_path, server_mode, before_verify=slow)
    assert seen.is_set() and result.state == "passed"
    assert result.rto_s < result.phases["restore"] + result.phases["verify"] + 0.5
