"""The TimescaleDB statements, against a recording connection (the extension cannot be installed here;
the real hypertable path is in faults/test_retention_faults.py, skipped without it)."""

from datetime import UTC, date, datetime, timedelta

import pytest

from orchestration_pipeline.lib.retention import timescale
from orchestration_pipeline.lib.retention.partitions import Partition


class Recording:
    """Answers the catalogue queries from ``answers`` (first matching substring) and records the rest."""

    def __init__(self, answers: dict[str, list[tuple]]):
        self.answers = answers
        self.statements: list[str] = []

    def execute(self, query, params=None):
        text = query if isinstance(query, str) else query.as_string(None)
        self.statements.append(text)
        rows = next((rows for key, rows in self.answers.items() if key in text), [])
        return _Result(rows)


class _Result:
    def __init__(self, rows):
        self.rows = rows

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows


@pytest.mark.parametrize(
    ("version", "expected", "absent"),
    [
        ("2.18.1", "CALL add_columnstore_policy", "add_compression_policy"),
        ("2.17.2", "SELECT add_compression_policy", "add_columnstore_policy"),
    ],
)
def test_the_columnstore_policy_follows_the_extension_version(version, expected, absent):
    conn = Recording({"extversion": [(version,)], "compression_enabled": [(False,)]})
    used = timescale.ensure_columnstore_policy(conn, "events", 7)
    assert used == expected.split()[1]
    joined = "\n".join(conn.statements)
    assert expected in joined and absent not in joined
    assert "occurred_at DESC, event_id" in joined  # the primary key stays checkable in the columnstore
    assert "add_retention_policy" not in joined  # never: it would drop without verification


def test_a_policy_for_another_window_is_replaced_and_settings_are_set_once():
    conn = Recording(
        {
            "extversion": [("2.19.0",)],
            "config->>'compress_after'": [("14 days",)],
            "::interval = ": [(False,)],
            "compression_enabled": [(True,)],
        }
    )
    timescale.ensure_columnstore_policy(conn, "metrics", 7)
    joined = "\n".join(conn.statements)
    assert "remove_columnstore_policy" in joined
    assert "ALTER TABLE" not in joined  # already enabled: its settings are left as they are


def test_without_the_extension_there_is_no_policy():
    with pytest.raises(ValueError, match="not installed"):
        timescale.ensure_columnstore_policy(Recording({"extversion": []}), "events", 7)


def _chunk(day: date) -> Partition:
    lower = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    return Partition(
        "events", "_timescaledb_internal._hyper_1_7_chunk", day, lower, lower + timedelta(days=1)
    )


def test_drop_chunks_must_drop_exactly_the_verified_chunk():
    chunk = _chunk(date(2025, 1, 31))
    ok = Recording({"drop_chunks": [("_timescaledb_internal._hyper_1_7_chunk",)]})
    timescale.drop_day_chunk(ok, chunk)
    assert "older_than" in ok.statements[0] and "newer_than" in ok.statements[0]
    two = Recording(
        {
            "drop_chunks": [
                ("_timescaledb_internal._hyper_1_7_chunk",),
                ("_timescaledb_internal._hyper_1_8_chunk",),
            ]
        }
    )
    with pytest.raises(RuntimeError, match="not exactly"):
        timescale.drop_day_chunk(two, chunk)
    with pytest.raises(RuntimeError, match="nothing"):
        timescale.drop_day_chunk(Recording({}), chunk)


def test_only_chunks_of_exactly_one_utc_day_count_as_days():
    midnight = datetime(2025, 1, 31, tzinfo=UTC)
    assert timescale.is_day_chunk(midnight, midnight + timedelta(days=1))
    assert not timescale.is_day_chunk(midnight, midnight + timedelta(days=7))
    assert not timescale.is_day_chunk(midnight + timedelta(hours=2), midnight + timedelta(days=1, hours=2))
