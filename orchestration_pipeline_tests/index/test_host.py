"""The shard host: one process owns the shard, clients in other processes search while one writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration_pipeline.lib.index.edge import EdgeIndex
from orchestration_pipeline.lib.index.host import host_running, socket_address
from orchestration_pipeline.lib.index.host_client import HostClient, stop_host
from orchestration_pipeline.lib.index.location import (
    IndexConfigMismatch,
    IndexUnavailable,
    SearchFilter,
    VectorIndex,
    VectorIndexLocation,
)
from orchestration_pipeline.lib.index.open import drop_index, open_index, open_local_index
from orchestration_pipeline_tests.index._engine import SETTINGS, make_points

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def path(tmp_path: Path):
    """An index directory whose host (if any test started one) is stopped afterwards."""
    directory = tmp_path / "qdrant"
    yield directory
    stop_host(directory)


@pytest.fixture
def client(path: Path):
    c = HostClient(path, idle_seconds=120)
    c.ensure_collection(SETTINGS)
    yield c
    c.close()


def _wait(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    """True once ``pid`` exited (a zombie left by our own Popen counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_client_starts_the_host_and_uses_the_index(client: HostClient, path: Path) -> None:
    assert isinstance(client, VectorIndex)
    points = make_points(20)
    assert client.upsert(points).written == 20
    assert client.search(points[4].vector, 1)[0].decision_id == "d4"
    assert {h.decision_id for h in client.search(points[0].vector, 50, SearchFilter(org_id="org-b"))} == {
        p.decision_id for p in points if p.payload["org_id"] == "org-b"
    }
    assert client.count() == 20 and len(list(client.states())) == 20
    assert client.delete([("d0", 1)]).written == 1
    assert client.payload_indexes()["created_at"] == "float"
    client.optimize()
    facts = client.host_facts()
    assert facts["pid"] != os.getpid() and facts["address"] == socket_address(path)
    assert (path / "host.key").stat().st_mode & 0o777 == 0o600
    assert host_running(path)


def test_errors_in_the_host_arrive_as_their_own_class(client: HostClient) -> None:
    with pytest.raises(IndexConfigMismatch, match="index rebuild"):
        client.ensure_collection(SETTINGS.__class__(dimension=8, embedder="other"))
    with pytest.raises(ValueError, match="has 2 dimensions"):
        client.upsert([make_points(1, dim=2)[0]])
    assert client.count() == 0  # the connection is still good


def test_readers_never_see_half_a_batch_while_a_writer_writes(
    client: HostClient, path: Path, tmp_path: Path
) -> None:
    done = tmp_path / "done"
    readers = []
    for n in range(2):
        ready, out = tmp_path / f"ready{n}", tmp_path / f"out{n}.json"
        command = [sys.executable, "-m", "orchestration_pipeline_tests.index._host_workers", "reader"]
        proc = subprocess.Popen([*command, str(path), str(ready), str(done), str(out)], cwd=REPO_ROOT)
        readers.append((proc, ready, out))
    _wait(lambda: all(ready.exists() for _, ready, _ in readers), timeout=60)
    writer = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestration_pipeline_tests.index._host_workers",
            "writer",
            str(path),
            "20",
            str(done),
        ],
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert writer.returncode == 0
    for proc, _, out in readers:
        assert proc.wait(timeout=60) == 0
        summary = json.loads(out.read_text())
        assert summary["errors"] == [] and summary["bad"] == []
        assert summary["calls"] >= 10
        assert len(summary["seen"]) >= 3  # the reads overlapped the writes
    assert client.count() == 2000


def test_a_killed_host_is_replaced_and_nothing_written_is_lost(client: HostClient, path: Path) -> None:
    points = make_points(300)
    client.upsert(points)
    pid = client.host_facts()["pid"]
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: _gone(pid) and not host_running(path))
    assert Path(socket_address(path)).exists()  # the dead socket is still there
    assert client.count() == 300  # reconnects, starts a new host, which replays the WAL
    assert client.host_facts()["pid"] != pid
    assert client.search(points[7].vector, 1)[0].decision_id == "d7"


def test_a_second_host_exits_quietly_and_leaves_the_first_alone(client: HostClient, path: Path) -> None:
    client.upsert(make_points(10))
    first = client.host_facts()["pid"]
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "orchestration_pipeline.lib.index.host", str(path), "--idle-seconds", "60"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0, second.stderr
    assert "another index host owns" in second.stderr
    assert time.monotonic() - started < 30
    assert client.host_facts()["pid"] == first
    assert client.count() == 10


def test_an_idle_host_exits_cleanly_and_the_next_call_starts_another(path: Path) -> None:
    client = HostClient(path, idle_seconds=0.5)
    client.ensure_collection(SETTINGS)
    client.upsert(make_points(5))
    pid = client.host_facts()["pid"]
    _wait(lambda: not host_running(path))
    assert not Path(socket_address(path)).exists()
    assert "stopped (idle for 0.5 s)" in (path / "host.log").read_text()
    assert client.count() == 5
    assert client.host_facts()["pid"] != pid
    client.close()


def test_sigterm_closes_the_shard_and_removes_the_socket(client: HostClient, path: Path) -> None:
    client.upsert(make_points(5))
    pid = client.host_facts()["pid"]
    os.kill(pid, signal.SIGTERM)
    _wait(lambda: not host_running(path))
    assert not Path(socket_address(path)).exists()
    assert "stopped (SIGTERM)" in (path / "host.log").read_text()
    with open_local_index(path) as local:  # closed cleanly: another process may open it
        assert local.count() == 5


def test_stop_host_stops_it_and_reports_when_none_runs(client: HostClient, path: Path) -> None:
    client.count()
    assert stop_host(path) is True
    assert not host_running(path) and not Path(socket_address(path)).exists()
    assert stop_host(path) is False
    assert stop_host(path.parent / "never-used") is False


def test_a_shard_held_by_another_process_is_reported_per_call(path: Path) -> None:
    with EdgeIndex(path) as holder:
        holder.ensure_collection(SETTINGS)
        client = HostClient(path, idle_seconds=30)
        with pytest.raises(IndexUnavailable, match="open in another process"):
            client.count()
        client.close()


def test_a_host_that_cannot_start_is_reported_with_its_log(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_INDEX_HOST_IDLE_S", "soon")
    with pytest.raises(IndexUnavailable, match=r"exited with status 1: see .*host\.log.*is not a number"):
        HostClient(path).count()


def test_a_long_directory_gets_its_socket_elsewhere(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60) / "qdrant"
    assert not socket_address(deep).startswith(str(deep))
    try:
        client = HostClient(deep, idle_seconds=30)
        client.ensure_collection(SETTINGS)
        assert client.upsert(make_points(3)).written == 3
        client.close()
    finally:
        stop_host(deep)


def test_open_index_and_drop_index(path: Path) -> None:
    location = VectorIndexLocation("edge", str(path))
    index = open_index(location)
    assert isinstance(index, HostClient)
    index.ensure_collection(SETTINGS)
    index.upsert(make_points(4))
    drop_index(location)
    assert not host_running(path) and not (path / "index.json").exists()
    other = SETTINGS.__class__(dimension=8, embedder="another")
    index.ensure_collection(other)  # a new host, an empty index for the new embedder
    assert index.count() == 0
    index.close()


@pytest.mark.slow
def test_a_client_that_never_answers_does_not_hold_up_others_or_the_exit(
    client: HostClient, path: Path
) -> None:
    import os
    import signal
    import socket

    pid = client.host_facts()["pid"]
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(socket_address(path))  # connects, never authenticates
    try:
        assert client.count() == 0  # the host still serves the others
        os.remove(socket_address(path))  # its socket gone (its directory deleted under it)
        os.kill(pid, signal.SIGTERM)
        _wait(lambda: _gone(pid), timeout=30)
    finally:
        silent.close()
