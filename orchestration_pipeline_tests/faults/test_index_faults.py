"""Faults around the index sync, with real processes: a sync killed with SIGKILL, two sync
processes at once, and a Qdrant server that is not there."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.index import outbox
from orchestration_pipeline.lib.index.decisions import put_decisions
from orchestration_pipeline.lib.index.embedders import HashingEmbedder
from orchestration_pipeline.lib.index.host_client import HostClient, stop_host
from orchestration_pipeline.lib.index.location import CollectionSettings
from orchestration_pipeline.lib.index.server import ServerIndex
from orchestration_pipeline.lib.index.sync import SyncSettings, sync_outbox
from orchestration_pipeline_tests.index._support import RATIONALES

pytestmark = [pytest.mark.db, pytest.mark.slow]


@pytest.fixture
def index_path(tmp_path):
    path = tmp_path / "qdrant"
    yield path
    stop_host(path)


def _seed(dsn: str, n: int, round_: int = 0) -> None:
    with connection(dsn) as conn:
        put_decisions(
            conn,
            [{"decision_id": f"f{i}", "rationale": f"{RATIONALES[i % 10]} (#{i}, round {round_})",
              "org_id": f"org-{i % 3}"} for i in range(n)],
        )  # fmt: skip
        conn.commit()


def _worker(dsn, path, started, batch=20, delay_s=0.2) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration_pipeline_tests.faults._index_sync_worker",
         dsn, str(path), str(batch), str(delay_s), str(started)],
        start_new_session=True,
    )  # fmt: skip


def _client(path) -> HostClient:
    client = HostClient(path)
    embedder = HashingEmbedder()
    client.ensure_collection(CollectionSettings(dimension=embedder.dimension, embedder=embedder.name))
    return client


def _agreement(dsn: str, client: HostClient) -> tuple[dict, dict, int]:
    with connection(dsn) as conn:
        current = dict(conn.execute("SELECT decision_id, version FROM decisions").fetchall())
        open_rows = conn.execute("SELECT count(*) FROM search_outbox WHERE done_at IS NULL").fetchone()[0]
    return current, {s.decision_id: s.version for s in client.states()}, open_rows


def test_a_sync_killed_midway_loses_nothing_and_the_rerun_indexes_current_versions(
    orch_dsn, index_path, tmp_path
):
    _seed(orch_dsn, 200)
    started = tmp_path / "started"
    proc = _worker(orch_dsn, index_path, started)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the sync never finished a batch"
        time.sleep(0.05)
    _seed(orch_dsn, 50, round_=1)  # new versions of rows the killed sync may hold
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with connection(orch_dsn) as conn:
        leased = conn.execute("SELECT count(*) FROM search_outbox WHERE lease_owner IS NOT NULL").fetchone()[
            0
        ]
        conn.execute("UPDATE search_outbox SET lease_expires_at = now() WHERE lease_owner IS NOT NULL")
        conn.commit()  # the lease of the dead sync runs out (here at once, instead of after lease_s)
        client = _client(index_path)
        rerun = sync_outbox(conn, client, HashingEmbedder())
    current, indexed, open_rows = _agreement(orch_dsn, client)
    client.close()
    assert leased > 0, "the kill should have caught the sync holding a lease"
    assert rerun.claimed > 0
    assert indexed == current and open_rows == 0  # every decision, each at its current version


def test_two_sync_processes_at_once_index_each_decision_once_at_its_highest_version(
    orch_dsn, index_path, tmp_path
):
    _seed(orch_dsn, 300)
    workers = [
        _worker(orch_dsn, index_path, tmp_path / f"started-{i}", batch=25, delay_s=0.05) for i in range(2)
    ]
    _seed(orch_dsn, 100, round_=1)
    for proc in workers:
        assert proc.wait(timeout=120) == 0
    with connection(orch_dsn) as conn:
        client = _client(index_path)
        sync_outbox(conn, client, HashingEmbedder())  # whatever arrived after both workers drained
    current, indexed, open_rows = _agreement(orch_dsn, client)
    client.close()
    assert indexed == current and open_rows == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_qdrant_server_that_is_down_keeps_retries_bounded_and_loses_nothing(orch_dsn):
    _seed(orch_dsn, 30)
    server = ServerIndex(f"http://127.0.0.1:{_closed_port()}", None, timeout_s=2)
    settings = SyncSettings(retry=outbox.RetryPolicy(max_attempts=3, base_delay_s=0))
    with connection(orch_dsn) as conn:
        started = time.monotonic()
        reports = [sync_outbox(conn, server, HashingEmbedder(), settings) for _ in range(3)]
        elapsed = time.monotonic() - started
        dead = conn.execute("SELECT count(*), min(error_class) FROM search_dead_letters").fetchone()
        decisions = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    assert [r.retrying for r in reports] == [30, 30, 0]
    assert [r.dead_lettered for r in reports] == [0, 0, 30]  # only once the retries are spent
    assert dead == (30, "IndexUnavailable") and decisions == 30
    assert elapsed < 30, "a closed port must fail fast, not once per item"
