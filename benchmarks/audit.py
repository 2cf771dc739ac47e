"""Audited mutations against the same mutations without the audit, in one run.

    python benchmarks/audit.py [--writers 8] [--seconds 3] [--rounds 3] [--dsn postgresql://...]

The mutation is a typical critical one: switch one policy's ``enabled`` flag (an UPDATE), one
committed transaction each, from --writers processes, spread over --rows policies so that
writers touch different entities (each writer owns its policies, so it knows the before and
after it records). (a) baseline: the UPDATE alone; (b) audited: the same UPDATE through
``audited()``, which writes the entry with before/after in the same statement (chain trigger,
sha256); (c) ``record_audit()``: the same entry as a second statement after the UPDATE, for
comparison. Rounds rotate the variants so all see the same machine noise; medians are reported
(WAL bytes are cluster-wide: they mean something only when nothing else writes). Finally
``checkpoint_ledger()`` seals and ``verify_chain()`` recomputes everything written. Prints one
JSON line. Targets: overhead of (b) <= 30 %, (b) >= 3,000 transactions/s (the ceiling supa_audit
states).

Where the time goes (``cpu_us_per_tx``, one writer, CPU microseconds per transaction of this
client process and of its server backend, read from /proc when the server is on this machine):
``baseline``; ``plain_insert``, the same 12 columns inserted as a second statement into a table
with no index, trigger or chain (``audit_baseline.sql``), the floor of any design that writes the
audit row as a statement of its own; ``audited`` and ``record_audit``. When writers saturate the
CPU, client and server share it, so ``*_cpu_overhead_pct`` is about the overhead each costs in
the throughput figures.
Without --dsn an embedded PostgreSQL is started in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

from _scratch import Scratch

from orchestration_pipeline.lib.audit.chain import checkpoint_ledger, verify_chain
from orchestration_pipeline.lib.audit.ledger import audited, record_audit
from orchestration_pipeline.lib.db import connection, migrate

HERE = Path(__file__).resolve().parent
SWITCH = "UPDATE policies SET enabled = %s, updated_at = now() WHERE policy_id = %s"
VARIANTS = ("baseline", "audited", "record_audit")
PLAIN_INSERT = """INSERT INTO bench_ledger_plain (org_id, actor, endpoint, method, request_id, operation,
                  entity_type, entity_id, before_data, after_data, reason, source)
                  VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s) RETURNING audit_id"""


def _entry(request_id: str, policy_id: str, enabled: bool) -> dict:
    """The audit entry of one flip: who, which policy, before and after."""
    return {
        "actor": "bench",
        "request_id": request_id,
        "operation": "update",
        "entity_type": "policy",
        "entity_id": policy_id,
        "before": {"enabled": not enabled},
        "after": {"enabled": enabled},
        "source": "benchmarks/audit.py",
    }


def _mutate(conn, variant: str, state: dict[str, bool], policy_id: str, request_id: str) -> None:
    """Switch one policy, as ``variant`` does it; ``state`` is what this writer last set.
    ``plain_insert`` writes the entry's columns as a second statement into a table with no index,
    trigger or chain."""
    enabled = state[policy_id] = not state[policy_id]
    entry = _entry(request_id, policy_id, enabled)
    if variant == "audited":
        audited(conn, SWITCH, (enabled, policy_id), expect_rows=1, **entry)
        return
    conn.execute(SWITCH, (enabled, policy_id))
    if variant == "record_audit":
        record_audit(conn, **entry)
    elif variant == "plain_insert":
        conn.execute(
            PLAIN_INSERT,
            (None, entry["actor"], None, None, entry["request_id"], entry["operation"], entry["entity_type"],
             entry["entity_id"], json.dumps(entry["before"]), json.dumps(entry["after"]), None, entry["source"]),
        ).fetchone()  # fmt: skip


def _states(conn, ids: list[str]) -> dict[str, bool]:
    state = dict(
        conn.execute("SELECT policy_id, enabled FROM policies WHERE policy_id = ANY(%s)", (ids,)).fetchall()
    )
    conn.commit()
    return state


def _worker(dsn: str, ids: list[str], variant: str, start, stop, out) -> None:
    """One writer process: commit one mutation per transaction until told to stop."""
    done = 0
    with connection(dsn) as conn:
        state = _states(conn, ids)
        start.wait()
        i = 0
        while not stop.is_set():
            i += 1
            _mutate(conn, variant, state, ids[i % len(ids)], f"bench-{os.getpid()}-{i}")
            conn.commit()
            done += 1
    out.put(done)


def _backend_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of a server backend, if it runs on this machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _cpu_breakdown(dsn: str, ids: list[str], transactions: int) -> dict[str, dict[str, float | None]]:
    """CPU microseconds per transaction, client and server, of the baseline, a plain second
    INSERT, and both audited forms; one writer, variants interleaved twice, minimum kept."""
    samples: dict[str, list[tuple[float, float | None]]] = {
        "baseline": [],
        "plain_insert": [],
        "audited": [],
        "record_audit": [],
    }
    with connection(dsn) as conn:
        pid = conn.info.backend_pid
        state = _states(conn, ids)
        for _ in range(2):
            for variant in samples:
                client0, server0 = time.process_time(), _backend_cpu_s(pid)
                for i in range(transactions):
                    _mutate(conn, variant, state, ids[i % len(ids)], f"bench-cpu-{i}")
                    conn.commit()
                client1, server1 = time.process_time(), _backend_cpu_s(pid)
                server = None if server0 is None or server1 is None else (server1 - server0)
                samples[variant].append((client1 - client0, server))
    result = {}
    for variant, runs in samples.items():
        client = min(c for c, _ in runs) / transactions * 1e6
        servers = [s for _, s in runs if s is not None]
        server = min(servers) / transactions * 1e6 if servers else None
        result[variant] = {
            "client": round(client, 1),
            "server": None if server is None else round(server, 1),
            "total": None if server is None else round(client + server, 1),
        }
    return result


def _cpu_overhead(cpu: dict[str, dict[str, float | None]], variant: str) -> float | None:
    """Throughput lost to ``variant``'s extra CPU when the CPU is what limits throughput."""
    base, other = cpu["baseline"]["total"], cpu[variant]["total"]
    return None if base is None or other is None else round((other - base) / other * 100, 1)


def _wal_lsn(dsn: str) -> int:
    with connection(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0])


def _round(dsn: str, ids: list[str], writers: int, seconds: float, variant: str) -> tuple[float, float]:
    """Transactions per second of ``writers`` processes over ``seconds``, and WAL bytes per transaction.

    Processes, not threads, as the pipeline's own writers are (Dagster runs steps in
    subprocesses): one client's interpreter lock must not be what is measured.
    """
    ctx = multiprocessing.get_context("spawn")
    start, stop, out = ctx.Barrier(writers + 1), ctx.Event(), ctx.Queue()
    shares = [ids[n::writers] for n in range(writers)]  # each writer owns its entities
    pool = [
        ctx.Process(target=_worker, args=(dsn, shares[n], variant, start, stop, out)) for n in range(writers)
    ]
    for p in pool:
        p.start()
    wal0 = _wal_lsn(dsn)
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    counts = [out.get(timeout=60) for _ in pool]
    elapsed = time.perf_counter() - t0
    for p in pool:
        p.join()
    return sum(counts) / elapsed, (_wal_lsn(dsn) - wal0) / max(sum(counts), 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded, temporary)")
    parser.add_argument(
        "--writers", type=int, default=8, help="concurrent writer processes, one connection each"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measured round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (rotating)")
    parser.add_argument("--rows", type=int, default=1000, help="policies the mutations spread over")
    parser.add_argument(
        "--breakdown-transactions",
        type=int,
        default=4000,
        help="transactions per variant in the one-writer CPU breakdown",
    )
    args = parser.parse_args()

    scratch = Scratch.open(args.dsn, "orchestration")
    dsn = scratch.dsns["orchestration"]
    try:
        ids = [f"bench-{i:05d}" for i in range(args.rows)]
        with connection(dsn) as conn:
            migrate(conn, "orchestration")
            conn.execute((HERE / "audit_baseline.sql").read_text())
            with conn.cursor().copy("COPY policies (policy_id, name, effect) FROM STDIN") as copy:
                for policy_id in ids:
                    copy.write_row((policy_id, policy_id, "notify"))
            conn.commit()
            server = conn.execute("SHOW server_version").fetchone()[0]
            sync_commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
            conn.rollback()

        for variant in VARIANTS:  # warm-up: caches, prepared statements
            _round(dsn, ids, args.writers, 1.0, variant)
        runs: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            for variant in VARIANTS[r % 3 :] + VARIANTS[: r % 3]:
                runs[variant].append(_round(dsn, ids, args.writers, args.seconds, variant))
        single = {v: _round(dsn, ids, 1, args.seconds, v)[0] for v in VARIANTS}
        cpu = _cpu_breakdown(dsn, ids, args.breakdown_transactions)

        with connection(dsn) as conn:
            t0 = time.perf_counter()
            sealed = checkpoint_ledger(conn)
            checkpoint_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = verify_chain(conn)
            verify_s = time.perf_counter() - t0
        assert report.ok and report.unsealed_entries == 0, report.as_dict()

        tps = {v: statistics.median(t for t, _ in runs[v]) for v in VARIANTS}
        wal = {v: statistics.median(w for _, w in runs[v]) for v in VARIANTS}

        def overhead(rates: dict[str, float], variant: str) -> float:
            return round((rates["baseline"] - rates[variant]) / rates["baseline"] * 100, 1)

        print(
            json.dumps(
                {
                    "benchmark": "audit",
                    "server": server,
                    "synchronous_commit": sync_commit,
                    "writers": args.writers,
                    "seconds_per_round": args.seconds,
                    "rounds": args.rounds,
                    "baseline_tx_per_s": round(tps["baseline"]),
                    "audited_tx_per_s": round(tps["audited"]),
                    "overhead_pct": overhead(tps, "audited"),
                    "record_audit_tx_per_s": round(tps["record_audit"]),
                    "record_audit_overhead_pct": overhead(tps, "record_audit"),
                    "rounds_tx_per_s": {v: [round(t) for t, _ in runs[v]] for v in VARIANTS},
                    "wal_bytes_per_tx": {v: round(wal[v]) for v in VARIANTS},
                    "single_writer_tx_per_s": {v: round(single[v]) for v in VARIANTS},
                    "single_writer_overhead_pct": overhead(single, "audited"),
                    "cpu_us_per_tx": cpu,
                    "plain_insert_cpu_overhead_pct": _cpu_overhead(cpu, "plain_insert"),
                    "audited_cpu_overhead_pct": _cpu_overhead(cpu, "audited"),
                    "record_audit_cpu_overhead_pct": _cpu_overhead(cpu, "record_audit"),
                    "ledger_rows": report.rows,
                    "chains": report.chains,
                    "checkpoints": report.checkpoints,
                    "checkpoint_rows_per_s": round(sealed.entries / checkpoint_s),
                    "verify_rows_per_s": round(report.rows / verify_s),
                    "targets_met": overhead(tps, "audited") <= 30 and tps["audited"] >= 3000,
                }
            )
        )
    finally:
        scratch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
