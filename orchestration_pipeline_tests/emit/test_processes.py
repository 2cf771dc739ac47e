"""The SDK in real processes: SIGKILL mid-write, CLI entrypoints, atexit, import cost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestration_pipeline.emit import EventWriter, command_wrapper
from orchestration_pipeline.lib.ingestion.envelope import ParsedEvent
from orchestration_pipeline.lib.ingestion.events import parse_line
from orchestration_pipeline.lib.ingestion.files import discover_files
from orchestration_pipeline_tests.emit._support import assert_pairs_match, of_type, published, read_events

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


TIGHT_LOOP = """
    import os, sys, time
    from orchestration_pipeline.emit import EventWriter

    if sys.argv[2] == "inside-a-write":
        # Make the 30th write stop halfway, say so, and hang: the parent kills the process there.
        real_write, calls = os.write, [0]

        def write(fd, data):
            calls[0] += 1
            if calls[0] == 30:
                real_write(fd, bytes(data[: len(data) // 2]))
                print("MIDWRITE", flush=True)
                time.sleep(60)
            return real_write(fd, data)

        os.write = write

    w = EventWriter(sys.argv[1], source="crasher", session_id="s", max_file_bytes=256 * 1024, max_file_age_s=0.05)
    i = 0
    while True:
        w.metric("n", i, pad="x" * (2000 + (i * 7919) % 30000))  # big, varied lines
        i += 1
        if i % 40 == 0:
            w.flush()
"""


def check_published_files_are_whole(landing: Path) -> list[Path]:
    """Every published file: each line complete, valid JSON and a ParsedEvent; none twice."""
    files = published(landing)
    values = []
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path.name} ends in a partial line"
        for raw in data.split(b"\n")[:-1]:
            json.loads(raw)
            parsed = parse_line(raw)
            assert isinstance(parsed, ParsedEvent), parsed
            values.append(parsed.payload["value"])
    assert len(values) == len(set(values))
    found = discover_files([landing])
    assert found == [p.resolve() for p in files]  # .tmp leftovers are ignored by ingestion
    return files


def test_sigkill_at_a_random_moment_leaves_no_partial_line_visible_to_ingestion(tmp_path):
    landing = tmp_path / "landing"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(TIGHT_LOOP), str(landing), "anywhere"], cwd=REPO
    )
    try:
        deadline = time.monotonic() + 30
        while len(published(landing)) < 20 and time.monotonic() < deadline:  # well into the loop
            assert proc.poll() is None, "the emitting process died on its own"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(check_published_files_are_whole(landing)) >= 20
    assert all(p.name.endswith(".jsonl.tmp") for p in landing.glob("*.tmp"))


def test_sigkill_inside_a_write_leaves_the_half_written_file_invisible_to_ingestion(tmp_path):
    landing = tmp_path / "landing"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(TIGHT_LOOP), str(landing), "inside-a-write"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "MIDWRITE"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    (half_written,) = [p for p in landing.iterdir() if not p.read_bytes().endswith(b"\n")]
    assert half_written.name.endswith(".jsonl.tmp")  # the partial line exists, but only in a .tmp
    assert len(check_published_files_are_whole(landing)) >= 2


def test_command_wrapper_emits_command_end_on_system_exit_and_keyboard_interrupt(tmp_path):
    landing = tmp_path / "landing"
    exit3 = SystemExit(3)
    ctrl_c = KeyboardInterrupt()

    @command_wrapper(landing, source="cli", session_id="s")
    def exits() -> None:
        raise exit3

    @command_wrapper(landing, name="interrupted", source="cli", session_id="s")
    def interrupted() -> None:
        raise ctrl_c

    @command_wrapper(landing, source="cli", session_id="s")
    def returns_status(code: int) -> int:
        return code

    @command_wrapper(landing, source="cli", session_id="s")
    def fails() -> None:
        raise LookupError("no such job")

    with pytest.raises(SystemExit) as raised:
        exits()
    assert raised.value is exit3 and raised.value.code == 3
    with pytest.raises(KeyboardInterrupt) as raised:
        interrupted()
    assert raised.value is ctrl_c
    assert returns_status(0) == 0 and returns_status(4) == 4
    with pytest.raises(LookupError):
        fails()

    events = read_events(landing)  # each call's writer was closed: everything is published
    assert_pairs_match(events)
    ends = [(e["payload"]["command"].rsplit(".", 1)[-1], e["payload"]["exit_code"]) for e in
            of_type(events, "command_end")]  # fmt: skip
    assert sorted(ends) == sorted([("exits", 3), ("interrupted", 130), ("returns_status", 0),
                                   ("returns_status", 4), ("fails", 1)])  # fmt: skip
    failed = {e["payload"]["command"].rsplit(".", 1)[-1]: e for e in of_type(events, "command_end")
              if e["payload"]["exit_code"]}  # fmt: skip
    assert failed["interrupted"]["payload"]["error_type"] == "KeyboardInterrupt"
    assert failed["fails"]["payload"]["error_message"] == "no such job"


def test_command_wrapper_with_a_shared_writer(tmp_path):
    landing = tmp_path / "landing"
    w = EventWriter(landing, source="cli", session_id="s")

    @command_wrapper(w, name="step")
    def step(n: int) -> str:
        w.metric("inside", n)
        return f"done {n}"

    @command_wrapper(lambda: w, name="lazy")
    def lazy() -> None:
        sys.exit(0)

    assert step(1) == "done 1"
    with pytest.raises(SystemExit):
        lazy()
    assert w.close()
    events = read_events(landing)
    assert_pairs_match(events)
    assert [e["payload"]["exit_code"] for e in of_type(events, "command_end")] == [0, 0]
    with pytest.raises(TypeError, match="EventWriter"):
        command_wrapper(42)


CLI_SCRIPT = """
    import sys
    from orchestration_pipeline.emit import EventWriter, command_wrapper

    writer = EventWriter(sys.argv[1], source="deploy", session_id="sess-cli")  # never closed by hand

    @command_wrapper(writer, name="deploy")
    def main() -> None:
        with writer.task("T-deploy", title="deploy"):
            writer.metric("hosts", 3)
            if sys.argv[2] == "interrupt":
                raise KeyboardInterrupt
            sys.exit(3)

    main()
"""


# an uncaught KeyboardInterrupt ends Python by SIGINT (so the shell sees 130)
@pytest.mark.parametrize("how, status, exit_code", [("exit", 3, 3), ("interrupt", -signal.SIGINT, 130)])
def test_a_cli_that_exits_publishes_its_events_at_exit(tmp_path, how, status, exit_code):
    landing = tmp_path / "landing"
    result = run_python(CLI_SCRIPT, str(landing), how)
    assert result.returncode == status, result.stderr
    events = read_events(landing)  # published by the atexit hook, not by the script
    assert_pairs_match(events)
    (end,) = of_type(events, "command_end")
    assert end["payload"]["exit_code"] == exit_code and end["status"] == "failed"
    (task_end,) = of_type(events, "task_end")
    assert task_end["payload"]["success"] is False
    assert not list(landing.glob("*.tmp"))


def test_importing_the_sdk_loads_no_database_dagster_or_pydantic():
    result = run_python(
        """
        import json, sys
        import orchestration_pipeline.emit
        print(json.dumps(sorted(sys.modules)))
        """
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "orchestration_pipeline.emit" in loaded
    for banned in ("dagster", "psycopg", "psycopg2", "pydantic", "sqlalchemy", "qdrant_client",
                   "orchestration_pipeline.lib.ingestion.ingest", "orchestration_pipeline.lib.db",
                   "orchestration_pipeline.lib.ingestion.events"):  # fmt: skip
        assert banned not in loaded, f"importing the SDK loaded {banned}"
    assert not [m for m in loaded if m.startswith(("dagster", "psycopg"))]


def test_a_writer_that_was_never_closed_is_flushed_at_exit(tmp_path):
    landing = tmp_path / "landing"
    result = run_python(
        """
        import sys
        from orchestration_pipeline.emit import EventWriter
        w = EventWriter(sys.argv[1], source="forgetful", session_id="s")
        for i in range(1000):
            w.metric("n", i)
        """,
        str(landing),
    )
    assert result.returncode == 0, result.stderr
    assert sorted(e["payload"]["value"] for e in read_events(landing)) == list(range(1000))
    assert os.listdir(landing) == [p.name for p in published(landing)]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_children_that_never_close_still_publish(tmp_path, method):
    # a multiprocessing child ends with os._exit, which skips atexit: its events were lost
    landing = tmp_path / "landing"
    script = tmp_path / "children.py"  # spawn and forkserver import the main module by its path
    script.write_text(
        textwrap.dedent(
            """
        import multiprocessing, sys
        from orchestration_pipeline.emit import EventWriter

        def own(landing, n):
            w = EventWriter(landing, source="child", session_id=f"own-{n}")
            w.metric("own", n)

        def inherited(n):
            shared.metric("inherited", n)

        if __name__ == "__main__":
            ctx = multiprocessing.get_context(sys.argv[2])
            shared = EventWriter(sys.argv[1], source="parent", session_id="shared")
            jobs = [ctx.Process(target=own, args=(sys.argv[1], n)) for n in range(3)]
            if sys.argv[2] == "fork":
                jobs += [ctx.Process(target=inherited, args=(n,)) for n in range(3)]
            for job in jobs:
                job.start()
            for job in jobs:
                job.join()
            shared.close()
        """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script), str(landing), method],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    values = Counter((e["payload"]["name"], e["payload"]["value"]) for e in read_events(landing))
    expected = Counter(("own", n) for n in range(3))
    if method == "fork":
        expected.update(("inherited", n) for n in range(3))
    assert values == expected
