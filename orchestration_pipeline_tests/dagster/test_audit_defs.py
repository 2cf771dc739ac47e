"""The audit assets and their checks, each check made to fail on purpose."""

import time
from datetime import timedelta

import dagster as dg
import pytest

from orchestration_pipeline.defs.audit.assets import audit_ledger_integrity, decision_execution_summary
from orchestration_pipeline.defs.audit.checks import (
    audit_chain_intact,
    audit_guard_present,
    no_stale_pending_executions,
)
from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.lib.audit.ledger import record_audit
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.executions.effects import Effect, default_effects
from orchestration_pipeline.lib.executions.executor import Action, execute_action
from orchestration_pipeline.lib.executions.policies import Policy, upsert_policy

pytestmark = pytest.mark.db

ASSETS = [audit_ledger_integrity, decision_execution_summary]
CHECKS = [audit_chain_intact, audit_guard_present, no_stale_pending_executions]
WHO = {"actor": "test", "request_id": "req-1"}


def _materialize(dsn, selection=None):
    return dg.materialize(
        [*ASSETS, *CHECKS],
        resources={"orchestration_db": OrchestrationDatabase(dsn=dsn)},
        instance=dg.DagsterInstance.ephemeral(),
        selection=selection,
        raise_on_error=False,
    )


def _checks(dsn):
    result = _materialize(dsn, selection=dg.AssetSelection.checks(*CHECKS))
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _write_entries(dsn, n=3):
    with connection(dsn) as conn, conn.transaction():
        return [
            record_audit(
                conn, **WHO, operation="update", entity_type="policy", entity_id=f"p{i}", after={"i": i}
            )
            for i in range(n)
        ]


def _superuser(dsn, *statements):
    with connection(dsn) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()


def test_a_clean_ledger_materializes_and_every_check_passes(orch_dsn):
    _write_entries(orch_dsn)
    with connection(orch_dsn) as conn:
        upsert_policy(conn, Policy("page", "Page on-call", "notify", enabled=True, dry_run=False), **WHO)
        upsert_policy(conn, Policy("sim", "Simulated", "notify", enabled=True, dry_run=True), **WHO)
        execute_action(conn, Action("page", "notify", None, {"message": "m"}), **WHO)
        execute_action(conn, Action("page", "notify", None, {"message": "m"}), **WHO)
    result = _materialize(orch_dsn)
    assert result.success
    ledger = result.asset_materializations_for_node("audit_ledger_integrity")[0].metadata
    # 3 entries + 2 policy creations + claim and completion of one execution.
    assert (ledger["entries"].value, ledger["sealed_now"].value, ledger["unsealed_entries"].value) == (
        7,
        7,
        0,
    )
    assert ledger["checkpoints"].value == 1 and not ledger["checkpoint_busy"].value
    assert len(ledger["last_checkpoint_hash"].value) == 64
    summary = result.asset_materializations_for_node("decision_execution_summary")[0].metadata
    assert {k: summary[k].value for k in ("total", "enabled", "dry_run_on", "live_on")} == {
        "total": 2,
        "enabled": 2,
        "dry_run_on": 1,
        "live_on": 1,
    }
    assert (summary["succeeded"].value, summary["failed"].value, summary["duplicate_skipped"].value) == (
        1,
        0,
        1,
    )
    assert summary["last_execution_at"].value != "never"
    assert (summary["pending"].value, summary["stale_pending"].value) == (0, 0)
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evals == {
        "audit_chain_intact": True,
        "audit_guard_present": True,
        "no_stale_pending_executions": True,
    }


def test_audit_chain_intact_fails_when_a_superuser_edits_an_entry_with_triggers_off(orch_dsn):
    ids = _write_entries(orch_dsn)
    _superuser(
        orch_dsn,
        "ALTER TABLE audit_ledger DISABLE TRIGGER USER",
        f"UPDATE audit_ledger SET actor = 'mallory' WHERE audit_id = {ids[1]}",
        "ALTER TABLE audit_ledger ENABLE TRIGGER USER",
    )
    evaluation = _checks(orch_dsn)["audit_chain_intact"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    first = evaluation.metadata["first_broken"].value
    assert first["audit_id"] == ids[1] and first["kind"] == "row_hash"
    assert first["expected"] != first["found"] and len(first["found"]) == 64
    assert f"broken at audit_id {ids[1]}" in evaluation.description


def test_audit_chain_intact_fails_when_an_entry_is_deleted(orch_dsn):
    ids = _write_entries(orch_dsn)
    _superuser(
        orch_dsn,
        "SET session_replication_role = replica",
        f"DELETE FROM audit_ledger WHERE audit_id = {ids[0]}",
    )
    evaluation = _checks(orch_dsn)["audit_chain_intact"]
    assert not evaluation.passed
    assert evaluation.metadata["first_broken"].value["audit_id"] == ids[1]


def test_audit_chain_intact_fails_when_a_sealed_transaction_is_deleted(orch_dsn):
    first = _write_entries(orch_dsn, n=1)
    _write_entries(orch_dsn, n=2)
    assert _materialize(orch_dsn).success  # seals all three
    _superuser(
        orch_dsn,
        "SET session_replication_role = replica",
        f"DELETE FROM audit_ledger WHERE audit_id = {first[0]}",
    )
    evaluation = _checks(orch_dsn)["audit_chain_intact"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    broken = evaluation.metadata["first_broken"].value
    assert (broken["kind"], broken["expected"], broken["found"]) == ("checkpoint_count", "3", "2")
    assert "checkpoint/1" in evaluation.description


@pytest.mark.parametrize(
    "sabotage, problem",
    [
        ("DROP TRIGGER audit_ledger_append_only ON audit_ledger", "row-level BEFORE UPDATE guard missing"),
        ("DROP TRIGGER audit_ledger_no_truncate ON audit_ledger", "BEFORE TRUNCATE guard missing"),
        ("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_append_only", "is disabled"),
        ("DROP TRIGGER audit_ledger_chain ON audit_ledger", "hash-chain trigger missing"),
        (
            "DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints",
            "row-level BEFORE UPDATE guard missing on audit_checkpoints",
        ),
        ("GRANT INSERT ON audit_checkpoints TO orch_pipeline_writer", "may INSERT audit_checkpoints"),
        (
            "ALTER FUNCTION audit_checkpoint(integer, integer) RESET search_path",
            "audit_checkpoint(integer,integer) runs as its owner without",
        ),
        (
            "REVOKE EXECUTE ON FUNCTION audit_checkpoint(integer, integer) FROM orch_pipeline_writer",
            "cannot run audit_checkpoint()",
        ),
        ("ALTER TABLE audit_checkpoints OWNER TO CURRENT_USER", "audit_checkpoints is owned by"),
        ("ALTER TABLE audit_ledger ALTER COLUMN audit_id SET CACHE 20", "must draw ids one at a time"),
        (
            "ALTER TABLE audit_ledger DROP CONSTRAINT audit_ledger_chain_position",
            "audit_ledger_chain_position",
        ),
        (
            "GRANT UPDATE ON audit_ledger TO orch_pipeline_writer",
            "orch_pipeline_writer may UPDATE audit_ledger",
        ),
        ("GRANT DELETE ON audit_chain_heads TO orch_pipeline_writer", "may DELETE audit_chain_heads"),
        (
            "REVOKE INSERT (actor) ON audit_ledger FROM orch_pipeline_writer",
            "cannot insert audit_ledger.actor",
        ),
        ("GRANT INSERT ON audit_ledger TO orch_pipeline_writer", "may set audit_ledger.audit_id"),
        (
            "ALTER FUNCTION audit_ledger_chain() RESET search_path",
            "audit_ledger_chain() runs as its owner without",
        ),
        ("GRANT SELECT ON audit_ledger TO PUBLIC", "PUBLIC has privileges on audit_ledger"),
        ("ALTER FUNCTION audit_ledger_chain() SECURITY INVOKER", "must be SECURITY DEFINER owned by"),
        ("ALTER TABLE audit_chain_heads OWNER TO CURRENT_USER", "audit_chain_heads is owned by"),
        ("ALTER TABLE audit_ledger OWNER TO CURRENT_USER", "audit_ledger is owned by"),
        # present and enabled, but firing for no row, or only for changes of some columns
        (
            "CREATE OR REPLACE TRIGGER audit_ledger_append_only BEFORE UPDATE OR DELETE ON audit_ledger "
            "FOR EACH ROW WHEN (false) EXECUTE FUNCTION audit_ledger_refuse_change()",
            "audit_ledger_append_only on audit_ledger fires only for some rows",
        ),
        (
            "CREATE OR REPLACE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OF created_at OR DELETE "
            "ON audit_checkpoints FOR EACH ROW EXECUTE FUNCTION audit_ledger_refuse_change()",
            "row-level BEFORE UPDATE guard missing on audit_checkpoints",
        ),
        (
            "GRANT USAGE, UPDATE ON SEQUENCE audit_ledger_audit_id_seq TO orch_pipeline_writer",
            "may setval() the ledger's id sequence",
        ),
    ],
)
def test_audit_guard_present_fails_when_the_guard_or_privileges_are_missing(orch_dsn, sabotage, problem):
    _superuser(orch_dsn, sabotage)
    evaluation = _checks(orch_dsn)["audit_guard_present"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    problems = evaluation.metadata["problems"].value
    assert any(problem in p for p in problems), problems


class _Crash(BaseException):
    """A worker dying mid-effect."""


class _Crashing(Effect):
    name = "crashing"
    dry_run_safe = True

    def validate(self, target_ref, payload):
        pass

    def perform(self, ctx, run):
        raise _Crash()


def test_no_stale_pending_executions_warns_about_a_claim_past_its_lease(orch_dsn):
    effects = default_effects()
    effects.register(_Crashing())
    with connection(orch_dsn) as conn:
        upsert_policy(conn, Policy("p", "p", "crashing", enabled=True, dry_run=False), **WHO, effects=effects)
        with pytest.raises(_Crash):
            execute_action(
                conn,
                Action("p", "crashing", None, {}),
                **WHO,
                effects=effects,
                lease=timedelta(milliseconds=1),
            )
    time.sleep(0.01)
    evaluation = _checks(orch_dsn)["no_stale_pending_executions"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["stale"].value == 1 and evaluation.metadata["execution_ids"].value == [1]
    assert "decisions rescue" in evaluation.description
