import pytest

from orchestration_pipeline.errors import SchemaNotReady
from orchestration_pipeline.lib.db import SchemaGate, connection, require_schema

pytestmark = pytest.mark.db

CORE = ("events", "artifacts", "metrics")


def test_empty_database_raises_exactly_one_error_naming_the_fix(fresh_dsn):
    raised = []
    with connection(fresh_dsn) as conn:
        gate = SchemaGate(CORE)
        # A caller about to write 1000 rows checks once, up front; it fails once, not per row.
        try:
            gate.check(conn)
            for _ in range(1000):
                raise AssertionError("rows must not be attempted when the schema is missing")
        except SchemaNotReady as exc:
            raised.append(exc)
    assert len(raised) == 1
    message = str(raised[0])
    assert message.startswith("schema not ready: missing tables artifacts, events, metrics")
    assert "orchestration-pipeline db migrate" in message
    assert raised[0].missing == ["artifacts", "events", "metrics"]


def test_partial_schema_records_one_decision_event(orch_dsn):
    with connection(orch_dsn) as conn:
        conn.execute("ALTER TABLE metrics RENAME TO metrics_gone")
        conn.commit()
        gate = SchemaGate(CORE, source="test")
        for _ in range(5):  # retries re-check but must not flood the event log
            with pytest.raises(SchemaNotReady, match="missing tables metrics"):
                gate.check(conn)
        rows = conn.execute(
            "SELECT source, stage, payload->>'rationale', payload->'missing_tables' FROM events WHERE event_type='decision'"
        ).fetchall()
    assert len(rows) == 1
    source, stage, rationale, missing = rows[0]
    assert (source, stage, missing) == ("test", "schema_gate", ["metrics"])
    assert "db migrate" in rationale


def test_passes_and_remembers_when_tables_exist(orch_dsn):
    with connection(orch_dsn) as conn:
        gate = SchemaGate(CORE)
        gate.check(conn)
        conn.execute("ALTER TABLE artifacts RENAME TO artifacts_gone")
        conn.commit()
        gate.check(conn)  # remembered: no second catalogue query on the hot path
        with pytest.raises(SchemaNotReady):
            require_schema(conn, CORE)
