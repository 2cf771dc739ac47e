"""Archive throughput (export plus verification) against COPY OUT plus a plain Parquet write.

    python benchmarks/archive.py [--rows 1000000] [--rounds 3] [--dsn postgresql://...]

One day of ``--rows`` realistic events is written into its daily partition. Then, alternating
for ``--rounds`` rounds (medians reported):

(a) the archive: ``export_day`` (Postgres' content hash and per-file counts, COPY OUT as CSV,
    typed Arrow, zstd Parquet to a temporary file, fsync, rename, manifest) followed by
    ``verify`` (sha256 of the file, schema, and the content hash recomputed on the Arrow side);
(b) the baseline: COPY OUT of the same rows (``SELECT *`` as CSV), pyarrow's CSV reader with
    type inference, and a plain ``pq.write_table`` with zstd — no hash, no fsync, no read-back.

Prints one JSON line: rows/s of both, ``ratio_a_b`` (target >= 0.5), and where (a)'s time goes
(Postgres hash, export, verification, of which the Python-side hash). Without --dsn an embedded
PostgreSQL is started in a temporary directory, and it and the files are removed at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from _scratch import Scratch
from psycopg import sql

from orchestration_pipeline.lib.db import connection, migrate
from orchestration_pipeline.lib.retention import canonical, manifests
from orchestration_pipeline.lib.retention.archive import export_day
from orchestration_pipeline.lib.retention.catalogue import catalogue
from orchestration_pipeline.lib.retention.partitions import ensure_partitions
from orchestration_pipeline.lib.retention.run import today_utc
from orchestration_pipeline.lib.retention.verify import file_content, verify

SEED = """
INSERT INTO events (event_id, event_type, occurred_at, session_id, task_id, source, stage, severity, status,
                    duration_ms, payload, source_file, source_line)
SELECT gen_random_uuid(),
       (ARRAY['task_start', 'task_end', 'decision', 'agent.progress', 'command_end'])[1 + i %% 5],
       %(start)s::timestamptz + i * (interval '86399 seconds' / %(rows)s),
       'sess-' || (i / 50), 'T-' || (i / 10), 'bench-orchestrator', CASE WHEN i %% 7 = 0 THEN 'db' END,
       'info', (ARRAY['started', 'succeeded', NULL])[1 + i %% 3], CASE WHEN i %% 2 = 0 THEN i %% 5000 END,
       jsonb_build_object('agent_type', 'coder', 'agent_name', 'agent-7', 'project_id', 'proj-42',
                          'task_description', 'refactor the ingestion module, step ' || i),
       '/landing/orchestrator-' || (i / 100000) || '.jsonl', 1 + i %% 100000
FROM generate_series(0, %(rows)s - 1) AS i
"""


def baseline(conn, partition: str, out: Path) -> float:
    """COPY OUT of the partition, then a plain pyarrow Parquet write: seconds."""
    started = time.perf_counter()
    chunks = []
    query = sql.SQL("COPY (SELECT * FROM {}) TO STDOUT (FORMAT csv)").format(sql.Identifier(partition))
    with conn.cursor() as cur, cur.copy(query) as copy:
        for chunk in copy:
            chunks.append(chunk)
    conn.commit()
    table = pacsv.read_csv(
        io.BytesIO(b"".join(chunks)), read_options=pacsv.ReadOptions(autogenerate_column_names=True)
    )
    pq.write_table(table, out, compression="zstd")
    return time.perf_counter() - started


def archive_round(conn, part, root: str) -> dict[str, float]:
    """One export plus verification; the manifest is superseded afterwards so the next round can export."""
    started = time.perf_counter()
    exported = export_day(conn, part, "native", root)
    export_s = time.perf_counter() - started
    result = verify(conn, exported.manifest.manifest_id)
    total_s = time.perf_counter() - started
    assert result.ok, result.reason
    manifest = exported.manifest
    t0 = time.perf_counter()
    file_content(manifest)  # the verification's Python side alone, timed apart
    python_hash_s = time.perf_counter() - t0
    with manifests.autocommit(conn), conn.transaction():
        manifests.set_status(conn, manifest.manifest_id, "superseded", error="benchmark round")
    return {
        "total_s": total_s,
        "export_s": export_s,
        "verify_s": result.seconds,
        "verify_read_and_hash_s": python_hash_s,
        "file_mb": manifest.file_bytes / 1e6,
    }


def postgres_hash_seconds(conn, part) -> float:
    columns = canonical.table_columns(conn, "events")
    started = time.perf_counter()
    canonical.pg_hash_by_group(conn, sql.Identifier(part.name), columns, "source_file")
    conn.commit()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded, temporary)")
    args = parser.parse_args()

    scratch = Scratch.open(args.dsn, "orchestration")
    work, dsn = scratch.work, scratch.dsns["orchestration"]
    try:
        with connection(dsn) as conn:
            migrate(conn, "orchestration")
            day = today_utc().replace(day=1).replace(year=today_utc().year - 1)
            ensure_partitions(conn, "events", day, day)
            t0 = time.perf_counter()
            conn.execute(SEED, {"start": f"{day.isoformat()} 00:00:00+00", "rows": args.rows})
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE events")  # settle hint bits and the visibility map first
            conn.autocommit = False
            seed_s = time.perf_counter() - t0
            part = catalogue(conn, "events").days[day]
            conn.rollback()
            pg_hash_s = postgres_hash_seconds(conn, part)
            a_rounds, b_rounds = [], []
            for i in range(args.rounds):
                a_rounds.append(archive_round(conn, part, str(work / "archive")))
                if i == 0:  # before the baseline, which holds the whole CSV in memory
                    archive_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                b_rounds.append(baseline(conn, part.name, work / f"baseline-{i}.parquet"))
        a_s = statistics.median(r["total_s"] for r in a_rounds)
        b_s = statistics.median(b_rounds)

        def median(key: str) -> float:
            return round(statistics.median(r[key] for r in a_rounds), 3)

        print(
            json.dumps(
                {
                    "benchmark": "archive",
                    "rows": args.rows,
                    "rounds": args.rounds,
                    "archive_rows_per_s": round(args.rows / a_s),
                    "baseline_rows_per_s": round(args.rows / b_s),
                    "ratio_a_b": round(b_s / a_s, 3),
                    "target_ratio_a_b": 0.5,
                    "archive_s": round(a_s, 3),
                    "baseline_s": round(b_s, 3),
                    "export_s": median("export_s"),
                    "verify_s": median("verify_s"),
                    "verify_read_and_hash_s": median("verify_read_and_hash_s"),
                    "postgres_hash_s": round(pg_hash_s, 3),
                    "parquet_mb": round(a_rounds[0]["file_mb"], 1),
                    "seed_s": round(seed_s, 1),
                    "archive_peak_rss_mb": round(archive_rss_mb),
                    "peak_rss_mb_with_baseline": round(
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                    ),
                }
            )
        )
    finally:
        scratch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
