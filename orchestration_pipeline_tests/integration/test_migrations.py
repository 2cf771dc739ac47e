import shutil
import threading

import psycopg
import pytest

from orchestration_pipeline.errors import MigrationError
from orchestration_pipeline.lib.db import connection, discover_migrations, migrate, migration_status
from orchestration_pipeline.lib.project_files import sql_dir

pytestmark = pytest.mark.db


def test_applies_to_empty_database_then_is_a_noop(fresh_dsn):
    with connection(fresh_dsn) as conn:
        first = migrate(conn, "orchestration")
        second = migrate(conn, "orchestration")
        status = migration_status(conn, "orchestration")
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        recorded = conn.execute("SELECT version, name, sha256, duration_ms FROM schema_migrations").fetchall()
    assert [m.version for m in first] == [m.version for m in discover_migrations("orchestration")]
    assert second == []
    assert status.current and not status.pending and not status.drifted
    assert {"events", "artifacts", "metrics", "schema_migrations"} <= tables
    assert (
        recorded[0][0] == 1 and recorded[0][1] == "core" and len(recorded[0][2]) == 64 and recorded[0][3] >= 0
    )


def test_events_shape(orch_conn):
    cols = dict(
        orch_conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events'"
        ).fetchall()
    )
    for name in (
        "event_id",
        "event_type",
        "occurred_at",
        "session_id",
        "task_id",
        "source",
        "stage",
        "severity",
        "status",
        "duration_ms",
        "payload",
        "received_at",
        "source_file",
        "source_line",
    ):
        assert name in cols, name
    assert cols["payload"] == "jsonb"
    pk = orch_conn.execute(
        """SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = 'events'::regclass AND i.indisprimary"""
    ).fetchone()[0]
    assert pk == ["event_id", "occurred_at"]


@pytest.mark.parametrize(
    "column, value",
    [
        ("event_type", "'nonsense'"),
        # status and severity are the producer's own word: 1 to 64 characters (0014)
        ("severity", "repeat('x', 65)"),
        ("severity", "''"),
        ("status", "repeat('x', 65)"),
        ("status", "''"),
        ("duration_ms", "-1"),
    ],
)
def test_enumerated_columns_are_constrained(orch_conn, column, value):
    with pytest.raises(psycopg.errors.CheckViolation):
        orch_conn.execute(
            f"INSERT INTO events (event_id, event_type, occurred_at, {column}) "
            f"VALUES (gen_random_uuid(), 'decision', now(), {value})"
            if column != "event_type"
            else f"INSERT INTO events (event_id, event_type, occurred_at) VALUES (gen_random_uuid(), {value}, now())"
        )


def test_tasks_schema(tasks_dsn):
    with connection(tasks_dsn) as conn:
        cols = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name='tasks'"
            )
        }
    assert cols == {"task_id", "title", "status", "priority", "tags", "updated_at"}


def _copy_sql(tmp_path):
    root = tmp_path / "sql"
    shutil.copytree(sql_dir(), root)
    return root


def test_changed_checksum_is_refused_naming_the_file(fresh_dsn, tmp_path):
    root = _copy_sql(tmp_path)
    with connection(fresh_dsn) as conn:
        migrate(conn, "orchestration", root)
        target = root / "orchestration" / "0001_core.sql"
        target.write_text(target.read_text() + "\n-- edited after it was applied\n")
        with pytest.raises(MigrationError) as info:
            migrate(conn, "orchestration", root)
        status = migration_status(conn, "orchestration", root)
    assert "0001_core.sql" in str(info.value) and "new migration" in str(info.value)
    assert [m.filename for m in status.drifted] == ["0001_core.sql"] and not status.current


def test_failed_migration_rolls_back_and_is_not_recorded(fresh_dsn, tmp_path):
    root = _copy_sql(tmp_path)
    (root / "orchestration" / "9001_broken.sql").write_text(
        "CREATE TABLE IF NOT EXISTS half_done (x int);\nSELECT no_such_function();\n"
    )
    with connection(fresh_dsn) as conn:
        with pytest.raises(MigrationError, match="9001_broken.sql"):
            migrate(conn, "orchestration", root)
        assert conn.execute("SELECT to_regclass('half_done')").fetchone()[0] is None
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [m.version for m in discover_migrations("orchestration")]


def test_concurrent_runners_apply_each_file_once(fresh_dsn, tmp_path):
    root = _copy_sql(tmp_path)
    # Not idempotent on purpose: a second application would insert a second row.
    (root / "orchestration" / "9002_counter.sql").write_text(
        "CREATE TABLE IF NOT EXISTS apply_counter (n int);\n"
        "SELECT pg_sleep(0.3);\n"
        "INSERT INTO apply_counter VALUES (1);\n"
    )
    results: list[object] = []
    barrier = threading.Barrier(4)

    def runner():
        with connection(fresh_dsn) as conn:
            barrier.wait()
            try:
                results.append([m.version for m in migrate(conn, "orchestration", root)])
            except Exception as exc:  # surfaced by the assertion below
                results.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not [r for r in results if isinstance(r, Exception)], results
    applied = sorted(v for r in results for v in r)
    assert applied == [*(m.version for m in discover_migrations("orchestration")), 9002]
    with connection(fresh_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM apply_counter").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(applied)
