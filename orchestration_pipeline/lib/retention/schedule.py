"""Which days past the archive window still wait for retention (what the sensor starts runs for)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import psycopg

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.retention.catalogue import catalogue


@dataclass(frozen=True)
class Waiting:
    day: date
    state: str  # archive | purge | retry (the last archive failed)


def days_waiting(conn: psycopg.Connection, policy, today: date) -> list[Waiting]:
    """Due days, oldest first, with a partition that has no verified archive yet (or whose last
    archive failed: ``retry``), or a verified one while the purge is on."""
    due_before = policy.due_before(today)
    latest = {
        (t, d): s
        for t, d, s in conn.execute(
            """SELECT DISTINCT ON (table_name, day) table_name, day, status FROM archive_manifests
               WHERE day < %s ORDER BY table_name, day, manifest_id DESC""",
            (due_before,),
        ).fetchall()
    }
    states: dict[date, str] = {}
    for table in policy.tables:
        cat = catalogue(conn, table)
        for day in (d for d in cat.days if d < due_before):
            status = latest.get((table, day))
            if status == "failed":
                state = "retry"
            elif status in (None, "exported", "superseded", "restored", "purged"):
                state = "archive"  # purged/restored: rows of the day are live again
            elif status == "verified" and policy.purge:
                state = "purge"
            else:
                continue
            # one run serves every table of the day: keep the first state seen per day
            states.setdefault(day, state)
    end_read(conn)
    return [Waiting(day, states[day]) for day in sorted(states)]
