"""The retention cycle of a day, and of every due day: archive, verify, then (when enabled) purge.

A day is due once it is entirely older than the archive window: with ``archive_days`` 30, on
2025-03-31 every day up to 2025-02-28 is due. For each due day of each partitioned table:

1. no archive in force, or the last one failed: export it (a new manifest, ``exported``);
2. ``exported`` (also one left by a run that was killed): verify it (``verified`` or ``failed``);
3. ``verified``: with the purge enabled (``ORCH_RETENTION_PURGE=on``) purge it, which re-checks
   the live rows against the archive first; a late row supersedes the archive and the day is
   archived and verified again, then purged. With the purge off (the default), the live row count
   is compared with the archive's and the day is reported as one that *would* be purged.

Every step is safe to interrupt: the next run continues from the manifests. A dry run writes
nothing at all and reports what each day would get. Days of a table that is not partitioned yet
are left alone (nothing can be dropped by day).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from orchestration_pipeline.lib.retention import catalogue as catalogue_mod
from orchestration_pipeline.lib.retention import manifests, purge, timescale
from orchestration_pipeline.lib.retention.archive import export_day, record_failed_export
from orchestration_pipeline.lib.retention.catalogue import Catalogue
from orchestration_pipeline.lib.retention.manifests import DayBusy
from orchestration_pipeline.lib.retention.partitions import TIME_COLUMN, Partition, ensure_partitions
from orchestration_pipeline.lib.retention.verify import verify
from orchestration_pipeline.lib.telemetry import record_metric


@dataclass(frozen=True)
class RetentionPolicy:
    """The windows, whether purging is on, and where archives go."""

    archive_root: str
    hot_days: int = 7
    archive_days: int = 30
    purge: bool = False
    tables: tuple[str, ...] = catalogue_mod.TABLES

    @classmethod
    def from_settings(cls, settings: Any, archive_root: str | None = None) -> RetentionPolicy:
        """From :func:`orchestration_pipeline.settings.load_settings` (archives under $ORCH_HOME/archive)."""
        return cls(
            archive_root=archive_root or str(settings.orch_home / "archive"),
            hot_days=settings.retention_hot_days,
            archive_days=settings.retention_archive_days,
            purge=settings.retention_purge,
        )

    def due_before(self, today: date) -> date:
        """Days strictly before this one are past the archive window."""
        return today - timedelta(days=self.archive_days)

    def is_due(self, day: date, today: date) -> bool:
        return day < self.due_before(today)


@dataclass
class DayReport:
    """What one run did to one day of one table, in order, and where it left it."""

    table: str
    day: date
    partition: str | None
    steps: list[str] = field(default_factory=list)
    outcome: str = "pending"  # archived | verified | purged | would_purge | failed | busy | nothing
    manifest_id: int | None = None
    rows: int | None = None
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["day"] = self.day.isoformat()
        body["seconds"] = round(self.seconds, 3)
        return body


@dataclass
class RunReport:
    dry_run: bool
    purge_enabled: bool
    due_before: date
    days: list[DayReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[DayReport]:
        return [d for d in self.days if d.outcome == "failed"]

    def as_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for d in self.days:
            counts[d.outcome] = counts.get(d.outcome, 0) + 1
        return {
            "dry_run": self.dry_run,
            "purge_enabled": self.purge_enabled,
            "due_before": self.due_before.isoformat(),
            "outcomes": counts,
            "days": [d.as_dict() for d in self.days],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Identity:
    actor: str
    request_id: str


def today_utc() -> date:
    return datetime.now(UTC).date()


def _archive_and_verify(
    conn: psycopg.Connection, part: Partition, cat: Catalogue, policy: RetentionPolicy, report: DayReport
):
    """Export the day and verify the file; returns the manifest, verified or not."""
    try:
        exported = export_day(conn, part, cat.layout, policy.archive_root)
    except (OSError, ValueError, RuntimeError, psycopg.Error) as exc:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        failed = record_failed_export(conn, part, cat.layout, policy.archive_root, f"export failed: {exc}")
        report.steps.append(f"export failed: {exc}")
        report.manifest_id = failed.manifest_id
        return failed
    report.steps.append(f"exported {exported.manifest.row_count} rows to {exported.manifest.file_uri}")
    return _verify(conn, exported.manifest, report)


def _verify(conn: psycopg.Connection, manifest: manifests.Manifest, report: DayReport) -> manifests.Manifest:
    result = verify(conn, manifest.manifest_id)
    report.steps.append("verified" if result.ok else f"verification failed: {result.reason}")
    report.manifest_id = manifest.manifest_id
    return manifests.get(conn, manifest.manifest_id)


def cycle_day(
    conn: psycopg.Connection,
    part: Partition,
    cat: Catalogue,
    policy: RetentionPolicy,
    who: Identity,
    *,
    purge_now: bool,
    dry_run: bool = False,
    archive_only: bool = False,
) -> DayReport:
    """Take one day as far as the policy allows (see the module's steps; ``archive_only`` stops once
    it is verified); never raises for the day's own problems, which the report carries."""
    report = DayReport(part.table, part.day, part.name)
    started = time.perf_counter()
    try:
        with manifests.day_lock(conn, part.table, part.day):
            if dry_run:
                _plan(conn, part, cat, policy, report)
            else:
                _cycle(conn, part, cat, policy, who, report, purge_now=purge_now, archive_only=archive_only)
    except DayBusy as busy:
        report.outcome, report.error = "busy", str(busy)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
        report.steps.append(f"postponed: {str(exc).strip().splitlines()[0]}")
        report.outcome, report.error = "busy", "the day's partition was in use; the next run tries again"
    except psycopg.OperationalError:
        raise  # the server is gone: no other day can be done either
    except psycopg.Error as exc:  # the day's own statement failed (rolled back): the other days go on
        report.outcome, report.error = "failed", str(exc).strip().splitlines()[0]
        report.steps.append(f"stopped: {report.error}")
    report.seconds = time.perf_counter() - started
    if not dry_run and report.outcome != "busy":
        _record_telemetry(conn, report)
    return report


def _record_telemetry(conn: psycopg.Connection, report: DayReport) -> None:
    """The day's outcome in ``metrics``, so retention's pace and purges can be plotted over time."""
    tags = {"table": report.table, "day": report.day.isoformat(), "outcome": report.outcome}
    with manifests.autocommit(conn), conn.transaction():
        record_metric(conn, "retention_day_seconds", report.seconds, "s", tags)
        if report.outcome == "purged":
            record_metric(conn, "retention_purged_rows", report.rows or 0, "rows", tags)


def _cycle(
    conn, part, cat, policy, who: Identity, report: DayReport, *, purge_now: bool, archive_only: bool
) -> None:
    manifest = manifests.live(conn, part.table, part.day)
    if manifest is None:
        manifest = _archive_and_verify(conn, part, cat, policy, report)
    elif manifest.status == "exported":
        manifest = _verify(conn, manifest, report)
    report.manifest_id, report.rows = manifest.manifest_id, manifest.row_count
    if manifest.status != "verified":
        report.outcome, report.error = "failed", manifest.error
        return
    if archive_only:
        report.outcome = "verified"
        return
    if not purge_now:
        _report_would_purge(conn, part, cat, manifest, policy, report)
        return
    for attempt in (1, 2):
        try:
            purge.purge_day(conn, manifest, part, cat, actor=who.actor, request_id=who.request_id)
        except purge.LateRows as late:
            report.steps.append(f"purge refused: {late}")
            manifest = _supersede_and_rearchive(conn, manifest, part, cat, policy, report)
            if manifest.status != "verified" or attempt == 2:
                report.outcome = "failed" if manifest.status != "verified" else "verified"
                report.error = manifest.error
                return
            continue
        except purge.PurgeRefused as refused:
            report.steps.append(f"purge refused: {refused}")
            report.outcome, report.error = "failed", str(refused)
            if isinstance(refused, purge.ArchiveFileProblem):  # the next run archives the day again
                with manifests.autocommit(conn), conn.transaction():
                    manifests.set_status(conn, manifest.manifest_id, "failed", error=str(refused))
            return
        report.steps.append(f"purged {part.name} ({manifest.row_count} rows)")
        report.outcome, report.rows = "purged", manifest.row_count
        return


def _supersede_and_rearchive(conn, manifest, part, cat, policy, report: DayReport) -> manifests.Manifest:
    """A late row: the old manifest is superseded by a new archive of the day as it is now."""
    with manifests.autocommit(conn), conn.transaction():
        manifests.set_status(
            conn, manifest.manifest_id, "superseded", error="rows arrived or changed after the archive"
        )
    fresh = _archive_and_verify(conn, part, cat, policy, report)
    with manifests.autocommit(conn), conn.transaction():
        conn.execute(
            "UPDATE archive_manifests SET superseded_by = %s WHERE manifest_id = %s",
            (fresh.manifest_id, manifest.manifest_id),
        )
    report.manifest_id, report.rows = fresh.manifest_id, fresh.row_count
    return fresh


def _report_would_purge(conn, part, cat, manifest, policy: RetentionPolicy, report: DayReport) -> None:
    """Purge off: compare the live row count (cheap) and say what a purge would do."""
    live_rows = _live_count(conn, part, cat)
    if live_rows != manifest.row_count:
        report.steps.append(f"{live_rows} live rows, {manifest.row_count} archived: archiving again")
        manifest = _supersede_and_rearchive(conn, manifest, part, cat, policy, report)
        if manifest.status != "verified":
            report.outcome, report.error = "failed", manifest.error
            return
    why = "ORCH_RETENTION_PURGE is off" if not policy.purge else "purge not requested"
    report.steps.append(f"would purge {part.name} ({manifest.row_count} rows): {why}")
    report.outcome = "would_purge"


def _live_count(conn: psycopg.Connection, part: Partition, cat: Catalogue) -> int:
    source, where, params = catalogue_mod.day_source(part, cat.layout)
    query = sql.SQL("SELECT count(*) FROM {}{}").format(
        source, sql.SQL(" WHERE ") + where if where is not None else sql.SQL("")
    )
    with manifests.autocommit(conn):
        return int(conn.execute(query, params or None).fetchone()[0])


def _plan(conn, part, cat, policy: RetentionPolicy, report: DayReport) -> None:
    """A dry run: what the day would get, with nothing written."""
    manifest = manifests.live(conn, part.table, part.day)
    if manifest is None:
        report.steps.append(f"would archive and verify {part.name} ({_live_count(conn, part, cat)} rows)")
        report.outcome = "would_archive"
        return
    report.manifest_id, report.rows = manifest.manifest_id, manifest.row_count
    if manifest.status == "exported":
        report.steps.append(f"would verify manifest {manifest.manifest_id}")
        report.outcome = "would_verify"
        return
    try:
        purge.purge_day(conn, manifest, part, cat, actor="dry-run", request_id="dry-run", dry_run=True)
    except purge.PurgeRefused as refused:
        report.steps.append(f"would archive again: {refused}")
        report.outcome = "would_archive"
        return
    state = "on" if policy.purge else "off: it would only be reported"
    report.steps.append(
        f"would purge {part.name} ({manifest.row_count} rows; ORCH_RETENTION_PURGE is {state})"
    )
    report.outcome = "would_purge"


def run_retention(
    conn: psycopg.Connection,
    policy: RetentionPolicy,
    who: Identity,
    *,
    dry_run: bool = False,
    days: Iterable[date] | None = None,
    today: date | None = None,
    progress: Callable[[DayReport], None] | None = None,
    archive_only: bool = False,
) -> RunReport:
    """Archive, verify and (with the purge on) purge every due day of every table — or only ``days``
    (each must be due); ``archive_only`` never purges nor reports on purging. Purged days are left as
    they are; a day's failure does not stop the others."""
    today = today or today_utc()
    report = RunReport(dry_run, policy.purge and not dry_run, policy.due_before(today))
    wanted = set(days) if days is not None else None
    if wanted:
        early = sorted(d for d in wanted if not policy.is_due(d, today))
        if early:
            raise ValueError(
                f"{', '.join(map(str, early))} not past the {policy.archive_days}-day archive window "
                f"(due: days before {report.due_before}) — a day is archived only once it is past it"
            )
    with manifests.autocommit(conn):
        for table in policy.tables:
            cat = catalogue_mod.catalogue(conn, table)
            _table_notes(conn, cat, policy, report, dry_run)
            if not cat.partitioned:
                continue
            if not dry_run:
                if _adopt_stray_days(conn, cat, policy, today, report):
                    cat = catalogue_mod.catalogue(conn, table)
                catalogue_mod.observe(conn, cat)
            for day, part in sorted(cat.days.items()):
                if not policy.is_due(day, today) or (wanted is not None and day not in wanted):
                    continue
                day_report = cycle_day(
                    conn,
                    part,
                    cat,
                    policy,
                    who,
                    purge_now=policy.purge and not dry_run,
                    dry_run=dry_run,
                    archive_only=archive_only,
                )
                report.days.append(day_report)
                if progress:
                    progress(day_report)
            for day in sorted((wanted or set()) - set(cat.days)):
                report.days.append(_absent_day(conn, table, day))
    return report


def _absent_day(conn: psycopg.Connection, table: str, day: date) -> DayReport:
    """A day asked for by name that has no partition: purged already, or never held rows."""
    purged = manifests.purged_parts(conn, table, day)
    report = DayReport(table, day, None, outcome="purged" if purged else "nothing")
    if purged:
        report.manifest_id, report.rows = purged[-1].manifest_id, sum(m.row_count or 0 for m in purged)
        report.steps.append(f"purged already (manifest {purged[-1].manifest_id})")
    else:
        report.steps.append("no partition holds this day: nothing to archive")
    return report


def _table_notes(conn, cat: Catalogue, policy: RetentionPolicy, report: RunReport, dry_run: bool) -> None:
    """Table-level facts worth a line: not partitioned, odd chunks, the columnstore policy."""
    if not cat.partitioned:
        report.notes.append(f"{cat.table} is not partitioned by day: nothing to archive or purge")
        return
    if cat.irregular:
        report.notes.append(
            f"{cat.table}: {len(cat.irregular)} chunks do not cover exactly one UTC day and are left alone "
            f"({', '.join(cat.irregular[:3])}…) — set the chunk interval to 1 day"
        )
    if cat.layout == "timescaledb" and not dry_run:
        with conn.transaction():
            used = timescale.ensure_columnstore_policy(conn, cat.table, policy.hot_days)
        report.notes.append(
            f"{cat.table}: warm data after {policy.hot_days} days to the columnstore ({used})"
        )
        if timescale.retention_policies(conn, cat.table):
            report.notes.append(
                f"{cat.table} has a TimescaleDB retention policy, which drops chunks without an archive — "
                f"remove it: SELECT remove_retention_policy('{cat.table}')"
            )


def _adopt_stray_days(
    conn, cat: Catalogue, policy: RetentionPolicy, today: date, report: RunReport
) -> list[str]:
    """Give due days whose rows sit in the default partition (they arrived after their day was purged,
    or predate every partition) a partition of their own, so that they are archived like any day."""
    if (
        cat.layout != "native"
        or conn.execute("SELECT to_regclass(%s)", (f"{cat.table}_default",)).fetchone()[0] is None
    ):
        return []
    column = sql.Identifier(TIME_COLUMN[cat.table])
    days = [
        d
        for (d,) in conn.execute(
            sql.SQL("SELECT DISTINCT ({} AT TIME ZONE 'UTC')::date FROM {} WHERE {} < %s ORDER BY 1").format(
                column, sql.Identifier(f"{cat.table}_default"), column
            ),
            (datetime.combine(policy.due_before(today), datetime.min.time(), tzinfo=UTC),),
        ).fetchall()
    ]
    created: list[str] = []
    for day in days:
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '5s'")
                created += ensure_partitions(conn, cat.table, day, day)
        except psycopg.errors.LockNotAvailable:
            report.notes.append(
                f"{cat.table} {day}: rows in {cat.table}_default wait for their partition (table busy)"
            )
    if created:
        report.notes.append(
            f"{cat.table}: rows of {len(created)} due days moved out of the default partition"
        )
    return created
