"""EventWriter against a real landing directory: what it writes, and that ingestion accepts it."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestration_pipeline.emit import HASH_LIMIT_BYTES, PROVIDER_TYPES, EventWriter
from orchestration_pipeline.lib.ingestion.files import discover_files
from orchestration_pipeline_tests.emit._support import assert_pairs_match, of_type, published, read_events


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return tmp_path / "landing"


def writer(landing: Path, **kwargs) -> EventWriter:
    kwargs.setdefault("source", "test-orchestrator")
    kwargs.setdefault("session_id", "sess-1")
    return EventWriter(landing, **kwargs)


def test_a_real_run_validates_and_pairs_every_start_with_an_end(landing, tmp_path):
    report = tmp_path / "out" / "report.xml"
    report.parent.mkdir()
    report.write_text("<testsuite/>")
    with writer(landing) as w:
        w.agent_started("coder", "agent-7", "refactor ingestion", project_id="proj-1")
        with w.task("T-1", title="build"):
            with w.command("make", argv=["make", "-j2"]) as c:
                c.set(targets=2)
            w.metric("warnings", 3, unit="count", target="linux")
            w.provider_selected("System", cache_hit=False)
            w.decision("used the cached toolchain", stage="plan", toolchain="gcc-14")
        with w.task("T-2", title="test"):
            with w.command("pytest"):
                pass
            w.artifacts(str(tmp_path / "out" / "*.xml"))
            w.policy_violation("build-02", "C:/agent/x.ps1", "Signing", "unsigned-script")
            w.error("db_insert", "duplicate key (id=7)")
        w.agent_progress("coder", "agent-7", "refactor ingestion", percent=50)
        w.agent_conflict_detected("coder", "agent-7", "refactor ingestion", other="agent-8")
        w.agent_paused("coder", "agent-7", "refactor ingestion")
        w.agent_error("coder", "agent-7", "refactor ingestion", message="quota")
        w.agent_completed("coder", "agent-7", "refactor ingestion")
        w.emit("task_start", {"title": "by hand"}, task_id="T-3")
        w.emit("task_end", {"success": True, "duration_ms": 1}, task_id="T-3", status="succeeded")

    events = read_events(landing)  # every line is a ParsedEvent
    kinds = Counter(e["event_type"] for e in events)
    assert kinds == {
        "task_start": 3, "task_end": 3, "command_start": 2, "command_end": 2, "metric": 3, "decision": 1,
        "artifact_emit": 1, "policy_violation": 1, "error": 1, "agent.started": 1, "agent.progress": 1,
        "agent.conflict_detected": 1, "agent.paused": 1, "agent.error": 1, "agent.completed": 1,
    }  # fmt: skip
    assert_pairs_match(events)
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(uuid.UUID(e["event_id"]).version == 4 for e in events)
    now = datetime.now(UTC)
    for e in events:
        at = datetime.fromisoformat(e["occurred_at"])
        assert at.utcoffset() == timedelta(0) and now - timedelta(minutes=1) < at <= now
        assert (e["session_id"], e["source"]) == ("sess-1", "test-orchestrator")
    # events inside a task block carry its task_id; commands too
    assert {e["task_id"] for e in of_type(events, "command_start")} == {"T-1", "T-2"}
    assert of_type(events, "metric")[0]["task_id"] == "T-1"
    assert "task_id" not in of_type(events, "agent.started")[0]
    end = of_type(events, "command_end")[0]
    assert (
        end["payload"]["exit_code"] == 0 and end["payload"]["targets"] == 2 and end["status"] == "succeeded"
    )
    assert not list(landing.glob("*.tmp"))


def test_a_task_that_raises_still_ends_and_the_exception_propagates_unchanged(landing):
    boom = ValueError("disk quota exceeded for /data")
    w = writer(landing)
    with pytest.raises(ValueError) as raised:
        with w.task("T-9", title="load") as t:
            t.set(rows=12)
            w.metric("rows", 12)
            raise boom
    assert raised.value is boom
    assert w.current_task_id is None
    w.close()
    events = read_events(landing)
    end = of_type(events, "task_end")[0]
    assert end["task_id"] == "T-9" and end["status"] == "failed" and end["severity"] == "error"
    assert end["payload"]["success"] is False
    assert end["payload"]["error_type"] == "ValueError"
    assert end["payload"]["error_message"] == "disk quota exceeded for /data"
    assert end["payload"]["rows"] == 12 and end["payload"]["title"] == "load"
    assert isinstance(end["duration_ms"], int) and end["duration_ms"] == end["payload"]["duration_ms"] >= 0
    assert_pairs_match(events)


def test_task_end_on_keyboard_interrupt_and_success_on_sys_exit_zero(landing):
    w = writer(landing)
    with pytest.raises(KeyboardInterrupt):
        with w.task("T-ctrl-c"):
            raise KeyboardInterrupt
    with pytest.raises(SystemExit):
        with w.task("T-exit-0"):
            sys.exit(0)
    with w.task("T-outer"):
        with w.task("T-inner"):
            assert w.current_task_id == "T-inner"
            w.decision("inner work")
        assert w.current_task_id == "T-outer"
    w.close()
    ends = {e["task_id"]: e["payload"] for e in of_type(read_events(landing), "task_end")}
    assert ends["T-ctrl-c"]["success"] is False and ends["T-ctrl-c"]["error_type"] == "KeyboardInterrupt"
    assert ends["T-exit-0"]["success"] is True and "error_type" not in ends["T-exit-0"]
    assert ends["T-inner"]["success"] is ends["T-outer"]["success"] is True


def test_command_exit_codes(landing):
    w = writer(landing)
    with w.command("lint") as c:
        c.exit_code = 2  # a failure reported without raising
    err = subprocess.CalledProcessError(5, ["make"])
    with pytest.raises(subprocess.CalledProcessError) as raised:
        with w.command("make"):
            raise err
    assert raised.value is err
    with pytest.raises(RuntimeError):
        with w.command("deploy") as c:
            c.exit_code = 7
            raise RuntimeError("half deployed")
    with pytest.raises(RuntimeError):
        with w.command("upload"):
            raise RuntimeError("no network")
    with pytest.raises(SystemExit):
        with w.command("cli"):
            raise SystemExit("usage: cli FILE")  # a message exits with status 1
    w.close()
    events = read_events(landing)
    assert_pairs_match(events)
    ends = {e["payload"]["command"]: e for e in of_type(events, "command_end")}
    assert {name: e["payload"]["exit_code"] for name, e in ends.items()} == {
        "lint": 2, "make": 5, "deploy": 7, "upload": 1, "cli": 1,
    }  # fmt: skip
    assert all(e["status"] == "failed" and e["payload"]["success"] is False for e in ends.values())
    assert ends["upload"]["payload"]["error_type"] == "RuntimeError"
    assert ends["make"]["payload"]["error_type"] == "subprocess.CalledProcessError"
    starts = {e["payload"]["command_id"] for e in of_type(events, "command_start")}
    assert starts == {e["payload"]["command_id"] for e in ends.values()}


def test_provider_selected_emits_both_metrics_and_rejects_unknown_providers(landing):
    w = writer(landing)
    with pytest.raises(ValueError) as raised:
        w.provider_selected("Azure", True)
    assert "Microsoft" in str(raised.value) and "System" in str(raised.value) and "Azure" in str(raised.value)
    with pytest.raises(TypeError, match="cache_hit"):
        w.provider_selected("System", "yes")
    w.provider_selected("Microsoft", True)
    w.provider_selected("system", False)  # matched case-insensitively, written canonically
    w.close()
    metrics = [(e["payload"]["name"], e["payload"]["value"], e["payload"]["tags"]["provider"]) for e in
               of_type(read_events(landing), "metric")]  # fmt: skip
    assert metrics == [
        ("provider_type", 1, "Microsoft"), ("provider_cache_hit", 1, "Microsoft"),
        ("provider_type", 2, "System"), ("provider_cache_hit", 0, "System"),
    ]  # fmt: skip
    assert PROVIDER_TYPES == {"Microsoft": 1, "System": 2}


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda w: w.decision(""), ValueError, ["rationale"]),
        (lambda w: w.decision(None), TypeError, ["rationale"]),
        (lambda w: w.metric("rows", "12"), TypeError, ["value", "float("]),
        (lambda w: w.metric("rows", True), TypeError, ["value"]),
        (lambda w: w.metric("rows", math.nan), ValueError, ["finite"]),
        (lambda w: w.metric("", 1), ValueError, ["name"]),
        (lambda w: w.metric("huge", 10**400), ValueError, ["double"]),
        (
            lambda w: w.emit("decision", {"rationale": "r"}, duration_ms=2**63),
            ValueError,
            ["duration_ms", "<="],
        ),
        (lambda w: w.metric("rows", 1, unit=5), TypeError, ["unit"]),
        (lambda w: w.metric("rows", 1, ratio=math.inf), ValueError, ["NaN"]),
        (lambda w: w.error("", "boom"), ValueError, ["stage"]),
        (lambda w: w.error("db", ""), ValueError, ["message"]),
        (lambda w: w.error("db", "boom", severity="f" * 65), ValueError, ["severity", "limit is 64"]),
        (lambda w: w.error("db", "boom", severity=3), TypeError, ["severity", "string"]),
        (
            lambda w: w.policy_violation("h", "f", "p", None),
            TypeError,
            ["rule", "policy_violations_complete"],
        ),
        (lambda w: w.policy_violation("h", "", "p", "r"), ValueError, ["file"]),
        (lambda w: w.agent_started("", "a", "t"), ValueError, ["agent_type"]),
        (lambda w: w.agent_started("coder", "a", None), TypeError, ["task_description"]),
        (lambda w: w.agent_progress("coder", "a", "t", severity="debug"), ValueError, ["severity", "info"]),
        (lambda w: w.agent_completed("coder", "a", "t", project_id=3), TypeError, ["project_id"]),
        (lambda w: w.task("T-1").set(success=False), ValueError, ["success", "set by the SDK"]),
        (lambda w: w.decision("why", note="a\x00b"), ValueError, ["NUL"]),
        (lambda w: w.decision("why", note="\udc80"), ValueError, ["surrogate"]),
        (lambda w: w.decision("why", blob="x" * (1024 * 1024)), ValueError, ["1 MiB", "artifact"]),
        (lambda w: w.task(""), ValueError, ["task_id"]),
        (lambda w: w.task(42), TypeError, ["task_id"]),
        (lambda w: w.command("make", argv="make -j2"), TypeError, ["argv", "shlex"]),
        (lambda w: w.emit("task_finished"), ValueError, ["task_end"]),
        (lambda w: w.emit("task_end", {"success": "yes", "duration_ms": 1}), TypeError, ["success"]),
        (lambda w: w.emit("command_end", {"exit_code": 0}), TypeError, ["duration_ms"]),
        (
            lambda w: w.emit("artifact_emit", {"path": "a", "size_bytes": 1}),
            ValueError,
            ["hash_skipped_reason"],
        ),
        (
            lambda w: w.emit("artifact_emit", {"path": "a", "size_bytes": 1, "sha256": "ABC"}),
            ValueError,
            ["hex"],
        ),
        (lambda w: w.emit("metric", {"name": "m", "value": 1}, status="  "), ValueError, ["status", "empty"]),
        (
            lambda w: w.emit(
                "agent.paused", {"agent_type": "a", "agent_name": "b", "task_description": ""}, status="ok"
            ),
            ValueError,
            ["status", "paused"],
        ),
        (lambda w: w.emit("decision", {"rationale": "r"}, duration_ms=-1), ValueError, ["duration_ms"]),
    ],
)
def test_helpers_reject_bad_fields_at_once_naming_the_field(landing, call, error, words):
    w = writer(landing)
    with pytest.raises(error) as raised:
        call(w)
    for word in words:
        assert word in str(raised.value)
    assert w.close() and not published(landing)  # nothing was emitted


def test_values_json_cannot_hold_are_written_as_text(landing):
    w = writer(landing)
    event = w.decision("odd values", where=Path("/srv/x"), when=datetime(2026, 1, 2, tzinfo=UTC), ids={3, 1})
    w.close()
    payload = read_events(landing)[0]["payload"]
    assert payload == {
        "rationale": "odd values",
        "where": "/srv/x",
        "when": "2026-01-02T00:00:00+00:00",
        "ids": [1, 3],
    }
    assert event["event_id"] == read_events(landing)[0]["event_id"]


def test_artifact_hashes_small_files_and_skips_big_ones_with_a_decision(landing, tmp_path):
    small = tmp_path / "small.bin"
    small.write_bytes(b"hello artifact")
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        handle.truncate(60 * 1024 * 1024)  # sparse: 60 MB on paper, nothing on disk
    w = writer(landing)
    w.artifact(small, kind="log")
    w.artifact(big)
    with pytest.raises(FileNotFoundError, match="no such file"):
        w.artifact(tmp_path / "missing.bin")
    with pytest.raises(ValueError, match="not a regular file"):
        w.artifact(tmp_path)
    w.close()
    events = read_events(landing)
    arts = {Path(e["payload"]["path"]).name: e for e in of_type(events, "artifact_emit")}
    assert arts["small.bin"]["payload"]["sha256"] == hashlib.sha256(b"hello artifact").hexdigest()
    assert arts["small.bin"]["payload"]["size_bytes"] == 14 and arts["small.bin"]["payload"]["kind"] == "log"
    assert arts["small.bin"]["payload"]["path"] == str(small)  # absolute
    skipped = arts["big.bin"]["payload"]
    assert "sha256" not in skipped and skipped["size_bytes"] == 60 * 1024 * 1024 > HASH_LIMIT_BYTES
    assert "hashing limit" in skipped["hash_skipped_reason"]
    (decision,) = of_type(events, "decision")
    assert decision["payload"]["artifact_path"] == str(big)
    assert decision["payload"]["artifact_event_id"] == arts["big.bin"]["event_id"]
    assert "big.bin" in decision["payload"]["rationale"] and "not hash" in decision["payload"]["rationale"]


def test_artifacts_emits_one_event_per_matching_file(landing, tmp_path):
    out = tmp_path / "results"
    (out / "nested").mkdir(parents=True)
    for name in ("a.xml", "b.xml", "nested/c.xml", "notes.txt"):
        (out / name).write_text(name)
    w = writer(landing)
    assert len(w.artifacts(out / "**" / "*.xml", suite="unit")) == 3
    assert w.artifacts(out / "*.none") == []
    w.close()
    arts = of_type(read_events(landing), "artifact_emit")
    assert sorted(Path(e["payload"]["path"]).name for e in arts) == ["a.xml", "b.xml", "c.xml"]
    assert all(e["payload"]["suite"] == "unit" and len(e["payload"]["sha256"]) == 64 for e in arts)


def test_concurrent_threads_lose_no_events_across_rotated_files(landing):
    threads, per_thread, limit = 8, 2_000, 16 * 1024
    w = writer(landing, max_file_bytes=limit)
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            if i % 500 == 0:
                with w.task(f"T-{n}-{i}"):
                    w.metric("seq", i, thread=n)
            else:
                w.metric("seq", i, thread=n)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert w.close()
    files = published(landing)
    assert len(files) > 10, "a small size limit must rotate the spool many times"
    assert all(p.stat().st_size <= limit for p in files)
    events = read_events(landing)
    seen = Counter((e["payload"]["tags"]["thread"], e["payload"]["value"]) for e in of_type(events, "metric"))
    assert len(seen) == threads * per_thread and set(seen.values()) == {1}
    assert len({e["event_id"] for e in events}) == len(events) == threads * per_thread + threads * 4 * 2
    # task blocks in one thread never leak their task_id into another thread's events
    for e in of_type(events, "metric"):
        expected = f"T-{e['payload']['tags']['thread']}-{e['payload']['value']}"
        assert e.get("task_id") == (expected if e["payload"]["value"] % 500 == 0 else None)
    assert_pairs_match(events)
    assert not list(landing.glob("*.tmp"))


def test_an_idle_spool_is_published_when_it_gets_old(landing):
    w = writer(landing, max_file_age_s=0.2)
    w.decision("published by the background thread, without flush or close")
    deadline = time.monotonic() + 5
    while not published(landing) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(read_events(landing)) == 1
    while w.pending and time.monotonic() < deadline:  # the thread's bookkeeping follows the rename
        time.sleep(0.01)
    assert w.pending == 0
    w.close()
    assert len(published(landing)) == 1


def test_file_names_are_unique_and_tmp_files_are_not_ingested(landing):
    w = writer(landing, source="nightly build/α")
    for i in range(5):
        w.metric("n", i)
        assert w.flush()
    w.close()
    names = [p.name for p in published(landing)]
    assert len(names) == len(set(names)) == 5
    assert all(name.startswith("nightly-build.") and f".{os.getpid()}." in name for name in names)
    assert discover_files([landing]) == [p.resolve() for p in published(landing)]


def test_emitting_after_close_still_publishes(landing):
    w = writer(landing)
    w.metric("before", 1)
    assert w.close()
    w.metric("after", 2)  # e.g. from another atexit hook: written at once, in its own file
    assert [e["payload"]["name"] for e in read_events(landing)] == ["before", "after"]
    assert w.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_its_own_events_only(landing):
    w = writer(landing)
    w.metric("parent-before-fork", 1)  # queued, not yet published
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            w.metric("child", 2)
            code = 0 if w.close() else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    w.metric("parent-after-fork", 3)
    assert w.close()
    names = Counter(e["payload"]["name"] for e in read_events(landing))
    assert names == {"parent-before-fork": 1, "child": 1, "parent-after-fork": 1}
    pids = {p.name.split(".")[2] for p in published(landing)}
    assert pids == {str(os.getpid()), str(pid)}


def test_a_failed_task_with_a_huge_title_still_ends(landing):
    # task_start fit under the 1 MiB line limit; task_end adds the error message and did not
    title = "t" * (1024 * 1024 - 400)
    with pytest.raises(RuntimeError), writer(landing) as w, w.task("BIG-1", title=title):
        raise RuntimeError("boom " * 700)
    (end,) = of_type(read_events(landing), "task_end")
    payload = end["payload"]
    assert payload["success"] is False and payload["error_type"] == "RuntimeError"
    assert payload["dropped_fields"] == ["error_message", "title"] and len(payload["error_message"]) == 2000
    assert "title" not in payload


def test_stamps_never_go_back_when_the_clock_does(landing, monkeypatch):
    import orchestration_pipeline.emit._envelope as envelope

    real = time.time_ns
    offset = [0]
    monkeypatch.setattr(envelope.utc_now, "__defaults__", (lambda: real() + offset[0],))
    with writer(landing) as w, w.task("SKEW-1"):
        offset[0] = -2_000_000_000  # NTP steps the clock back 2 s inside the task
    start, end = of_type(read_events(landing), "task_start")[0], of_type(read_events(landing), "task_end")[0]
    assert end["occurred_at"] >= start["occurred_at"]
