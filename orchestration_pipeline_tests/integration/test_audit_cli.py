"""`policy`, `decisions` and `audit` through the real console script, against configured servers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline_tests.conftest import clean_env

pytestmark = pytest.mark.db

CLI = str(Path(sys.executable).parent / "orchestration-pipeline")


@pytest.fixture
def run(orch_dsn, tasks_dsn, tmp_path):
    env = clean_env(
        ORCH_HOME=str(tmp_path / "home"),
        ORCH_DATABASE_URL=orch_dsn,
        TASKS_DATABASE_URL=tasks_dsn,
        ORCH_ACTOR="oncall:carol",
    )

    def _run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    with connection(tasks_dsn) as conn:
        conn.execute("INSERT INTO tasks (task_id, title) VALUES ('T-42', 'Flaky integration test')")
        conn.commit()
    return _run


def test_policy_execution_and_forensics_from_the_shell(run, orch_dsn, tasks_dsn):
    run("policy", "set", "tag-flaky", "--effect", "label", "--reason", "new rule", "--request-id", "chg-1")
    run("policy", "set", "tag-flaky", "--enable", "--live", "--request-id", "chg-2")
    listed = json.loads(run("policy", "list", "--json").stdout)
    assert listed == {
        "policy_id": "tag-flaky",
        "name": "tag-flaky",
        "effect": "label",
        "enabled": True,
        "dry_run": False,
    }

    payload = '{"tag": "flaky"}'
    first = json.loads(
        run("decisions", "execute", "tag-flaky", "--target", "T-42", "--payload", payload, "--json").stdout
    )
    again = json.loads(
        run("decisions", "execute", "tag-flaky", "--target", "T-42", "--payload", payload, "--json").stdout
    )
    assert (first["status"], again["status"]) == ("succeeded", "duplicate")
    with connection(tasks_dsn) as conn:
        assert conn.execute("SELECT tags FROM tasks WHERE task_id = 'T-42'").fetchone()[0] == ["flaky"]

    entries = [
        json.loads(line)
        for line in run("audit", "query", "--entity", "policy:tag-flaky", "--json").stdout.splitlines()
    ]
    assert [(e["operation"], e["request_id"], e["actor"]) for e in entries] == [
        ("update", "chg-2", "oncall:carol"),
        ("create", "chg-1", "oncall:carol"),
    ]
    text = run("audit", "query", "--actor", "oncall:carol", "--since", "1h").stdout
    assert "decision_execution:1" in text and "policy:tag-flaky" in text and "reason: new rule" in text
    assert (
        run("audit", "query", "--since", "2000-01-01", "--until", "2000-01-02").stdout.strip()
        == "no audit entries match"
    )
    assert run("audit", "verify").stdout.startswith("ok: 4 entries")
    assert "4 newer entries not sealed yet" in run("audit", "verify").stdout
    sealed = json.loads(run("audit", "checkpoint", "--json").stdout)
    assert (sealed["created"], sealed["entries"], sealed["busy"]) == (1, 4, None)
    assert "nothing new to seal; newest checkpoint #1" in run("audit", "checkpoint").stdout
    assert "1 checkpoint; 0 newer entries" in run("audit", "verify").stdout

    with connection(orch_dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE audit_ledger SET reason = 'nothing to see' WHERE request_id = 'chg-1'")
        conn.commit()
    broken = run("audit", "verify", ok=False)
    assert (
        broken.returncode == 1
        and "broken at audit_id 1" in broken.stderr
        and "runbooks/audit.md" in broken.stderr
    )
    report = json.loads(run("audit", "verify", "--json", ok=False).stdout)
    assert report["first_broken"]["audit_id"] == 1 and report["first_broken"]["kind"] == "row_hash"


def test_failures_and_refusals_exit_non_zero_naming_the_fix(run):
    run("policy", "set", "open", "--effect", "create_task", "--enable", "--live")
    refused = run("decisions", "execute", "open", "--payload", '{"titel": "typo"}', ok=False)
    assert refused.returncode == 1 and "unknown payload field(s) titel" in refused.stderr
    new = run("policy", "set", "mystery", ok=False)
    assert new.returncode == 2 and "give --effect" in new.stderr
    bad_time = run("audit", "query", "--since", "last tuesday", ok=False)
    assert bad_time.returncode == 1 and "use e.g. 30m, 24h, 7d" in bad_time.stderr
    assert "rescue" in run("decisions", "--help").stdout
    rescued = json.loads(run("decisions", "rescue", "--json").stdout)
    assert rescued == {"examined": 0, "succeeded": [], "failed": [], "skipped": []}


def test_decisions_print_results_with_their_secrets_redacted(run):
    """What the CLI prints ends up in CI and job logs: the result as stored, not as the effect
    returned it (label echoes its tag)."""
    run("policy", "set", "tag-it", "--effect", "label", "--enable", "--live")
    payload = '{"tag": "api_key=s3cr3t-value"}'
    args = ("decisions", "execute", "tag-it", "--target", "T-42", "--payload", payload)
    printed = run(*args).stdout + run(*args, "--json").stdout + run(*args, "--dry-run", "--json").stdout
    printed += run("decisions", "list", "--json").stdout
    assert "api_key=[REDACTED]" in printed
    assert "s3cr3t-value" not in printed


def test_a_checkpoint_blocked_by_an_open_audited_transaction_exits_1_and_says_why(run, orch_dsn):
    from orchestration_pipeline.lib.audit.ledger import record_audit

    run("policy", "set", "p", "--effect", "notify")
    with connection(orch_dsn) as holder:
        record_audit(
            holder, actor="a", request_id="r", operation="update", entity_type="policy", entity_id="p"
        )
        busy = run("audit", "checkpoint", "--wait-ms", "20", ok=False)
        pid = holder.info.backend_pid
        holder.rollback()
    assert busy.returncode == 1 and f"still open after 20 ms (pids {pid})" in busy.stderr
    assert "raise --wait-ms" in busy.stderr
    assert busy.stdout.startswith("nothing sealed: audited transactions are still open")
    assert json.loads(run("audit", "checkpoint", "--json").stdout)["entries"] == 1
