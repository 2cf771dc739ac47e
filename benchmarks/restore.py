"""The RTO of a full restore drill against a bare pg_restore of the same dump, in one run.

    python benchmarks/restore.py [--events 1000000] [--audit-entries 20000] [--jobs 2] [--rounds 2] [--dsn postgresql://...]

Setup (not timed): ``--events`` generated events (``benchmarks/ingest.py``'s generator: tasks,
metrics, decisions, commands, agent progress) are ingested with the ``Ingestor``, so the decisions
and their outbox rows are written as in production; the Tasks DB gets the 1 in 10 tasks they
describe, and the projection is brought up to date. ``--audit-entries`` audited policy changes are
written and sealed by a checkpoint. The outbox is marked done (as if synced) while the vector
index (a fresh qdrant-edge shard) is empty: the drill's outbox check then re-enqueues every
decision, the most it ever has to do. One backup is taken (``backup_s``).

(a) the drill from that backup (``drill --from``): checksum, a scratch database, pg_restore, the
manifest recomputed on the copy and every check; ``rto_s`` is the drill's own measure, from the
start of the restore to the last check; (b) a bare ``pg_restore`` of the same dump file with the
same ``--jobs`` into a fresh database, no verification, timed from its CREATE DATABASE to
pg_restore's exit. ``--rounds`` of each, the order alternating between rounds (the first restore
after the setup meets a server still writing back the setup's pages); medians reported. Prints one
JSON line; target: ``ratio`` = a/b <= 2. Without --dsn an embedded
PostgreSQL is started in a temporary directory (and its own pg_dump/pg_restore used); with --dsn,
the binaries on PATH or --pg-bin.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from _scratch import Scratch
from ingest import generate
from psycopg import sql

from orchestration_pipeline.lib.audit.chain import checkpoint_ledger
from orchestration_pipeline.lib.audit.ledger import record_audit
from orchestration_pipeline.lib.db import connection, migrate
from orchestration_pipeline.lib.embedded import with_database
from orchestration_pipeline.lib.index.edge import EdgeIndex
from orchestration_pipeline.lib.index.embedders import HashingEmbedder
from orchestration_pipeline.lib.index.location import CollectionSettings
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline.lib.projection.projector import project_events, projection_lag
from orchestration_pipeline.lib.restore.backup import create_backup
from orchestration_pipeline.lib.restore.drill import DrillOptions, run_drill
from orchestration_pipeline.lib.restore.tools import EMBEDDED, PATH, find_tools, libpq_target

TARGET_RATIO = 2.0


def _seed_tasks(tasks_dsn: str, events: int) -> int:
    """The Tasks DB rows of the generated tasks: one per 10 events, each finished successfully."""
    count = (events + 9) // 10
    with connection(tasks_dsn) as conn:
        conn.execute(
            """INSERT INTO tasks (task_id, title, status, priority, tags, updated_at)
               SELECT format('T-%%s', lpad(n::text, 8, '0')), format('task %%s', n * 10), 'done', 1 + n %% 5,
                      '["bench"]'::jsonb, now() - interval '1 day'
               FROM generate_series(0, %s - 1) AS n""",
            (count,),
        )
        conn.commit()
    return count


def _audit(orch_dsn: str, entries: int) -> None:
    with connection(orch_dsn) as conn:
        for i in range(entries):
            record_audit(
                conn, actor="bench:oncall", request_id=f"bench-{i // 100}", operation="update",
                entity_type="policy", entity_id=f"pol-{i % 50}", before={"enabled": i % 2 == 0},
                after={"enabled": i % 2 == 1}, reason="benchmark",
            )  # fmt: skip
            if i % 1000 == 999:
                conn.commit()
        conn.commit()
        checkpoint_ledger(conn)


def _prepare(work: Path, orch_dsn: str, tasks_dsn: str, args: argparse.Namespace) -> dict:
    with connection(orch_dsn) as conn:
        migrate(conn, "orchestration")
    with connection(tasks_dsn) as conn:
        migrate(conn, "tasks")
    data = work / "events.jsonl"
    generate(data, args.events)
    _seed_tasks(tasks_dsn, args.events)
    with connection(orch_dsn) as conn, connection(tasks_dsn) as tasks:
        summary = Ingestor(conn).ingest_paths([data]).as_dict()
        data.unlink()
        project_events(conn, tasks)
        while projection_lag(conn):
            conn.rollback()
            time.sleep(0.2)
            project_events(conn, tasks)
        conn.rollback()
        conn.execute("UPDATE search_outbox SET done_at = now(), outcome = 'indexed', searchable_at = now()")
        conn.commit()
    _audit(orch_dsn, args.audit_entries)
    return {"accepted": summary["accepted"]}


@contextmanager
def _empty_index(path: Path):
    """An opener of an empty qdrant-edge shard (in this process), as the drill's index."""
    embedder = HashingEmbedder()
    index = EdgeIndex(path)
    index.ensure_collection(CollectionSettings(dimension=embedder.dimension, embedder=embedder.name))
    index.close()

    @contextmanager
    def opener():
        shard = EdgeIndex(path)
        try:
            yield shard, embedder
        finally:
            shard.close()

    yield opener


def _bare_restore(admin: str, tools, dump: Path, jobs: int) -> float:
    """Seconds for CREATE DATABASE plus pg_restore of ``dump`` into it; the database is dropped after."""
    name = f"bench_bare_{int(time.time() * 1000) % 10**9}"
    started = time.perf_counter()
    with connection(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        conninfo, env = libpq_target(with_database(admin, name))
        subprocess.run(
            [tools.pg_restore.path, "--exit-on-error", f"--jobs={jobs}", f"--dbname={conninfo}", str(dump)],
            check=True, env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return time.perf_counter() - started
    finally:
        with connection(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--audit-entries", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=2, help="pg_restore --jobs, the same for both")
    parser.add_argument("--rounds", type=int, default=2, help="drills and bare restores (medians reported)")
    parser.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded, temporary)")
    parser.add_argument(
        "--pg-bin", help="directory of pg_dump/pg_restore (default: embedded, or PATH with --dsn)"
    )
    args = parser.parse_args()

    scratch = Scratch.open(args.dsn, "orchestration", "tasks")
    try:
        orch_dsn, tasks_dsn = scratch.dsns["orchestration"], scratch.dsns["tasks"]
        t0 = time.perf_counter()
        seeded = _prepare(scratch.work, orch_dsn, tasks_dsn, args)
        setup_s = time.perf_counter() - t0
        tools = find_tools(PATH if args.dsn else EMBEDDED, args.pg_bin)
        t0 = time.perf_counter()
        backup = create_backup(orch_dsn, scratch.work / "backups", tools, created_by="benchmark")
        backup_s = time.perf_counter() - t0
        drills, bares = [], []
        with _empty_index(scratch.work / "qdrant") as opener:
            opts = DrillOptions(
                source_dsn=orch_dsn, tasks_dsn=tasks_dsn, backup_dir=scratch.work / "backups",
                tool_origin=PATH if args.dsn else EMBEDDED, pg_bin=args.pg_bin, from_backup=backup.backup_id,
                jobs=args.jobs, open_index=opener, created_by="benchmark",
            )  # fmt: skip
            for round_ in range(args.rounds):  # alternate the order: neither always runs on a warmer server
                if round_ % 2:
                    bares.append(_bare_restore(scratch.admin, tools, backup.dump_path, args.jobs))
                drills.append(run_drill(opts))
                if not round_ % 2:
                    bares.append(_bare_restore(scratch.admin, tools, backup.dump_path, args.jobs))
        result = drills[-1]  # its phases and checks are shown
        rto_s = statistics.median(r.rto_s for r in drills) if all(r.rto_s for r in drills) else None
        bare_s = statistics.median(bares)
        body = result.as_dict()
        outbox = next((c for c in body["checks"] if c["name"] == "outbox_repopulated"), {"found": {}})
        ratio = rto_s / bare_s if rto_s else None
        print(
            json.dumps(
                {
                    "benchmark": "restore",
                    "events": seeded["accepted"],
                    "audit_entries": args.audit_entries,
                    "dump_bytes": backup.size,
                    "jobs": args.jobs,
                    "tools": body["tools"],
                    "setup_s": round(setup_s, 1),
                    "backup_s": round(backup_s, 3),
                    "drill_states": [r.state for r in drills],
                    "drill_rto_s": None if rto_s is None else round(rto_s, 3),
                    "bare_pg_restore_s": round(bare_s, 3),
                    "rounds": {
                        "drill_rto_s": [round(r.rto_s or 0, 3) for r in drills],
                        "bare_pg_restore_s": [round(b, 3) for b in bares],
                    },  # fmt: skip
                    "ratio": None if ratio is None else round(ratio, 3),
                    "target_ratio": TARGET_RATIO,
                    "within_target": ratio is not None and ratio <= TARGET_RATIO,
                    "phases": body["phases"],
                    "checks_s": {c["name"]: c["duration_s"] for c in body["checks"]},
                    "outbox_enqueued": outbox["found"].get("enqueued"),
                    "failed_checks": [c["name"] for c in body["checks"] if not c["passed"]],
                }
            )
        )
        return 0 if all(r.passed for r in drills) and ratio is not None and ratio <= TARGET_RATIO else 1
    finally:
        scratch.close()


if __name__ == "__main__":
    sys.exit(main())
