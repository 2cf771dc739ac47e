"""The outside anchor: audit_ledger_integrity keeps the newest checkpoint in Dagster, and
audit_chain_intact fails once the chain no longer holds the one kept at the previous materialization."""

import dagster as dg
import pytest

from orchestration_pipeline.defs.audit.assets import audit_ledger_integrity, recorded_anchor
from orchestration_pipeline.defs.audit.checks import audit_chain_intact, audit_guard_present
from orchestration_pipeline.defs.resources import OrchestrationDatabase
from orchestration_pipeline.errors import AuditError
from orchestration_pipeline.lib.audit.chain import CheckpointHead, verify_chain
from orchestration_pipeline.lib.audit.ledger import record_audit
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline_tests.audit_forgery import forge_as_superuser

KEY = audit_ledger_integrity.key
HASH = "ab" * 32


def _write(dsn, *entity_ids):
    ids = []
    for entity_id in entity_ids:
        with connection(dsn) as conn, conn.transaction():
            ids.append(
                record_audit(
                    conn,
                    actor="a",
                    request_id="r",
                    operation="update",
                    entity_type="policy",
                    entity_id=entity_id,
                )
            )
    return ids


def _run(dsn, instance, *, checks_only=False):
    """One run of the audit ledger asset and its chain checks on ``instance``: (metadata, check evaluation)."""
    result = dg.materialize(
        [audit_ledger_integrity, audit_chain_intact, audit_guard_present],
        resources={"orchestration_db": OrchestrationDatabase(dsn=dsn)},
        instance=instance,
        selection=dg.AssetSelection.checks(audit_chain_intact) if checks_only else None,
        raise_on_error=False,
    )
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["audit_chain_intact"]
    materialized = result.asset_materializations_for_node("audit_ledger_integrity")
    return (materialized[0].metadata if materialized else None), evaluation


def _report(instance, **metadata):
    instance.report_runless_asset_event(dg.AssetMaterialization(KEY, metadata=metadata))


def _newest(dsn):
    with connection(dsn) as conn:
        return verify_chain(conn).newest_checkpoint


# --- reading the anchor -----------------------------------------------------------------------


def test_recorded_anchor_reads_the_newest_materialization_of_another_run():
    with dg.DagsterInstance.ephemeral() as instance:
        assert recorded_anchor(instance, KEY) is None  # never materialized
        _report(instance, anchor="none")
        assert recorded_anchor(instance, KEY) is None  # materialized before the first checkpoint
        _report(instance, checkpoints=4, last_checkpoint_hash=HASH)  # written before `anchor` existed
        assert recorded_anchor(instance, KEY) == CheckpointHead(4, HASH)
        _report(instance, anchor=f"7:{HASH}", last_checkpoint_hash="cd" * 32)
        assert recorded_anchor(instance, KEY) == CheckpointHead(7, HASH)
        _report(instance, anchor="7:garbage")
        with pytest.raises(
            AuditError, match="the anchor that run \\(reported\\) recorded for audit_ledger_integrity"
        ):
            recorded_anchor(instance, KEY)


@pytest.mark.db
def test_recorded_anchor_skips_the_current_runs_own_materialization(orch_dsn):
    def materialize(instance):
        return dg.materialize(
            [audit_ledger_integrity],
            resources={"orchestration_db": OrchestrationDatabase(dsn=orch_dsn)},
            instance=instance,
        ).run_id

    with dg.DagsterInstance.ephemeral() as instance:
        _write(orch_dsn, "p1")
        materialize(instance)
        first = _newest(orch_dsn)
        _write(orch_dsn, "p2")
        run_id = materialize(instance)
        current = recorded_anchor(instance, KEY)
        previous = recorded_anchor(instance, KEY, not_from_run=run_id)
    assert str(current) == _newest(orch_dsn) and current.seq == 2
    assert str(previous) == first and previous.seq == 1


# --- the check --------------------------------------------------------------------------------


@pytest.mark.db
def test_a_clean_ledger_keeps_its_anchor_run_after_run(orch_dsn):
    _write(orch_dsn, "p1")
    with dg.DagsterInstance.ephemeral() as instance:
        first, evaluation = _run(orch_dsn, instance)
        assert evaluation.passed and "no checkpoint kept outside the database" in evaluation.description
        _write(orch_dsn, "p2")
        second, evaluation = _run(orch_dsn, instance)
    assert first["anchor"].value.startswith("1:") and first["anchor_held"].value
    assert second["anchor"].value == _newest(orch_dsn) and second["anchor"].value.startswith("2:")
    assert evaluation.passed, evaluation.description
    assert evaluation.metadata["expected_head"].value == first["anchor"].value
    assert "; checkpoint 1 kept outside the database is still in the chain" in evaluation.description


@pytest.mark.db
def test_a_superuser_rewrite_after_a_materialization_fails_the_check_until_re_anchored(orch_dsn):
    ids = _write(orch_dsn, "p1", "p2")
    with dg.DagsterInstance.ephemeral() as instance:
        recorded, evaluation = _run(orch_dsn, instance)
        kept = recorded["anchor"].value
        assert evaluation.passed and kept.startswith("1:")

        forge_as_superuser(orch_dsn, ids[0])
        forged = _newest(orch_dsn)
        assert forged != kept and forged.startswith("1:")
        with connection(orch_dsn) as conn:
            assert verify_chain(conn).ok  # every hash recomputes: only the anchor tells

        metadata, evaluation = _run(orch_dsn, instance)
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        first = evaluation.metadata["first_broken"].value
        assert (first["kind"], first["expected"], first["found"]) == ("anchor", kept, forged)
        assert f"expected {kept}, found {forged}" in evaluation.description
        # The rewritten chain does not become the anchor: later runs, and the check run on its
        # own, keep failing.
        assert (metadata["anchor"].value, metadata["anchor_held"].value) == (kept, False)
        _, again = _run(orch_dsn, instance)
        _, alone = _run(orch_dsn, instance, checks_only=True)
        assert not again.passed and not alone.passed
        assert alone.metadata["expected_head"].value == kept

        # After the incident is recorded, an operator reports the chain's head as the new anchor.
        _report(instance, anchor=forged)
        metadata, evaluation = _run(orch_dsn, instance)
    assert evaluation.passed, evaluation.description
    assert (metadata["anchor"].value, metadata["anchor_held"].value) == (forged, True)
