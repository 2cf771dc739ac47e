"""What an execution leaves behind: a dry run stores no error text; a failed action leaves its policy on."""

from types import SimpleNamespace

import pytest
from psycopg.types.json import Jsonb

from orchestration_pipeline.lib.audit.ledger import AuditFilter, query_audit
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.executions.effects import Effect, default_effects
from orchestration_pipeline.lib.executions.executor import Action, execute_action
from orchestration_pipeline.lib.executions.policies import Policy, get_policy, upsert_policy

pytestmark = pytest.mark.db
WHO = {"actor": "automation:policy-engine", "request_id": "req-outcomes"}


class RemoteCounter(Effect):
    """An effect that is not dry-run safe: a dry run may only validate its payload."""

    name = "remote_count"
    dry_run_safe = False

    def validate(self, target_ref, payload):
        pass

    def perform(self, ctx, run):
        raise AssertionError("a dry run must not perform the effect")

    def simulate(self, ctx, run):
        raise AssertionError("not dry-run safe: a dry run must not simulate")


@pytest.fixture
def run(orch_dsn, tasks_dsn):
    registry = default_effects()
    registry.register(RemoteCounter())
    with connection(tasks_dsn) as conn:
        conn.execute(
            "INSERT INTO tasks (task_id, title, tags) VALUES ('T-1', 'Flaky test', %s)", (Jsonb([]),)
        )
        conn.commit()

    def policy(policy_id, effect, *, live):
        with connection(orch_dsn) as conn:
            upsert_policy(conn, Policy(policy_id, policy_id, effect, True, not live), **WHO, effects=registry)

    def execute(action, **options):
        with connection(orch_dsn) as conn:
            return execute_action(
                conn,
                action,
                **WHO,
                tasks_connection=lambda: connection(tasks_dsn),
                effects=registry,
                **options,
            )

    def rows(query, params=()):
        with connection(orch_dsn) as conn:
            return conn.execute(query, params).fetchall()

    def audit(**where):
        with connection(orch_dsn) as conn:
            return query_audit(conn, AuditFilter(**where))

    def current(policy_id):
        with connection(orch_dsn) as conn:
            return get_policy(conn, policy_id)

    return SimpleNamespace(policy=policy, execute=execute, rows=rows, audit=audit, current=current)


def test_a_dry_run_stores_no_error_text(run):
    run.policy("tag-flaky", "label", live=False)  # a dry-run policy
    run.policy("counter", "remote_count", live=True)
    outcomes = [
        run.execute(Action("tag-flaky", "label", "T-1", {"tag": "flaky"})),
        # a task that is not there: the simulation says so, and that is no error either
        run.execute(Action("tag-flaky", "label", "T-gone", {"tag": "flaky"})),
        # an effect that is not dry-run safe: validated only
        run.execute(Action("counter", "remote_count", None, {"n": 1}), dry_run=True),
    ]
    assert [o.status for o in outcomes] == ["simulated"] * 3
    assert all(o.error is None and o.dry_run for o in outcomes)
    stored = run.rows("SELECT dry_run, error_text FROM decision_executions ORDER BY execution_id")
    assert stored == [(True, None)] * 3
    audited = run.audit(entity_type="decision_execution")
    assert len(audited) == 3 and all(entry["after_data"]["error_text"] is None for entry in audited)


def test_a_failed_action_leaves_its_policy_enabled(run):
    run.policy("tag-flaky", "label", live=True)
    policy_entries = len(run.audit(entity_type="policy", entity_id="tag-flaky"))
    failed = run.execute(Action("tag-flaky", "label", "T-missing", {"tag": "flaky"}))
    assert failed.status == "failed" and "T-missing not found" in failed.error
    assert run.rows("SELECT state, error_text FROM decision_executions") == [("failed", failed.error)]
    after = run.current("tag-flaky")
    assert (after.enabled, after.dry_run) == (True, False)
    assert len(run.audit(entity_type="policy", entity_id="tag-flaky")) == policy_entries  # nothing changed it
    # the policy keeps working: the next action runs live
    assert run.execute(Action("tag-flaky", "label", "T-1", {"tag": "flaky"})).status == "succeeded"
