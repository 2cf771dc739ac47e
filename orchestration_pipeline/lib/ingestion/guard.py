"""The guard on what ingestion stored, checked against the catalog.

``sql/orchestration/0015_ingest_guards.sql`` puts triggers on the tables that account for every
ingested line: DELETE and TRUNCATE are refused, and UPDATE is refused or allowed only for the
changes the pipeline makes itself (an error group's counts growing, a quarantine row replayed or
discarded). :func:`guard_problems` finds each trigger missing, disabled, or made to fire for only
some rows, as a sentence naming the statement that fixes it; ``events_accounted_for`` fails on any.
"""

from __future__ import annotations

import psycopg

from orchestration_pipeline.lib.db import end_read, table_triggers
from orchestration_pipeline.lib.retention.partitions import layout, list_partitions

MIGRATION = "sql/orchestration/0015_ingest_guards.sql"
REFUSE = "ingest_refuse_change"

# The UPDATE guard of each table: (trigger function, row level). A row-level guard admits the
# pipeline's own changes; a statement-level one refuses every UPDATE.
_UPDATE_GUARDS = {
    "events": ("events_guard_update", True),
    "ingest_files": (REFUSE, False),
    "error_groups": ("error_groups_guard_update", True),
    "error_occurrences": (REFUSE, False),
    "error_group_runs": ("error_group_runs_guard_update", True),
    "quarantine": ("quarantine_guard_update", True),
}
GUARDED_TABLES = tuple(_UPDATE_GUARDS)

#: (table, operation, trigger function, row level) of every trigger the guard needs.
WANTED: tuple[tuple[str, str, str, bool], ...] = tuple(
    (table, operation, *guard)
    for table, update_guard in _UPDATE_GUARDS.items()
    for operation, guard in (
        ("UPDATE", update_guard),
        ("DELETE", (REFUSE, False)),
        ("TRUNCATE", (REFUSE, False)),
    )
)


def guard_problems(conn: psycopg.Connection) -> list[str]:
    """What is missing from the guard (empty when every trigger is in place and fires)."""
    triggers = table_triggers(conn, GUARDED_TABLES)
    problems = _partition_guard_problems(conn)
    end_read(conn)
    for table, operation, function, row_level in WANTED:
        mine = [
            t
            for t in triggers
            if t.table == table and t.function == function and t.serves(operation, row_level=row_level)
        ]
        if not mine:
            level = "row" if row_level else "statement"
            problems.append(
                f"{table}: the BEFORE {operation} guard ({level}-level, {function}()) is missing — "
                f"reapply {MIGRATION} (psql -1 -f)"
            )
            continue
        if any(t.fires for t in mine):
            continue
        name, enabled, partial = mine[0].name, mine[0].enabled, mine[0].partial
        if enabled not in ("O", "A"):
            problems.append(
                f"{table}: the {operation} guard {name} is disabled — ALTER TABLE {table} ENABLE TRIGGER {name}"
            )
        elif partial:
            problems.append(
                f"{table}: the {operation} guard {name} fires only for some rows (a WHEN condition or "
                f"UPDATE OF columns) — reapply {MIGRATION} (psql -1 -f)"
            )
    return problems


def _partition_guard_problems(conn: psycopg.Connection) -> list[str]:
    """Each partition of a partitioned ``events`` refuses DELETE and TRUNCATE itself: the parent's
    statement-level refusals do not fire for a statement aimed at one partition."""
    if layout(conn, "events") != "native":
        return []
    names = [p.name for p in list_partitions(conn, "events")]
    triggers = table_triggers(conn, names)
    problems = []
    for name in names:
        for operation in ("DELETE", "TRUNCATE"):
            mine = [
                t for t in triggers
                if t.table == name and t.function == REFUSE and t.serves(operation, row_level=False)
            ]  # fmt: skip
            if not any(t.fires for t in mine):
                problems.append(
                    f"events partition {name}: the BEFORE {operation} guard is missing or disabled — "
                    f"SELECT retention_guard_partition('{name}')"
                )
    return problems
