"""A claim whose worker died holds its action: past its lease, execute says so and points to rescue."""

import json
import os
import time
from datetime import UTC, timedelta

import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli import main
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.executions.effects import EffectRegistry, LabelTask
from orchestration_pipeline.lib.executions.executor import Action, execute_action
from orchestration_pipeline.lib.executions.policies import Policy, upsert_policy

pytestmark = pytest.mark.db
WHO = {"actor": "automation:policy-engine", "request_id": "req-1"}
ACTION = Action("tag-flaky", "label", "T-42", {"tag": "flaky"})
ARGS = ("decisions", "execute", "tag-flaky", "--target", "T-42", "--payload", '{"tag": "flaky"}')


class WorkerDied(BaseException):
    """Not an Exception: nothing records an outcome, as when the worker's process is killed."""


class DiesBeforeLabelling(LabelTask):
    """The label effect (same name, so the same action) in a worker that dies before it tags."""

    def perform(self, ctx, run):
        raise WorkerDied()


@pytest.fixture
def env(orch_dsn, tasks_dsn, tmp_path):
    with connection(orch_dsn) as conn:
        upsert_policy(conn, Policy("tag-flaky", "Tag flaky tests", "label", True, False), **WHO)
    with connection(tasks_dsn) as conn:
        conn.execute("INSERT INTO tasks (task_id, title) VALUES ('T-42', 'Flaky integration test')")
        conn.commit()

    class Env:
        def claim_and_die(self, lease: timedelta) -> int:
            """A worker claims ACTION and dies; returns the claim's execution id."""
            with connection(orch_dsn) as conn, pytest.raises(WorkerDied):
                execute_action(
                    conn,
                    ACTION,
                    **WHO,
                    tasks_connection=lambda: connection(tasks_dsn),
                    effects=EffectRegistry([DiesBeforeLabelling()]),
                    lease=lease,
                )
            time.sleep(0.01)
            return self.row("SELECT execution_id FROM decision_executions WHERE state = 'pending'")[0]

        def row(self, query: str, params=()):
            with connection(orch_dsn) as conn:
                return conn.execute(query, params).fetchone()

        def tags(self, task_id: str):
            with connection(tasks_dsn) as conn:
                return conn.execute("SELECT tags FROM tasks WHERE task_id = %s", (task_id,)).fetchone()[0]

        def cli(self, *args: str):
            cleared = {
                k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))
            }
            result = CliRunner().invoke(
                main,
                list(args),
                env={
                    **cleared,
                    "ORCH_HOME": str(tmp_path / "home"),
                    "ORCH_DATABASE_URL": orch_dsn,
                    "TASKS_DATABASE_URL": tasks_dsn,
                    "ORCH_ACTOR": "test:cli",
                },
            )
            assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
            return result

    return Env()


def test_the_executor_reports_a_stale_claim_with_its_lease(env, orch_dsn):
    execution_id = env.claim_and_die(timedelta(milliseconds=1))
    with connection(orch_dsn) as conn:
        outcome = execute_action(conn, ACTION, **WHO)
    lease, expired = env.row(
        "SELECT lease_expires_at, lease_expires_at < now() FROM decision_executions WHERE execution_id = %s",
        (execution_id,),
    )
    assert (outcome.status, outcome.execution_id, outcome.attempt) == ("stale_claim", execution_id, 1)
    assert outcome.lease_expires_at == lease and expired


def test_a_claim_within_its_lease_is_still_in_progress(env, orch_dsn):
    execution_id = env.claim_and_die(timedelta(minutes=5))
    with connection(orch_dsn) as conn:
        outcome = execute_action(conn, ACTION, **WHO)
    lease, live = env.row(
        "SELECT lease_expires_at, lease_expires_at > now() FROM decision_executions WHERE execution_id = %s",
        (execution_id,),
    )
    assert (outcome.status, outcome.execution_id, outcome.lease_expires_at) == (
        "in_progress",
        execution_id,
        lease,
    )
    assert live
    result = env.cli(*ARGS)
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith(f"in_progress: execution {execution_id} attempt 1 ")
    assert f"lease until {lease.astimezone(UTC):%Y-%m-%d %H:%M:%S}+00:00" in result.stdout


def test_execute_names_the_stale_claim_and_rescue_and_exits_3(env):
    execution_id = env.claim_and_die(timedelta(milliseconds=1))
    lease = env.row(
        "SELECT lease_expires_at FROM decision_executions WHERE execution_id = %s", (execution_id,)
    )[0]
    shown = f"{lease.astimezone(UTC):%Y-%m-%d %H:%M:%S}+00:00"

    result = env.cli(*ARGS)
    assert result.exit_code == 3, result.output
    assert result.stdout.startswith(f"stale_claim: execution {execution_id} attempt 1 ")
    assert f"lease expired {shown}" in result.stdout
    err = result.stderr.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: the claim holding this action is stale: ")
    assert f"execution {execution_id} (attempt 1)" in err[0] and f"lease expired at {shown}" in err[0]
    assert "run 'orchestration-pipeline decisions rescue'" in err[0]

    as_json = env.cli(*ARGS, "--json")
    assert as_json.exit_code == 3
    body = json.loads(as_json.stdout)
    assert (body["status"], body["execution_id"]) == ("stale_claim", execution_id)
    assert body["lease_expires_at"] == str(lease)

    # what the message says resolves it does: rescue, then the action runs
    assert env.cli("decisions", "rescue").exit_code == 0
    done = env.cli(*ARGS)
    assert done.exit_code == 0 and done.stdout.startswith("succeeded: "), done.output
    assert env.tags("T-42") == ["flaky"]


def test_the_exit_status_is_documented_in_help(env):
    result = env.cli("decisions", "execute", "--help")
    assert result.exit_code == 0
    assert "3  stale_claim" in result.stdout and "decisions rescue" in result.stdout
