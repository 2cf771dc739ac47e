"""Decision executions: claim/commit/perform/record, duplicates, retries, threads, stale claims."""

import threading
import time
from datetime import timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from orchestration_pipeline.errors import ActionHashConflict, ExecutionError, SchemaNotReady
from orchestration_pipeline.lib.audit.chain import verify_chain
from orchestration_pipeline.lib.audit.ledger import AuditFilter, query_audit
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.executions.effects import (
    CreateTask,
    Effect,
    EffectFailed,
    LabelTask,
    Notify,
    ProbeResult,
    default_effects,
)
from orchestration_pipeline.lib.executions.executor import Action, execute_action
from orchestration_pipeline.lib.executions.history import execution_summary
from orchestration_pipeline.lib.executions.policies import Policy, get_policy, upsert_policy
from orchestration_pipeline.lib.executions.rescue import rescue_stale_claims, stale_claims_verdict

pytestmark = pytest.mark.db
WHO = {"actor": "automation:policy-engine", "request_id": "req-1"}


class Crash(BaseException):
    """Stands in for a worker dying mid-effect: not an Exception, so nothing records an outcome."""


class CountingEffect(Effect):
    """A remote effect that counts how often it really ran (slowly, to widen race windows)."""

    name = "count"
    dry_run_safe = False

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.calls = 0
        self.delay = delay
        self.fail = fail
        self._lock = threading.Lock()

    def validate(self, target_ref, payload):
        if "n" not in payload:
            raise ExecutionError("count: payload.n is required")

    def perform(self, ctx, run):
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        if self.fail:
            raise EffectFailed("the counter is broken")
        return {"calls": self.calls}

    def simulate(self, ctx, run):
        raise AssertionError("not dry-run safe: a dry run must not call simulate")


@pytest.fixture
def env(orch_dsn, tasks_dsn):
    class Env:
        orch = orch_dsn
        tasks = tasks_dsn
        registry = default_effects()

        def tasks_connection(self):
            return connection(tasks_dsn)

        def policy(self, policy_id, effect, *, live=True, enabled=True):
            with connection(orch_dsn) as conn:
                upsert_policy(
                    conn,
                    Policy(policy_id, policy_id, effect, enabled, not live),
                    **WHO,
                    effects=self.registry,
                )

        def execute(self, action, **kw):
            with connection(orch_dsn) as conn:
                return execute_action(
                    conn,
                    action,
                    **{**WHO, **kw},
                    tasks_connection=self.tasks_connection,
                    effects=self.registry,
                )

        def rescue(self):
            with connection(orch_dsn) as conn:
                return rescue_stale_claims(
                    conn, actor="rescuer", request_id="req-rescue", tasks_connection=self.tasks_connection,
                    effects=self.registry,
                )  # fmt: skip

        def read(self, fn):
            with connection(orch_dsn) as conn:
                return fn(conn)

        def orch_rows(self, query, params=()):
            with connection(orch_dsn) as conn:
                return conn.execute(query, params).fetchall()

        def task(self, task_id):
            with connection(tasks_dsn) as conn:
                return conn.execute("SELECT title, tags FROM tasks WHERE task_id = %s", (task_id,)).fetchone()

        def add_task(self, task_id, title="Flaky test", tags=()):
            with connection(tasks_dsn) as conn:
                conn.execute(
                    "INSERT INTO tasks (task_id, title, tags) VALUES (%s, %s, %s)",
                    (task_id, title, Jsonb(list(tags))),
                )
                conn.commit()

    return Env()


def _executions(env):
    return env.orch_rows(
        "SELECT execution_id, state, attempt, dry_run, error_text, duplicate_skips FROM decision_executions "
        "ORDER BY execution_id"
    )


def test_policy_changes_are_audited_and_unknown_effects_refused(env):
    with connection(env.orch) as conn:
        upsert_policy(conn, Policy("tag-flaky", "Tag flaky tests", "label"), **WHO, reason="new rule")
        upsert_policy(conn, Policy("tag-flaky", "Tag flaky tests", "label", enabled=True), **WHO)
        upsert_policy(conn, Policy("tag-flaky", "Tag flaky tests", "label", enabled=True), **WHO)  # unchanged
        with pytest.raises(
            ExecutionError, match="unknown effect 'page_someone' — use one of create_task, label"
        ):
            upsert_policy(conn, Policy("p2", "x", "page_someone"), **WHO)
        rows = query_audit(conn, AuditFilter(entity_type="policy", entity_id="tag-flaky"))
        assert get_policy(conn, "tag-flaky").enabled
    assert [r["operation"] for r in rows] == ["update", "create"]
    assert rows[0]["before_data"]["enabled"] is False and rows[0]["after_data"]["enabled"] is True
    assert rows[1]["reason"] == "new rule" and rows[1]["actor"] == WHO["actor"]


def test_a_dry_run_validates_records_a_simulation_and_does_nothing(env):
    env.add_task("T-1")
    env.policy("tag-flaky", "label", live=False)
    outcome = env.execute(Action("tag-flaky", "label", "T-1", {"tag": "flaky"}))
    assert outcome.status == "simulated" and outcome.dry_run
    assert outcome.result == {"simulated": True, "task_id": "T-1", "task_exists": True, "tag_present": False}
    assert env.task("T-1") == ("Flaky test", [])
    assert [r[1:4] for r in _executions(env)] == [("succeeded", 1, True)]
    # The same validation path as a live run: a bad payload is refused before anything is written.
    with pytest.raises(ExecutionError, match="label: unknown payload field"):
        env.execute(Action("tag-flaky", "label", "T-1", {"tag": "flaky", "colour": "red"}))
    assert len(_executions(env)) == 1
    # A simulation never claims the action: going live performs it.
    env.policy("tag-flaky", "label", live=True)
    assert env.execute(Action("tag-flaky", "label", "T-1", {"tag": "flaky"})).status == "succeeded"
    assert env.task("T-1") == ("Flaky test", ["flaky"])
    audit = env.read(lambda c: query_audit(c, AuditFilter(entity_type="decision_execution")))
    assert "dry run" in audit[-1]["reason"]


def test_a_dry_run_of_an_effect_that_is_not_dry_run_safe_consults_nothing(env):
    effect = CountingEffect()
    env.registry.register(effect)
    env.policy("counter", "count", live=True)
    outcome = env.execute(Action("counter", "count", None, {"n": 1}), dry_run=True)
    assert outcome.status == "simulated" and outcome.result["simulated"] is False
    assert effect.calls == 0


def test_create_task_writes_as_the_tasks_writer_role(env):
    env.policy("open-task", "create_task")
    action = Action("open-task", "create_task", None, {"title": "Investigate flaky build", "tags": ["ci"]})
    # Take INSERT away from the role (in this Tasks DB only): the superuser login alone cannot insert.
    with connection(env.tasks) as conn:
        conn.execute("REVOKE INSERT ON tasks FROM orch_tasks_writer")
        conn.commit()
    failed = env.execute(action)
    assert failed.status == "failed" and "permission denied for table tasks" in failed.error
    with connection(env.tasks) as conn:
        conn.execute("GRANT INSERT ON tasks TO orch_tasks_writer")
        conn.commit()
    retried = env.execute(action)
    assert retried.status == "succeeded" and retried.attempt == 2
    task_id = retried.result["task_id"]
    assert task_id == f"dec-{action.action_hash[:20]}"
    assert env.task(task_id) == ("Investigate flaky build", ["ci"])
    # The failed attempt survives, with its error, next to the successful retry.
    rows = _executions(env)
    assert [(r[1], r[2]) for r in rows] == [("failed", 1), ("succeeded", 2)]
    assert "permission denied" in rows[0][4]


def test_the_writer_role_cannot_rewrite_or_delete_tasks(env):
    env.add_task("T-1")
    with connection(env.tasks) as conn:
        for statement in ("UPDATE tasks SET title = 'x'", "DELETE FROM tasks"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute("SET LOCAL ROLE orch_tasks_writer")
                conn.execute(statement)


def test_key_order_does_not_make_a_different_action(env):
    env.policy("open-task", "create_task")
    first = env.execute(
        Action("open-task", "create_task", None, {"title": "Investigate", "tags": ["ci", "b"]})
    )
    second = env.execute(
        Action("open-task", "create_task", None, {"tags": ["ci", "b"], "title": "Investigate"})
    )
    third = env.execute(
        Action("open-task", "create_task", None, {"tags": ["b", "ci"], "title": "Investigate"})
    )
    assert (first.status, second.status, third.status) == ("succeeded", "duplicate", "succeeded")
    assert second.execution_id == first.execution_id != third.execution_id


def test_a_repeat_of_a_succeeded_action_is_skipped_as_a_duplicate(env):
    env.add_task("T-1")
    env.policy("tag-flaky", "label")
    action = Action("tag-flaky", "label", "T-1", {"tag": "flaky"})
    first = env.execute(action)
    second = env.execute(Action("tag-flaky", "label", "T-1", {"tag": "flaky"}))
    assert (first.status, second.status) == ("succeeded", "duplicate")
    assert second.execution_id == first.execution_id and second.result == first.result
    assert env.task("T-1") == ("Flaky test", ["flaky"])
    assert [(r[1], r[5]) for r in _executions(env)] == [("succeeded", 1)]
    summary = env.read(execution_summary)
    assert (summary["succeeded"], summary["failed"], summary["duplicate_skipped"]) == (1, 0, 1)


def test_the_same_hash_with_different_parameters_is_an_error(env):
    env.add_task("T-1")
    env.policy("tag-flaky", "label")
    action = Action("tag-flaky", "label", "T-1", {"tag": "flaky"})
    env.execute(action)
    with connection(env.orch) as conn:
        conn.execute('UPDATE decision_executions SET payload = \'{"tag": "slow"}\'')
        conn.commit()
    with pytest.raises(
        ActionHashConflict, match=f"action_hash {action.action_hash} already belongs to execution"
    ):
        env.execute(action)


def test_notify_writes_its_alert_in_the_transaction_that_records_success(env):
    env.policy("page", "notify")
    outcome = env.execute(Action("page", "notify", "ingest", {"message": "error flood", "severity": "error"}))
    assert outcome.status == "succeeded"
    alerts = env.orch_rows("SELECT source, severity, subject, message, execution_id FROM alerts")
    assert alerts == [("policy:page", "error", "ingest", "error flood", outcome.execution_id)]
    assert outcome.result == {"alert_id": 1}
    ops = [
        r["operation"]
        for r in env.read(lambda c: query_audit(c, AuditFilter(entity_id=str(outcome.execution_id))))
    ]
    assert ops == ["complete", "create"]


def test_a_failed_local_effect_rolls_back_but_its_failure_is_recorded(env):
    class BrokenNotify(Effect):
        name = "broken_notify"
        local = True
        dry_run_safe = True

        def validate(self, target_ref, payload):
            pass

        def perform(self, ctx, run):
            ctx.orch_conn.execute(
                "INSERT INTO alerts (source, severity, subject, message, execution_id) "
                "VALUES ('t', 'info', 's', 'm', %s)",
                (run.execution_id,),
            )
            raise EffectFailed("downstream refused the alert")

    env.registry.register(BrokenNotify())
    env.policy("broken", "broken_notify")
    outcome = env.execute(Action("broken", "broken_notify", None, {}))
    assert outcome.status == "failed" and outcome.error == "downstream refused the alert"
    assert env.orch_rows("SELECT count(*) FROM alerts") == [(0,)]
    assert [(r[1], r[4]) for r in _executions(env)] == [("failed", "downstream refused the alert")]
    audit = env.read(lambda c: query_audit(c, AuditFilter(entity_id=str(outcome.execution_id))))
    assert [(r["operation"], r["after_data"]["state"]) for r in audit] == [
        ("update", "failed"),
        ("create", "pending"),
    ]


def test_an_effects_error_is_stored_and_audited_without_its_secrets(env):
    class Leaky(CountingEffect):
        name = "leaky"

        def perform(self, ctx, run):
            raise EffectFailed("cannot reach postgresql://svc:LEAK1@db/x (api_key=LEAK2)")

    env.registry.register(Leaky())
    env.policy("p", "leaky")
    outcome = env.execute(Action("p", "leaky", None, {"n": 1}))
    assert outcome.status == "failed" and "postgresql://svc:[REDACTED]@db/x" in outcome.error
    stored = env.orch_rows("SELECT error_text FROM decision_executions")
    ledger = env.orch_rows(
        "SELECT after_data::text FROM audit_ledger WHERE entity_type = 'decision_execution'"
    )
    assert stored and ledger and "LEAK" not in repr(stored) + repr(ledger)


def test_refusals_happen_before_anything_is_written(env):
    env.policy("off", "notify", enabled=False)
    env.policy("page", "notify")
    with pytest.raises(ExecutionError, match="policy off is disabled — enable it with"):
        env.execute(Action("off", "notify", None, {"message": "m"}))
    with pytest.raises(ExecutionError, match="may only trigger 'notify', not 'label'"):
        env.execute(Action("page", "label", "T-1", {"tag": "x"}))
    with pytest.raises(ExecutionError, match="unknown policy 'nope'"):
        env.execute(Action("nope", "notify", None, {"message": "m"}))
    with pytest.raises(ExecutionError, match="beyond"):
        env.execute(Action("page", "notify", None, {"message": "m", "details": {"id": 2**60}}))
    with pytest.raises(ExecutionError, match="actor and request_id are required"):
        env.execute(Action("page", "notify", None, {"message": "m"}), actor=" ")
    with pytest.raises(ExecutionError, match="NUL character"):  # PostgreSQL cannot store it
        env.execute(Action("page", "notify", None, {"message": "x\x00y"}))
    with pytest.raises(ExecutionError, match="NUL character"):
        env.execute(Action("page", "notify", "in\x00gest", {"message": "m"}))
    with connection(env.orch) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(ExecutionError, match="needs a connection with no open transaction"):
            execute_action(conn, Action("page", "notify", None, {"message": "m"}), **WHO)
    assert _executions(env) == []


@pytest.mark.parametrize("effect_name", ["count", "notify"])
def test_concurrent_attempts_never_run_the_effect_twice(env, effect_name):
    counter = CountingEffect(delay=0.3)
    env.registry.register(counter)
    env.policy("p", effect_name)
    action = Action("p", effect_name, None, {"n": 1} if effect_name == "count" else {"message": "once"})
    threads = 6
    barrier = threading.Barrier(threads)
    outcomes, errors = [], []

    def attempt():
        try:
            barrier.wait()
            outcomes.append(env.execute(action).status)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    pool = [threading.Thread(target=attempt) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert errors == []
    assert outcomes.count("succeeded") == 1
    assert set(outcomes) - {"succeeded"} <= {"duplicate", "in_progress"}
    if effect_name == "count":
        assert counter.calls == 1
    else:
        assert env.orch_rows("SELECT count(*) FROM alerts") == [(1,)]
    rows = _executions(env)
    assert len(rows) == 1 and rows[0][1] == "succeeded" and rows[0][5] == threads - 1
    assert env.read(verify_chain).ok


def test_a_failed_action_stays_retryable(env):
    counter = CountingEffect(fail=True)
    env.registry.register(counter)
    env.policy("p", "count")
    action = Action("p", "count", None, {"n": 1})
    assert env.execute(action).status == "failed"
    assert env.execute(action).status == "failed"
    counter.fail = False
    ok = env.execute(action)
    assert (ok.status, ok.attempt, counter.calls) == ("succeeded", 3, 3)
    assert env.execute(action).status == "duplicate" and counter.calls == 3


class CrashBeforeLabel(LabelTask):
    """A label effect whose worker dies before it tags (while ``crash``)."""

    name = "crash_label"
    crash = True

    def perform(self, ctx, run):
        if self.crash:
            raise Crash()
        return super().perform(ctx, run)


def _crash_during(env, action):
    with pytest.raises(Crash):
        env.execute(action, lease=timedelta(milliseconds=1))
    time.sleep(0.01)


def test_the_rescuer_records_success_when_the_effect_had_happened(env):
    class CreateThenCrash(CreateTask):
        name = "create_then_crash"

        def perform(self, ctx, run):
            super().perform(ctx, run)
            raise Crash()

    env.registry.register(CreateThenCrash())
    env.policy("open-task", "create_then_crash")
    action = Action("open-task", "create_then_crash", "T-9", {"title": "Look at the build"})
    _crash_during(env, action)
    assert [r[1] for r in _executions(env)] == ["pending"]
    assert not env.read(stale_claims_verdict).passed
    report = env.rescue()
    assert (report.examined, report.succeeded, report.failed) == (1, [1], [])
    assert env.orch_rows("SELECT state, result->>'recorded_by' FROM decision_executions") == [
        ("succeeded", "rescuer")
    ]
    assert env.execute(action).status == "duplicate"
    assert env.read(stale_claims_verdict).passed


def test_a_redacted_title_or_tag_leaves_the_probe_unable_to_tell_and_the_retry_safe(env):
    """The probes see the stored, redacted payload: they cannot tell, the claims are failed, and the
    retry (which holds the original action) finds the work done and does nothing twice."""

    class OnceCrashing:
        crashed = False

        def perform(self, ctx, run):
            result = super().perform(ctx, run)
            if not OnceCrashing.crashed:
                OnceCrashing.crashed = True
                raise Crash()
            return result

    class CreateThenCrash(OnceCrashing, CreateTask):
        name = "create_then_crash"

    class LabelThenCrash(OnceCrashing, LabelTask):
        name = "label_then_crash"

    env.registry.register(CreateThenCrash())
    env.registry.register(LabelThenCrash())
    env.policy("open-task", "create_then_crash")
    env.policy("tag-task", "label_then_crash")
    create = Action("open-task", "create_then_crash", "T-7", {"title": "rotate token=abc123secret now"})
    label = Action("tag-task", "label_then_crash", "T-7", {"tag": "api_key=abc123secret"})
    _crash_during(env, create)
    OnceCrashing.crashed = False
    _crash_during(env, label)
    stored = env.orch_rows("SELECT payload::text FROM decision_executions ORDER BY execution_id")
    assert all("abc123secret" not in row[0] for row in stored)
    report = env.rescue()
    assert (report.examined, report.succeeded, sorted(report.failed)) == (2, [], [1, 2])
    for action in (create, label):
        retried = env.execute(action)
        assert (retried.status, retried.attempt, retried.result["already_present"]) == ("succeeded", 2, True)
    assert env.task("T-7") == ("rotate token=abc123secret now", ["api_key=abc123secret"])


def test_the_rescuer_fails_a_stale_claim_whose_effect_did_not_happen_and_it_is_retried(env):
    effect = CrashBeforeLabel()
    env.registry.register(effect)
    env.add_task("T-1")
    env.policy("tag", "crash_label")
    action = Action("tag", "crash_label", "T-1", {"tag": "flaky"})
    _crash_during(env, action)
    report = env.rescue()
    assert report.failed == [1]
    error = env.orch_rows("SELECT error_text FROM decision_executions")[0][0]
    assert "lease expired" in error and "did not happen" in error and "retryable" in error
    effect.crash = False
    retried = env.execute(action)
    assert (retried.status, retried.attempt) == ("succeeded", 2)
    assert env.task("T-1")[1] == ["flaky"]
    audit = env.read(lambda c: query_audit(c, AuditFilter(request_id="req-rescue")))
    assert audit[0]["actor"] == "rescuer" and audit[0]["source"] == "rescuer"


def test_an_effect_that_cannot_tell_is_failed_and_retryable(env):
    class Blind(CountingEffect):
        name = "blind"

        def perform(self, ctx, run):
            raise Crash()

    env.registry.register(Blind())
    env.policy("p", "blind")
    _crash_during(env, Action("p", "blind", None, {"n": 1}))
    assert env.rescue().failed == [1]
    assert "cannot tell" in env.orch_rows("SELECT error_text FROM decision_executions")[0][0]


def test_a_success_after_the_rescuer_gave_up_is_still_recorded_truthfully(env):
    release = threading.Event()

    class Slow(CountingEffect):
        name = "slow"

        def perform(self, ctx, run):
            release.wait(30)
            return {"done": True}

        def probe(self, ctx, run):
            return ProbeResult(False, {"seen": False})

    env.registry.register(Slow())
    env.policy("p", "slow")
    worker, outcomes = _with_short_lease(env, Action("p", "slow", None, {"n": 1}))
    time.sleep(0.3)
    assert env.rescue().failed == [1]
    release.set()
    worker.join(30)
    assert outcomes[0].status == "succeeded"
    assert env.orch_rows("SELECT state, error_text FROM decision_executions") == [("succeeded", None)]
    audit = env.read(lambda c: query_audit(c, AuditFilter(entity_id="1", operation="complete")))
    assert "after the rescuer had failed the claim" in audit[0]["reason"]


def _overtaken(env, effect, action):
    """Attempt 1 stalls inside its effect past its lease; the rescuer fails it, attempt 2 runs and
    succeeds; then attempt 1's effect finishes. Returns attempt 1's and attempt 2's outcomes."""
    first = []
    worker = threading.Thread(
        target=lambda: first.append(env.execute(action, lease=timedelta(milliseconds=50)))
    )
    worker.start()
    assert effect.entered.wait(30)
    time.sleep(0.1)  # past the lease
    assert env.rescue().failed == [1]
    second = env.execute(action)
    effect.release.set()
    worker.join(30)
    return first[0], second


class _Stall:
    """Mixin: the first perform waits for ``release``; later ones run at once."""

    def __init__(self):
        self.entered, self.release, self.performs = threading.Event(), threading.Event(), 0

    def perform(self, ctx, run):
        self.performs += 1
        if self.performs == 1:
            self.entered.set()
            assert self.release.wait(30)
        return super().perform(ctx, run)


def _with_short_lease(env, action):
    """Execute ``action`` in a thread with a 50 ms lease; returns the thread and its outcome list."""
    outcomes = []
    worker = threading.Thread(
        target=lambda: outcomes.append(env.execute(action, lease=timedelta(milliseconds=50)))
    )
    worker.start()
    return worker, outcomes


def _stalled_count(name: str, probe_sees_it_done: bool):
    """A remote counting effect whose first perform stalls; its probe says ``probe_sees_it_done``."""

    class StalledCount(_Stall, CountingEffect):
        def __init__(self):
            CountingEffect.__init__(self)
            _Stall.__init__(self)
            self.name = name

        def probe(self, ctx, run):
            return ProbeResult(probe_sees_it_done, {"seen": probe_sees_it_done})

    return StalledCount()


def test_a_remote_effect_overtaken_by_a_newer_attempt_reports_lease_lost(env):
    effect = _stalled_count("stalled_count", probe_sees_it_done=False)
    env.registry.register(effect)
    env.policy("p", "stalled_count")
    first, second = _overtaken(env, effect, Action("p", "stalled_count", None, {"n": 1}))
    assert (second.status, second.attempt) == ("succeeded", 2)
    # the effect did run (it is remote: nothing to roll back), and the record says who holds the action
    assert (first.status, first.attempt) == ("lease_lost", 1)
    assert first.result == {"calls": 2} and "newer attempt" in first.error
    assert [(r[1], r[2]) for r in _executions(env)] == [("failed", 1), ("succeeded", 2)]
    completes = env.read(lambda c: query_audit(c, AuditFilter(operation="complete")))
    assert [r["entity_id"] for r in completes] == [str(second.execution_id)]
    assert env.read(verify_chain).ok


def test_a_remote_effect_the_rescuer_found_done_reports_succeeded(env):
    effect = _stalled_count("stalled_seen", probe_sees_it_done=True)
    env.registry.register(effect)
    env.policy("p", "stalled_seen")
    worker, first = _with_short_lease(env, Action("p", "stalled_seen", None, {"n": 1}))
    assert effect.entered.wait(30)
    time.sleep(0.1)  # past the lease: the rescuer's probe sees the effect done
    assert env.rescue().succeeded == [1]
    effect.release.set()
    worker.join(30)
    # no newer attempt, one effect: the worker's outcome is a success, not a lost lease
    assert (first[0].status, first[0].attempt, first[0].error) == ("succeeded", 1, None)
    assert [(r[1], r[2]) for r in _executions(env)] == [("succeeded", 1)]
    assert effect.performs == 1 and env.read(verify_chain).ok


def test_a_local_effect_overtaken_by_a_newer_attempt_is_rolled_back(env):
    class StalledNotify(_Stall, Notify):
        name = "stalled_notify"

        def __init__(self):
            _Stall.__init__(self)

    effect = StalledNotify()
    env.registry.register(effect)
    env.policy("page", "stalled_notify")
    action = Action("page", "stalled_notify", "ingest", {"message": "error flood"})
    first, second = _overtaken(env, effect, action)
    assert (first.status, second.status) == ("lease_lost", "succeeded")
    assert "rolled back" in first.error
    # attempt 1 wrote its alert, then lost the claim: only attempt 2's alert is left
    assert env.orch_rows("SELECT execution_id FROM alerts") == [(second.execution_id,)]
    assert [(r[1], r[2]) for r in _executions(env)] == [("failed", 1), ("succeeded", 2)]


def test_a_read_only_tasks_connection_fails_naming_the_fix(env):
    env.policy("open-task", "create_task")

    def read_only():
        conn = psycopg.connect(env.tasks)
        conn.execute("SET default_transaction_read_only = on")
        conn.commit()
        return conn

    with connection(env.orch) as conn:
        outcome = execute_action(
            conn, Action("open-task", "create_task", "T-2", {"title": "x"}), **WHO, tasks_connection=read_only
        )
    assert outcome.status == "failed" and "TasksDatabase(read_only=False)" in outcome.error


def test_execution_summary_counts_policies_and_outcomes(env):
    env.policy("a", "notify")
    env.policy("b", "notify", live=False)
    env.policy("c", "notify", enabled=False)
    env.execute(Action("a", "notify", None, {"message": "m"}))
    env.execute(Action("a", "notify", None, {"message": "m"}))
    env.execute(Action("b", "notify", None, {"message": "m"}))
    summary = env.read(execution_summary)
    assert {k: summary[k] for k in ("total", "enabled", "dry_run_on", "live_on")} == {
        "total": 3,
        "enabled": 2,
        "dry_run_on": 1,
        "live_on": 1,
    }
    assert (summary["succeeded"], summary["duplicate_skipped"], summary["simulated"]) == (1, 1, 1)
    assert summary["last_execution_at"] is not None


def test_an_unmigrated_database_is_one_error_naming_the_fix(fresh_dsn):
    with connection(fresh_dsn) as conn:
        for call in (
            lambda: execute_action(conn, Action("p", "notify", None, {"message": "m"}), **WHO),
            lambda: upsert_policy(conn, Policy("p", "p", "notify"), **WHO),
            lambda: rescue_stale_claims(conn, **WHO),
            lambda: verify_chain(conn),
            lambda: query_audit(conn, AuditFilter()),
        ):
            with pytest.raises(SchemaNotReady, match="run 'orchestration-pipeline db migrate'"):
                call()


# --- secrets in payloads ----------------------------------------------------------------------

SECRET_PAYLOAD = {
    "webhook_token": "s3cr3t-value",
    "nested": {"password": "pw-9f8e7d"},
    "note": "call it with Bearer abcdefghijklmnop",
}
REDACTED_PAYLOAD = {
    "webhook_token": "[REDACTED]",
    "nested": {"password": "[REDACTED]"},
    "note": "call it with Bearer [REDACTED]",
}
SECRETS = ("s3cr3t-value", "pw-9f8e7d", "abcdefghijklmnop")


class Recorder(Effect):
    """A remote effect that keeps the payload it was handed and echoes its token in its result."""

    name = "record"
    dry_run_safe = True

    def __init__(self):
        self.performed, self.simulated, self.probed = [], [], []

    def validate(self, target_ref, payload):
        pass

    def perform(self, ctx, run):
        self.performed.append(run.payload)
        return {"sent_token": run.payload["webhook_token"]}

    def simulate(self, ctx, run):
        self.simulated.append(run.payload)
        return {"would_send_token": run.payload["webhook_token"]}

    def probe(self, ctx, run):
        self.probed.append(run.payload)
        return ProbeResult(False, {"seen": False})


def _stored_rows(env):
    """Every row of decision_executions and alerts, as text."""
    return env.orch_rows(
        "SELECT row_to_json(d)::text FROM decision_executions d "
        "UNION ALL SELECT row_to_json(a)::text FROM alerts a"
    )


def _assert_no_secret_stored(env):
    rows = _stored_rows(env)
    assert rows
    for secret in SECRETS:
        assert secret not in repr(rows)


def test_a_live_run_stores_the_payload_redacted_and_hands_the_effect_the_original(env):
    effect = Recorder()
    env.registry.register(effect)
    env.policy("hook", "record")
    action = Action("hook", "record", None, SECRET_PAYLOAD)
    outcome = env.execute(action)
    assert outcome.status == "succeeded"
    assert effect.performed == [SECRET_PAYLOAD]
    assert outcome.result == {"sent_token": "s3cr3t-value"}  # in memory, never stored
    stored = env.orch_rows(
        "SELECT payload, result, action_hash, canonicalizer_version FROM decision_executions"
    )
    assert stored == [(REDACTED_PAYLOAD, {"sent_token": "[REDACTED]"}, action.action_hash, 1)]
    # The hash is still that of the original action.
    assert action.action_hash == Action("hook", "record", None, dict(SECRET_PAYLOAD)).action_hash
    assert action.action_hash != Action("hook", "record", None, REDACTED_PAYLOAD).action_hash
    _assert_no_secret_stored(env)


def test_notify_stores_its_alert_redacted(env):
    env.policy("page", "notify")
    payload = {
        "message": "deploy failed: Bearer abcdefghijklmnop",
        "details": {"api_key": "s3cr3t-value", "db": "postgresql://svc:pw-9f8e7d@db/x"},
    }
    outcome = env.execute(Action("page", "notify", "ingest", payload))
    assert outcome.status == "succeeded"
    assert env.orch_rows("SELECT message, details FROM alerts") == [
        (
            "deploy failed: Bearer [REDACTED]",
            {"api_key": "[REDACTED]", "db": "postgresql://svc:[REDACTED]@db/x"},
        )
    ]
    assert env.orch_rows("SELECT payload FROM decision_executions") == [
        (
            {
                "message": "deploy failed: Bearer [REDACTED]",
                "details": {"api_key": "[REDACTED]", "db": "postgresql://svc:[REDACTED]@db/x"},
            },
        )
    ]
    _assert_no_secret_stored(env)


def test_the_identical_action_with_secrets_is_a_duplicate_and_a_changed_row_still_a_conflict(env):
    effect = Recorder()
    env.registry.register(effect)
    env.policy("hook", "record")
    first = env.execute(Action("hook", "record", None, SECRET_PAYLOAD))
    assert env.orch_rows("SELECT payload FROM decision_executions") == [(REDACTED_PAYLOAD,)]
    again = env.execute(Action("hook", "record", None, dict(SECRET_PAYLOAD)))
    assert (first.status, again.status) == ("succeeded", "duplicate")
    assert again.execution_id == first.execution_id and len(effect.performed) == 1
    assert [(r[1], r[5]) for r in _executions(env)] == [("succeeded", 1)]
    # A row written before payloads were redacted holds the original: still the same action.
    with connection(env.orch) as conn:
        conn.execute("UPDATE decision_executions SET payload = %s", (Jsonb(SECRET_PAYLOAD),))
        conn.commit()
    assert env.execute(Action("hook", "record", None, SECRET_PAYLOAD)).status == "duplicate"
    # A row whose visible parameters were altered is still a conflict.
    with connection(env.orch) as conn:
        conn.execute(
            "UPDATE decision_executions SET payload = %s",
            (Jsonb({**REDACTED_PAYLOAD, "note": "call it later"}),),
        )
        conn.commit()
    with pytest.raises(ActionHashConflict, match="already belongs to execution"):
        env.execute(Action("hook", "record", None, SECRET_PAYLOAD))
    assert len(effect.performed) == 1


def test_a_dry_run_stores_the_payload_and_simulation_redacted(env):
    effect = Recorder()
    env.registry.register(effect)
    env.policy("hook", "record", live=False)
    env.policy("page", "notify", live=False)
    hook = env.execute(Action("hook", "record", None, SECRET_PAYLOAD))
    page = env.execute(
        Action("page", "notify", None, {"message": "token=s3cr3t-value", "details": SECRET_PAYLOAD})
    )
    assert (hook.status, page.status) == ("simulated", "simulated")
    assert effect.simulated == [SECRET_PAYLOAD]
    rows = env.orch_rows(
        "SELECT payload, result FROM decision_executions WHERE dry_run ORDER BY execution_id"
    )
    assert rows[0] == (REDACTED_PAYLOAD, {"simulated": True, "would_send_token": "[REDACTED]"})
    assert rows[1][0] == {"message": "token=[REDACTED]", "details": REDACTED_PAYLOAD}
    assert rows[1][1]["would_alert"]["message"] == "token=[REDACTED]"
    _assert_no_secret_stored(env)


def test_the_rescuers_probe_is_handed_the_stored_redacted_payload(env):
    class CrashingRecorder(Recorder):
        name = "crash_record"

        def perform(self, ctx, run):
            raise Crash()

    effect = CrashingRecorder()
    env.registry.register(effect)
    env.policy("hook", "crash_record")
    _crash_during(env, Action("hook", "crash_record", None, SECRET_PAYLOAD))
    assert env.rescue().failed == [1]
    assert effect.probed == [REDACTED_PAYLOAD]
    _assert_no_secret_stored(env)


def test_the_target_is_stored_redacted_like_the_alert_subject(env):
    """notify's target is the alert's subject, free text: the execution row, the dry run, the
    alert and the audit entries all hold it redacted, and the same action is still a duplicate."""
    env.policy("page", "notify")
    env.policy("page-dry", "notify", live=False)
    subject = "db postgresql://svc:pw-9f8e7d@db/x is down"
    action = Action("page", "notify", subject, {"message": "look at it"})
    first = env.execute(action)
    again = env.execute(Action("page", "notify", subject, {"message": "look at it"}))
    assert (first.status, again.status) == ("succeeded", "duplicate")
    assert again.execution_id == first.execution_id
    assert env.execute(Action("page-dry", "notify", subject, {"message": "x"})).status == "simulated"
    assert env.orch_rows("SELECT target_ref FROM decision_executions ORDER BY execution_id") == [
        ("db postgresql://svc:[REDACTED]@db/x is down",),
        ("db postgresql://svc:[REDACTED]@db/x is down",),
    ]
    _assert_no_secret_stored(env)
    assert "pw-9f8e7d" not in repr(env.orch_rows("SELECT row_to_json(a)::text FROM audit_ledger a"))
    # A row written before targets were redacted holds the original: still the same action.
    with connection(env.orch) as conn:
        conn.execute("UPDATE decision_executions SET target_ref = %s WHERE NOT dry_run", (subject,))
        conn.commit()
    assert env.execute(action).status == "duplicate"


def test_a_redacted_target_leaves_the_rescuer_unable_to_tell_and_the_retry_does_it(env):
    effect = CrashBeforeLabel()
    env.registry.register(effect)
    task_id = "T-api_key=s3cr3t-value"
    env.add_task(task_id)
    env.policy("tag", "crash_label")
    action = Action("tag", "crash_label", task_id, {"tag": "flaky"})
    _crash_during(env, action)
    _assert_no_secret_stored(env)
    assert env.rescue().failed == [1]
    assert "cannot tell" in env.orch_rows("SELECT error_text FROM decision_executions")[0][0]
    effect.crash = False
    assert env.execute(action).status == "succeeded"
    assert env.task(task_id)[1] == ["flaky"]


def test_the_rescuer_does_not_take_another_secret_for_the_one_it_was_to_write(env):
    """A title or tag that only redacts to the stored one is not proof: an older tag
    ``api_key=OLD`` on the task says nothing about whether ``api_key=NEW`` was added."""

    class CrashBeforeLabel(LabelTask):
        name = "crash_label"

        def perform(self, ctx, run):
            raise Crash()

    class CrashBeforeCreate(CreateTask):
        name = "crash_create"

        def perform(self, ctx, run):
            raise Crash()

    env.registry.register(CrashBeforeLabel())
    env.registry.register(CrashBeforeCreate())
    env.add_task("T-7", title="rotate token=OLDsecret1", tags=["api_key=OLDsecret1"])
    env.policy("tag", "crash_label")
    env.policy("open", "crash_create")
    _crash_during(env, Action("tag", "crash_label", "T-7", {"tag": "api_key=NEWsecret2"}))
    _crash_during(env, Action("open", "crash_create", "T-7", {"title": "rotate token=NEWsecret2"}))
    report = env.rescue()
    assert (report.succeeded, sorted(report.failed)) == ([], [1, 2])
    assert env.orch_rows("SELECT state FROM decision_executions") == [("failed",), ("failed",)]
