"""The live activity feed under load: SSE clients on the loopback while events are ingested.

    python benchmarks/stream.py [--clients 50] [--rate 100] [--seconds 60] [--files-per-s 10]
                                [--rooms 0] [--drain-s 15] [--dsn postgresql://...]

A scratch orchestration DB (embedded and temporary, or a fresh database on the ``--dsn`` server,
dropped at the end) is migrated; ``orchestration-pipeline serve`` runs in a subprocess on a free
loopback port; ``--clients`` clients follow ``/api/activity/stream``. A second process then
ingests ``--rate`` events per second for ``--seconds`` seconds, as ``--files-per-s`` files a
second (each file is one transaction, and ingestion sends one NOTIFY per file), noting the time
each file's transaction committed. Every client must receive every event exactly once, in
stream order. The events belong to 5 projects; with ``--rooms N`` (1 to 5) client i follows only
project ``proj-(i mod N)`` (``?project=``, the seed's room), and must receive exactly its events.

Prints one JSON line: delivery latency from commit to each client (p50, p95, max, in ms, over
every client and event), events lost, repeated and out of order (all must be 0), the serve
process's CPU while ingesting (% of one core) and its peak RSS, the ingestion's own time per
file, and what the stream hub did (reads, notifications, polls). Target: p95 <= 1000 ms, nothing
lost, repeated or delivered to a client whose filter it does not match (``unexpected``). Use ``--clients 3 --rate 20 --seconds 2`` for a quick run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from _scratch import Scratch

from orchestration_pipeline.lib.db import connection, migrate
from orchestration_pipeline.lib.telemetry import percentile

REPO_ROOT = Path(__file__).resolve().parents[1]
_ID = re.compile(rb"^id: (\d+)-([0-9a-f-]{36})$", re.MULTILINE)


PROJECTS = 5


def write_files(landing: Path, rate: int, seconds: float, files_per_s: int) -> list[tuple[Path, list[str]]]:
    """The event files to ingest, written before the clock starts: (path, event ids) each; the
    event ``n`` of the run belongs to project ``proj-(n mod 5)``."""
    landing.mkdir(parents=True, exist_ok=True)
    per_file = max(1, round(rate / files_per_s))
    count = max(1, round(seconds * files_per_s))
    files = []
    for i in range(count):
        events = []
        for j in range(per_file):
            n = i * per_file + j
            events.append(
                {
                    "event_id": str(uuid.uuid4()),
                    "event_type": "agent.progress",
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "session_id": f"bench-{n // 100}",
                    "task_id": f"T-{n // 10}",
                    "source": "bench-stream",
                    "severity": "info",
                    "status": "in_progress",
                    "payload": {
                        "agent_type": ("coder", "reviewer", "planner")[n % 3],
                        "agent_name": f"agent-{n % 7}",
                        "task_description": f"step {n} of the benchmark workload",
                        "project_id": f"proj-{n % PROJECTS}",
                    },
                }
            )
        path = landing / f"bench-{i:06d}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
        files.append((path, [e["event_id"] for e in events]))
    return files


def ingest_worker(dsn: str, files: list[tuple[str, list[str]]], interval: float, out) -> None:
    """In its own process: ingest one file every ``interval`` s; send back each file's commit time."""
    sys.path.insert(0, str(REPO_ROOT))
    from orchestration_pipeline.lib.ingestion.ingest import Ingestor

    commits, durations = [], []
    with connection(dsn) as conn:
        ingestor = Ingestor(conn, parse_workers=0)
        start = time.monotonic()
        for i, (path, ids) in enumerate(files):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            began = time.monotonic()
            ingestor.ingest_file(Path(path))  # returns right after its transaction commits
            committed = time.time()
            durations.append((time.monotonic() - began) * 1000)
            commits.append((committed, ids))
        ingestor.finish()
    out.send({"commits": commits, "ingest_ms": durations, "elapsed_s": time.monotonic() - start})
    out.close()


class Client:
    """One SSE client: when each event id arrived, how often, and whether positions only grew."""

    def __init__(self) -> None:
        self.received: dict[str, float] = {}
        self.repeated = 0
        self.out_of_order = 0
        self.connected = asyncio.Event()
        self._last: tuple[int, int] = (0, 0)

    async def run(self, url: str) -> None:
        buffer = b""
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
            async with client.stream("GET", url) as response:
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    now = time.time()
                    self.connected.set()
                    buffer += chunk
                    cut = buffer.rfind(b"\n\n")
                    if cut < 0:
                        continue
                    complete, buffer = buffer[: cut + 2], buffer[cut + 2 :]
                    for match in _ID.finditer(complete):
                        event_id = match[2].decode()
                        position = (int(match[1]), uuid.UUID(event_id).int)
                        if position <= self._last:
                            self.out_of_order += 1
                        self._last = max(self._last, position)
                        if event_id in self.received:
                            self.repeated += 1
                        else:
                            self.received[event_id] = now


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def start_server(dsn: str, home: Path) -> tuple[subprocess.Popen, str]:
    """``serve`` on a free loopback port; returns the process and its URL once it is ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "TASKS_", "QDRANT_"))}
    env.update(ORCH_DATABASE_URL=dsn, TASKS_DATABASE_URL=dsn, ORCH_HOME=str(home), ORCH_EMBEDDER="hashing")
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestration_pipeline.cli",
            "serve",
            "--port",
            "0",
            "--log-level",
            "warning",
        ],
        env=env,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    found = re.search(r"serving on (http://\S+?)/? ", line)
    if not found:
        proc.kill()
        raise SystemExit(f"serve did not start: {line}{proc.stderr.read().decode()[-2000:]}")
    url = found[1].rstrip("/")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # drained, so it never blocks
    deadline, answer = time.monotonic() + 30, "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                return proc, url
            answer = response.text
        except httpx.HTTPError as exc:
            answer = str(exc)
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"serve did not become ready within 30 s: {answer}")


async def measure(args: argparse.Namespace, dsn: str, url: str, server_pid: int, work: Path) -> dict:
    files = write_files(work / "landing", args.rate, args.seconds, args.files_per_s)
    clients = [Client() for _ in range(args.clients)]
    rooms = [f"?project=proj-{i % args.rooms}" if args.rooms else "" for i in range(args.clients)]
    tasks = [
        asyncio.create_task(c.run(f"{url}/api/activity/stream{r}"))
        for c, r in zip(clients, rooms, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 30)

    receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
    worker = multiprocessing.get_context("spawn").Process(
        target=ingest_worker, args=(dsn, [(str(p), ids) for p, ids in files], 1 / args.files_per_s, send)
    )
    cpu_before, wall_before = cpu_seconds(server_pid), time.monotonic()
    worker.start()
    report = await asyncio.to_thread(receive.recv)
    worker.join()
    cpu_used, wall = cpu_seconds(server_pid) - cpu_before, time.monotonic() - wall_before

    sent = [event_id for _, ids in files for event_id in ids]
    expected = [
        [e for n, e in enumerate(sent) if not args.rooms or n % PROJECTS == i % args.rooms]
        for i in range(args.clients)
    ]
    deadline = time.monotonic() + args.drain_s
    while time.monotonic() < deadline and any(
        len(c.received) < len(x) for c, x in zip(clients, expected, strict=True)
    ):
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    committed_at = {event_id: t for t, ids in report["commits"] for event_id in ids}
    latencies = [(c.received[e] - committed_at[e]) * 1000 for c in clients for e in sent if e in c.received]
    hub = httpx.get(f"{url}/readyz", timeout=5).json().get("stream", {})
    return {
        "clients": args.clients,
        "rooms": args.rooms,
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "files": len(files),
        "events": len(sent),
        "deliveries": len(latencies),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "max": round(max(latencies, default=0.0), 1),
        },
        "lost": sum(len(set(x) - c.received.keys()) for c, x in zip(clients, expected, strict=True)),
        "unexpected": sum(len(c.received.keys() - set(x)) for c, x in zip(clients, expected, strict=True)),
        "repeated": sum(c.repeated for c in clients),
        "out_of_order": sum(c.out_of_order for c in clients),
        "server_cpu_pct_of_one_core": round(100 * cpu_used / wall, 1),
        "server_peak_rss_mb": peak_rss_mb(server_pid),
        "ingest_ms_per_file": {
            "p50": round(percentile(report["ingest_ms"], 50), 1),
            "p95": round(percentile(report["ingest_ms"], 95), 1),
        },
        "achieved_rate_per_s": round(len(sent) / report["elapsed_s"], 1),
        "hub": {k: hub.get(k) for k in ("reads", "notifications", "polls", "catch_up_reads")},
        "target_p95_ms": 1000,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=int, default=100, help="events ingested per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--files-per-s", type=int, default=10, help="ingestion transactions per second")
    parser.add_argument(
        "--rooms", type=int, default=0, choices=range(PROJECTS + 1), help="follow N projects (0: everything)"
    )
    parser.add_argument(
        "--drain-s", type=float, default=15.0, help="how long to wait for the last deliveries"
    )
    parser.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded, temporary)")
    args = parser.parse_args()

    scratch = Scratch.open(args.dsn, "orchestration")
    server = None
    try:
        dsn = scratch.dsns["orchestration"]
        with connection(dsn) as conn:
            migrate(conn, "orchestration")
        server, url = start_server(dsn, scratch.work / "serve-home")  # not the embedded server's home
        result = asyncio.run(measure(args, dsn, url, server.pid, scratch.work))
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        scratch.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
