"""The verifications of retention, as :class:`Verdict` values (the asset checks wrap them).

* ``archive_verified`` — no due day's latest archive is unverified (``exported``), ``failed`` or
  ``superseded`` (late rows, and no new archive yet), and each day asked about has a verified or
  purged archive: the purge is blocked otherwise.
* ``nothing_purged_unarchived`` — every daily partition retention has seen and that is gone now
  was purged with a verified archive, no archive in force lost its partition, and every purged
  archive's file is still there (it holds the only copy of those rows).
* ``retention_policy_active`` (WARN) — no day past the archive window is left unarchived, no
  verified day lingers with the purge on, and no TimescaleDB retention policy exists.
* ``default_partition_empty`` (WARN) — no row sits in ``<table>_default``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import psycopg

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.retention import catalogue as catalogue_mod
from orchestration_pipeline.lib.retention import store, timescale
from orchestration_pipeline.lib.retention.manifests import autocommit
from orchestration_pipeline.lib.retention.partitions import TIME_COLUMN, default_partition_rows
from orchestration_pipeline.lib.verdict import Verdict
from orchestration_pipeline.lib.wording import plural

_SAMPLES = 10
#: Days a verified day may stay after its window with the purge on before it is reported.
PURGE_GRACE_DAYS = 2


def _latest_by_day(conn: psycopg.Connection, before: date) -> dict[tuple[str, date], tuple]:
    rows = conn.execute(
        """SELECT DISTINCT ON (table_name, day) table_name, day, manifest_id, status, error
           FROM archive_manifests WHERE day < %s ORDER BY table_name, day, manifest_id DESC""",
        (before,),
    ).fetchall()
    return {(r[0], r[1]): r for r in rows}


def archive_verified(
    conn: psycopg.Connection,
    *,
    due_before: date,
    days: Iterable[date] = (),
    tables: Iterable[str] = TIME_COLUMN,
) -> Verdict:
    """No due day's latest archive is unverified or failed; each of ``days`` is verified or purged."""
    latest = _latest_by_day(conn, due_before)
    problems = [
        {"table": t, "day": d.isoformat(), "manifest_id": m, "status": s, "error": (e or "")[:300]}
        for (t, d), (_t, _d, m, s, e) in sorted(latest.items())
        if s in ("exported", "failed", "superseded")
    ]
    listed = {(p["table"], p["day"]) for p in problems}
    for table in tables:
        cat = catalogue_mod.catalogue(conn, table)
        for day in days:
            status = latest.get((table, day), (None,) * 4)[3]
            if (
                day in cat.days
                and status not in ("verified", "purged")
                and (table, day.isoformat()) not in listed
            ):
                problems.append({"table": table, "day": day.isoformat(), "status": status or "not archived"})
    end_read(conn)
    metadata = {
        "problems": len(problems),
        "samples": problems[:_SAMPLES],
        "due_before": due_before.isoformat(),
    }
    if problems:
        first = problems[0]
        return Verdict(
            False,
            f"{plural(len(problems), 'archived day')} not verified (first: {first['table']} {first['day']} "
            f"{first['status']}): purges are held back — see the samples and docs/runbooks/retention.md",
            metadata,
        )
    return Verdict(True, "every archive of a due day is verified", metadata)


def nothing_purged_unarchived(conn: psycopg.Connection, *, tables: Iterable[str] = TIME_COLUMN) -> Verdict:
    """Compare the manifests with the catalogue: no day went without a verified, purged archive."""
    problems: list[dict] = []
    with autocommit(conn):
        present: dict[str, set[str]] = {}
        for table in tables:
            cat = catalogue_mod.catalogue(conn, table)
            catalogue_mod.observe(conn, cat)
            present[table] = {p.name for p in cat.days.values()}
        seen = conn.execute(
            """SELECT table_name, partition_name, day FROM retention_partitions_seen
               WHERE purged_by IS NULL ORDER BY day"""
        ).fetchall()
        for table, name, day in seen:
            if table in present and name not in present[table]:
                problems.append(
                    {
                        "table": table,
                        "partition": name,
                        "day": day.isoformat(),
                        "problem": "dropped without a verified archive",
                    }
                )
        for manifest_id, table, name, day in conn.execute(
            """SELECT manifest_id, table_name, partition_name, day FROM archive_manifests
               WHERE status IN ('exported', 'verified') ORDER BY day"""
        ).fetchall():
            if table in present and name not in present[table]:
                problems.append(
                    {
                        "table": table,
                        "partition": name,
                        "day": day.isoformat(),
                        "manifest_id": manifest_id,
                        "problem": "gone before its archive was purged",
                    }
                )
        for manifest_id, table, day, uri, size in conn.execute(
            "SELECT manifest_id, table_name, day, file_uri, file_bytes FROM archive_manifests WHERE status = 'purged' ORDER BY day"
        ).fetchall():
            exists, actual = store.file_info(uri)
            if not exists or actual != size:
                problems.append(
                    {
                        "table": table,
                        "day": day.isoformat(),
                        "manifest_id": manifest_id,
                        "file": uri,
                        "problem": "purged archive file missing"
                        if not exists
                        else f"purged archive file is {actual} bytes, not {size}",
                    }
                )
    metadata = {"problems": len(problems), "samples": problems[:_SAMPLES]}
    if problems:
        first = problems[0]
        return Verdict(
            False,
            f"{plural(len(problems), 'day')} without a verified archive for rows that are gone (first: "
            f"{first['table']} {first['day']}: {first['problem']}) — see docs/runbooks/retention.md#nothing_purged_unarchived",
            metadata,
        )
    return Verdict(
        True, "every day that is gone was purged after a verified archive, and its file is there", metadata
    )


def retention_policy_active(
    conn: psycopg.Connection, *, due_before: date, purge_enabled: bool, tables: Iterable[str] = TIME_COLUMN
) -> Verdict:
    """No unarchived day older than the archive window; with the purge on, no verified day lingering;
    no TimescaleDB retention policy."""
    latest = _latest_by_day(conn, due_before)
    unarchived, lingering, policies = [], [], []
    for table in tables:
        cat = catalogue_mod.catalogue(conn, table)
        for day in sorted(d for d in cat.days if d < due_before):
            status = latest.get((table, day), (None,) * 4)[3]
            if status not in ("verified", "purged"):
                unarchived.append(f"{table} {day}")
            elif (
                purge_enabled and status == "verified" and day < due_before - timedelta(days=PURGE_GRACE_DAYS)
            ):
                lingering.append(f"{table} {day}")
        if cat.layout == "timescaledb" and timescale.retention_policies(conn, table):
            policies.append(table)
    end_read(conn)
    metadata = {
        "unarchived_days": len(unarchived),
        "unarchived_samples": unarchived[:_SAMPLES],
        "verified_not_purged": len(lingering),
        "timescaledb_retention_policies": policies,
        "due_before": due_before.isoformat(),
    }
    reasons = []
    if unarchived:
        reasons.append(
            f"{plural(len(unarchived), 'day')} past the archive window not archived (first {unarchived[0]})"
        )
    if lingering:
        reasons.append(
            f"{plural(len(lingering), 'verified day')} not purged although ORCH_RETENTION_PURGE is on"
        )
    if policies:
        reasons.append(
            f"a TimescaleDB retention policy on {', '.join(policies)} purges without verification: remove it"
        )
    if reasons:
        return Verdict(
            False,
            "; ".join(reasons) + " — run 'orchestration-pipeline retention run'",
            metadata,
            warn_only=True,
        )
    return Verdict(True, "every day past the archive window is archived", metadata, warn_only=True)


def default_partition_empty(conn: psycopg.Connection, *, tables: Iterable[str] = TIME_COLUMN) -> Verdict:
    """No row outside the daily partitions (in ``<table>_default``)."""
    counts = {table: default_partition_rows(conn, table) for table in tables}
    end_read(conn)
    stray = {t: n for t, n in counts.items() if n}
    if stray:
        shown = ", ".join(f"{t}_default {n}" for t, n in stray.items())
        return Verdict(
            False,
            f"rows outside every daily partition ({shown}): give their days partitions with "
            "retention_ensure_partition (see docs/runbooks/retention.md#default_partition_empty)",
            {"rows": counts},
            warn_only=True,
        )
    return Verdict(True, "the default partitions are empty", {"rows": counts}, warn_only=True)
