"""Writing one parsed batch inside a file's transaction: COPY, duplicates, conflicts, error groups.

Rows are COPY'd and moved with ``INSERT … ON CONFLICT DO NOTHING``, so a line re-sent in another
file counts as a duplicate; a line whose id is stored with other content is quarantined as
``conflicting_duplicate``. Error lines fold into their groups (``MOVE_ERRORS_SQL``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from orchestration_pipeline.lib.index.decisions import decisions_from_events
from orchestration_pipeline.lib.ingestion.envelope import MAX_LINE_BYTES
from orchestration_pipeline.lib.ingestion.rows import ParsedBatch
from orchestration_pipeline.lib.project_files import runtime_sql
from orchestration_pipeline.lib.redaction import REDACTED

_STAGE_COLUMNS = (
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
    "source_file",
    "source_line",
    "fingerprint",
    "message_template",
)
_QUARANTINE_COLUMNS = (
    "run_id",
    "file_sha256",
    "source_file",
    "source_line",
    "byte_offset",
    "failure_type",
    "detail",
    "json_pointer",
    "raw_line",
    "raw_sha256",
    "raw_truncated",
    "derived_event_id",
)
_EVENT_COLUMNS = (
    "event_id, event_type, occurred_at, session_id, task_id, source, stage, severity, status, "
    "duration_ms, payload, source_file, source_line"
)

# Errors: record each new occurrence, fold them into their groups, and give each group one
# event per run that carries the run's count (inserted the first time, bumped afterwards).
MOVE_ERRORS_SQL = f"""
WITH staged AS (
    SELECT DISTINCT ON (event_id, occurred_at) *
    FROM ingest_stage WHERE fingerprint IS NOT NULL
    ORDER BY event_id, occurred_at, source_line
), fresh AS (
    INSERT INTO error_occurrences (event_id, occurred_at, fingerprint, run_id)
    SELECT event_id, occurred_at, fingerprint, %(run_id)s FROM staged
    ON CONFLICT DO NOTHING
    RETURNING event_id, occurred_at
), identities AS (
    INSERT INTO event_ids (event_id, occurred_at) SELECT event_id, occurred_at FROM fresh
    ON CONFLICT DO NOTHING
), rows AS (
    SELECT s.*, row_number() OVER w AS rn, count(*) OVER (PARTITION BY s.fingerprint) AS n
    FROM staged s JOIN fresh USING (event_id, occurred_at)
    WINDOW w AS (PARTITION BY s.fingerprint ORDER BY s.occurred_at, s.source_line, s.event_id)
), grouped AS (
    INSERT INTO error_groups AS g (fingerprint, stage, message_template, sample_message, count,
                                   first_seen, last_seen, sample_event_ids)
    SELECT fingerprint, min(stage), min(message_template), min(payload->>'message') FILTER (WHERE rn = 1),
           max(n), min(occurred_at), max(occurred_at),
           (array_agg(event_id ORDER BY rn) FILTER (WHERE rn <= 5))
    FROM rows GROUP BY fingerprint
    ON CONFLICT (fingerprint) DO UPDATE SET
        count = g.count + EXCLUDED.count,
        first_seen = least(g.first_seen, EXCLUDED.first_seen),
        last_seen = greatest(g.last_seen, EXCLUDED.last_seen),
        sample_event_ids = (g.sample_event_ids || EXCLUDED.sample_event_ids)[1:5]
), per_run AS (
    INSERT INTO error_group_runs AS r (fingerprint, run_id, event_id, occurred_at, count)
    SELECT fingerprint, %(run_id)s, event_id, occurred_at, n FROM rows WHERE rn = 1
    ON CONFLICT (fingerprint, run_id) DO UPDATE SET count = r.count + EXCLUDED.count
    RETURNING fingerprint, event_id, occurred_at, count, (xmax = 0) AS created
), represented AS (
    INSERT INTO events ({_EVENT_COLUMNS})
    SELECT rows.event_id, rows.event_type, rows.occurred_at, rows.session_id, rows.task_id, rows.source,
           rows.stage, rows.severity, rows.status, rows.duration_ms,
           rows.payload || jsonb_build_object('count', p.count, 'error_group', rows.fingerprint,
                                              'message_template', rows.message_template),
           rows.source_file, rows.source_line
    FROM per_run p JOIN rows ON rows.fingerprint = p.fingerprint AND rows.rn = 1
    WHERE p.created
    ON CONFLICT DO NOTHING
    RETURNING 1
), bumped AS (
    UPDATE events e SET payload = jsonb_set(e.payload, '{{count}}', to_jsonb(p.count))
    FROM per_run p
    WHERE NOT p.created AND e.event_id = p.event_id AND e.occurred_at = p.occurred_at
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM represented), (SELECT count(*) FROM bumped)
"""


@dataclass
class Counts:
    """The line accounting of a file or a run."""

    lines: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    collapsed: int = 0
    redactions: int = 0

    def add(self, other: Counts) -> None:
        for name in ("lines", "accepted", "quarantined", "duplicates", "collapsed", "redactions"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def balanced(self) -> bool:
        return self.lines == self.accepted + self.quarantined + self.duplicates + self.collapsed


_EVENT_COPY = f"COPY events ({_EVENT_COLUMNS}) FROM STDIN"
_EVENT_ID_COPY = "COPY event_ids (event_id, occurred_at) FROM STDIN"


def _identity_line(event_line: bytes) -> bytes:
    """The ``event_ids`` COPY line of an ``events`` COPY line: its first and third fields."""
    event_id, _event_type, occurred_at, _rest = event_line.split(b"\t", 3)
    return b"%s\t%s\n" % (event_id, occurred_at)


_ARTIFACT_COPY = (
    "COPY artifacts (event_id, occurred_at, session_id, task_id, path, size_bytes, sha256, "
    "hash_skipped_reason) FROM STDIN"
)
_METRIC_COPY = "COPY metrics (name, value, unit, tags, session_id, task_id, event_id, recorded_at) FROM STDIN"
_QUARANTINE_COPY = f"COPY quarantine ({', '.join(_QUARANTINE_COLUMNS)}) FROM STDIN"


def copy_events(
    cur: psycopg.Cursor, plain: list[tuple[str, int, bytes, str | None, bytes | None]], counts: Counts
) -> list[tuple]:
    """COPY non-error events straight into ``events`` (plus artifacts and metrics), minus duplicates.

    An event's identity is its event_id alone (``event_ids``, written with the events): a
    producer's retry that re-stamps occurred_at is the same event. Repeats within the batch are
    held back here. The batch is then COPY'd optimistically under a savepoint; only if that hits a
    stored id (unique violation) is it rolled back to the savepoint, the stored ids looked up with
    one indexed query, and the rest COPY'd. New data, the common case, therefore pays for COPY
    alone. Lines held back (stored or repeated) are then compared with the stored event: the same
    occurred_at and content is a duplicate; another occurred_at or other content is a conflicting
    second version of the event, returned (see :data:`CONFLICTS_SQL`) and not counted here.
    """
    fresh: dict[str, tuple] = {}
    held: list[tuple] = []  # lines whose event_id is already stored, or taken in this batch
    for item in plain:
        if item[0] in fresh:
            held.append(item)
        else:
            fresh[item[0]] = item
    try:
        with cur.connection.transaction():
            _copy_rows(cur, fresh)
    except psycopg.errors.UniqueViolation:
        stored = cur.execute(
            "SELECT event_id::text FROM event_ids WHERE event_id = ANY(%s::uuid[])", (list(fresh),)
        ).fetchall()
        for (event_id,) in stored:
            if (item := fresh.pop(event_id, None)) is not None:
                held.append(item)
        _copy_rows(cur, fresh)
    conflicts = _conflicts(cur, held) if held else []
    counts.duplicates += len(held) - len(conflicts)
    counts.accepted += len(fresh)
    return conflicts


# The held-back lines whose content differs from the stored event with their id and time: both
# versions' fields, where the stored one came from, and the line rebuilt as JSON.
# An event's content: its stored columns but the identity (event_id, occurred_at) and provenance.
_CONFLICT_FIELDS = tuple(
    c for c in _STAGE_COLUMNS[: _STAGE_COLUMNS.index("source_file")] if c not in ("event_id", "occurred_at")
)
# The line of a staged row ``r``, rebuilt as JSON (what a conflicting line is quarantined as).
_REBUILT_LINE = """jsonb_build_object(
           'event_id', r.event_id, 'event_type', r.event_type,
           'occurred_at', to_char(r.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'session_id', r.session_id, 'task_id', r.task_id, 'source', r.source, 'stage', r.stage,
           'severity', r.severity, 'status', r.status, 'duration_ms', r.duration_ms,
           'payload', r.payload)::text"""
# A line whose id is stored with another occurred_at conflicts whatever its content (the stored
# event may be in a purged day: then only its occurred_at is known).
CONFLICTS_SQL = f"""
SELECT r.event_id::text, r.source_file, r.source_line, e.source_file, e.source_line,
       jsonb_build_array({", ".join(f"r.{f}" for f in _CONFLICT_FIELDS)}),
       jsonb_build_array({", ".join(f"e.{f}" for f in _CONFLICT_FIELDS)}),
       {_REBUILT_LINE},
       i.occurred_at <> r.occurred_at, e.event_id IS NOT NULL
FROM ingest_repeats r
JOIN event_ids i ON i.event_id = r.event_id
LEFT JOIN events e ON e.event_id = i.event_id AND e.occurred_at = i.occurred_at
WHERE i.occurred_at <> r.occurred_at
   OR e.event_id IS NOT NULL
      AND ({", ".join(f"r.{f}" for f in _CONFLICT_FIELDS)})
          IS DISTINCT FROM ({", ".join(f"e.{f}" for f in _CONFLICT_FIELDS)})
ORDER BY r.source_line
"""


def same_but_for_redaction(new: Any, stored: Any) -> bool:
    """Equal, or different only where one side holds a redaction: the same line parsed by another
    version of the redaction rules, or by the quarantine path, is not a second version of it."""
    if new == stored:
        return True
    if isinstance(new, str) and isinstance(stored, str):
        return REDACTED in new or REDACTED in stored
    if isinstance(new, str) and new == REDACTED or isinstance(stored, str) and stored == REDACTED:
        return True  # a whole object or list redacted on one side
    if isinstance(new, dict) and isinstance(stored, dict):
        return new.keys() == stored.keys() and all(same_but_for_redaction(new[k], stored[k]) for k in new)
    if isinstance(new, list) and isinstance(stored, list):
        return len(new) == len(stored) and all(map(same_but_for_redaction, new, stored))
    return False


def _conflicts(cur: psycopg.Cursor, held: list[tuple]) -> list[tuple]:
    """(event_id, file, line, stored file, stored line, differing fields, rebuilt JSON) of each
    held-back line that is a second version of its stored event."""
    with cur.copy(f"COPY ingest_repeats ({_EVENT_COLUMNS}) FROM STDIN") as copy:
        copy.write(b"".join(item[2] for item in held))
    rows = cur.execute(CONFLICTS_SQL).fetchall()
    cur.execute("TRUNCATE ingest_repeats")
    conflicts = []
    for event_id, file, line, stored_file, stored_line, new, stored, rebuilt, moved, known in rows:
        differing = ["occurred_at"] if moved else []
        if known:
            differing += [
                f
                for f, a, b in zip(_CONFLICT_FIELDS, new, stored, strict=True)
                if not same_but_for_redaction(a, b)
            ]
        if differing:
            conflicts.append((event_id, file, line, stored_file, stored_line, ", ".join(differing), rebuilt))
    return conflicts


def conflict_detail(row: tuple) -> str:
    """Why a conflicting line was quarantined, and what to do."""
    event_id, _file, _line, stored_file, stored_line, differing, _json = row
    if stored_file:
        where = f"from {stored_file} line {stored_line}"
    else:
        where = f"from a replay, line {stored_line}" if stored_line else "by an earlier ingestion"
    return (
        f"event_id {event_id} is already stored with a different {differing} "
        f"({where}); the stored version is kept — give this event its own event_id (or leave "
        "event_id out to derive one from the content), or fix the producer that reuses ids"
    )


# Staged error lines whose (event_id, occurred_at) already names something else, removed from the
# stage and returned as conflict rows (see conflict_detail): an id stored with another
# occurred_at (a retry that re-stamped the line), an event of another kind (a stored
# task_start: folding the error into its group would rewrite that event's payload), an error of
# another group (recorded in error_occurrences), or, in this batch, an earlier error line of
# another group. The same error sent again (same group) stays: it counts as a duplicate.
ERROR_CONFLICTS_SQL = f"""
WITH firsts AS (
    SELECT DISTINCT ON (event_id, occurred_at) event_id, occurred_at, fingerprint, source_file, source_line
    FROM ingest_stage ORDER BY event_id, occurred_at, source_line
), conflicting AS (
    SELECT r.ctid AS row_ref,
           CASE WHEN i.occurred_at <> r.occurred_at
                     THEN 'occurred_at'
                WHEN o.fingerprint IS NOT NULL AND o.fingerprint <> r.fingerprint
                     THEN 'error stage or message (another error group)'
                WHEN o.fingerprint IS NULL AND e.event_id IS NOT NULL
                     THEN 'event_type (' || e.event_type || ', not error)'
                WHEN o.fingerprint IS NULL AND e.event_id IS NULL AND f.fingerprint <> r.fingerprint
                     THEN 'error stage or message (another error group)' END AS differing,
           CASE WHEN o.fingerprint IS NOT NULL OR e.event_id IS NOT NULL THEN e.source_file
                ELSE f.source_file END AS stored_file,
           CASE WHEN o.fingerprint IS NOT NULL OR e.event_id IS NOT NULL THEN e.source_line
                ELSE f.source_line END AS stored_line
    FROM ingest_stage r
    JOIN firsts f USING (event_id, occurred_at)
    LEFT JOIN error_occurrences o USING (event_id, occurred_at)
    LEFT JOIN events e USING (event_id, occurred_at)
    LEFT JOIN event_ids i USING (event_id)
)
DELETE FROM ingest_stage r USING conflicting c
WHERE r.ctid = c.row_ref AND c.differing IS NOT NULL
RETURNING r.event_id::text, r.source_file, r.source_line, c.stored_file, c.stored_line, c.differing,
          {_REBUILT_LINE}
"""


def _copy_rows(cur: psycopg.Cursor, fresh: dict[str, tuple]) -> None:
    if not fresh:
        return
    # In key order: two ingesters writing the same events from differently ordered files then
    # take the events' index entries in the same order, and one waits for the other instead of
    # deadlocking (across batches they still can; the file's transaction is then tried again).
    rows = [fresh[key] for key in sorted(fresh)]
    with cur.copy(_EVENT_ID_COPY) as copy:  # the identity first: a stored id fails fast here
        # each events line starts "event_id <TAB> event_type <TAB> occurred_at <TAB>"
        copy.write(b"".join(_identity_line(item[2]) for item in rows))
    with cur.copy(_EVENT_COPY) as copy:
        copy.write(b"".join(item[2] for item in rows))
    metrics = [item[4] for item in rows if item[3] == "metric"]
    artifacts = [item[4] for item in rows if item[3] == "artifact"]
    if metrics:
        with cur.copy(_METRIC_COPY) as copy:
            copy.write(b"".join(metrics))
    if artifacts:
        with cur.copy(_ARTIFACT_COPY) as copy:
            copy.write(b"".join(artifacts))
    # decisions (and their search_outbox rows) commit with the events that set them
    decisions_from_events(cur, [(item[0], item[1]) for item in rows if item[3] == "decision"])


def move_errors(cur: psycopg.Cursor, rows: list[tuple], run_id: uuid.UUID, counts: Counts) -> list[tuple]:
    """Stage error events and fold them into their groups (one event per group per run).

    Adds to ``counts``: accepted (new group-run events), collapsed and duplicates. Error lines whose
    id and time already name something else are not folded in: they are returned, as
    :func:`copy_events` returns conflicting lines, and not counted here. The caller owns the
    transaction and must have created the stage table (``sql/runtime/ingest_stage.sql``).
    """
    with cur.copy(f"COPY ingest_stage ({', '.join(_STAGE_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    conflicts = sorted(cur.execute(ERROR_CONFLICTS_SQL).fetchall(), key=lambda row: row[2] or 0)
    fresh, represented, _bumped = cur.execute(MOVE_ERRORS_SQL, {"run_id": run_id}).fetchone()
    counts.accepted += represented
    counts.collapsed += fresh - represented
    counts.duplicates += len(rows) - len(conflicts) - fresh
    cur.execute("TRUNCATE ingest_stage")
    return conflicts


def write_batch(
    cur: psycopg.Cursor,
    batch: ParsedBatch,
    run_id: uuid.UUID,
    counts: Counts,
    *,
    file_sha256: str | None = None,
    quarantine_conflicts: bool = True,
) -> list[tuple]:
    """Write one parsed batch inside the caller's transaction, adding to ``counts``.

    Conflicting second versions of stored events are quarantined (``conflicting_duplicate``) and
    returned; with ``quarantine_conflicts=False`` (a replay) they are only returned and not counted.
    Such a quarantine row holds the event as parsed and redacted, rebuilt as JSON (its raw_sha256
    is of that text), and byte_offset 0: the writer no longer has the line's bytes or offset.
    """
    conflicts: list[tuple] = []
    quarantine = batch.quarantine
    if batch.plain:
        conflicts = copy_events(cur, batch.plain, counts)
    if batch.errors:
        conflicts += move_errors(cur, batch.errors, run_id, counts)
    if conflicts and quarantine_conflicts:
        batch.quarantine_by_type["conflicting_duplicate"] += len(conflicts)
        quarantine = quarantine + [
            (run_id, file_sha256, row[1] or "", row[2] or 1, 0, "conflicting_duplicate",
             conflict_detail(row), "/event_id", row[6],
             hashlib.sha256(row[6].encode("utf-8")).hexdigest(), False, None)
            for row in conflicts
        ]  # fmt: skip
    if quarantine:
        quarantine = _not_quarantined_before(cur, quarantine, file_sha256, batch.quarantine_by_type, counts)
        with cur.copy(_QUARANTINE_COPY) as copy:
            for row in quarantine:
                copy.write_row(row)
        counts.quarantined += len(quarantine)
    counts.lines += batch.lines
    counts.redactions += batch.redactions
    return conflicts


# Pending quarantine rows that earlier versions of this path left in the range of a batch's lines:
# the file grew or was rewritten, and those lines were read again (the caller compares numbers and
# bytes). A range on the index's second column (quarantine_pending_line_idx) reads only the rows of
# the batch's own lines, whatever the statistics or a generic plan say; a batch never scans every
# pending row of the path, which made re-reading a file with many bad lines quadratic. (Matching
# the batch's lines here as an array or a join was worse: a generic plan does not hash the array.)
_QUARANTINED_BEFORE_SQL = """
SELECT source_line, raw_sha256 FROM quarantine
WHERE source_file = %s AND replayed_at IS NULL AND file_sha256 <> %s
  AND source_line BETWEEN %s::integer AND %s::integer
"""


def quarantined_before_query(rows: list[tuple], file_sha256: str) -> tuple[str, tuple]:
    """The query (and its parameters) for the pending rows earlier versions of the file left in the
    range of the lines of ``rows`` (quarantine rows of one batch of one file): (source_line, raw_sha256)."""
    lines = [r[3] for r in rows]
    return _QUARANTINED_BEFORE_SQL, (rows[0][2], file_sha256, min(lines), max(lines))


def _not_quarantined_before(
    cur: psycopg.Cursor, rows: list[tuple], file_sha256: str | None, by_type: Counter, counts: Counts
) -> list[tuple]:
    """The quarantine rows of a batch minus the lines an earlier version of the same file already
    has pending; those count as duplicates, so a file that grows is not quarantined again and again."""
    if file_sha256 is None:  # a replay: its rows are the pending ones themselves
        return rows
    before = {(line, sha.rstrip()) for line, sha in cur.execute(*quarantined_before_query(rows, file_sha256))}
    if not before:
        return rows
    kept = []
    for row in rows:
        if (row[3], row[9]) in before:
            counts.duplicates += 1
            by_type[row[5]] -= 1
            if by_type[row[5]] <= 0:
                del by_type[row[5]]
        else:
            kept.append(row)
    return kept


# Pending quarantine rows from earlier versions of this path whose line was the file's unterminated
# last line (it ran to the end of that version), with that version's size.
_PARTIAL_LINES_SQL = """
SELECT DISTINCT ON (q.file_sha256)
       q.quarantine_id, q.source_line, q.byte_offset, f.size_bytes - q.byte_offset, q.raw_sha256
FROM quarantine q
JOIN ingest_files f ON f.file_sha256 = q.file_sha256
WHERE q.source_file = %(path)s AND q.replayed_at IS NULL AND NOT q.raw_truncated
  AND q.failure_type <> 'conflicting_duplicate'
  AND q.file_sha256 <> %(sha)s
  AND f.size_bytes - q.byte_offset BETWEEN 1 AND %(max_line)s
ORDER BY q.file_sha256, q.byte_offset DESC
"""


def supersede_partial_lines(cur: psycopg.Cursor, path: Path, source_file: str, sha256: str) -> list[int]:
    """Resolve the quarantined partial last line of an earlier version of this file.

    A producer still writing a file when it was ingested leaves its last line cut off; that line
    was quarantined. When the grown file is ingested, the same bytes start the line at the same
    offset, and this ingestion has just processed that line in full (accepted, a duplicate, or
    quarantined afresh). The old row is then marked as resolved (``replayed_at``, with the reason
    in ``last_replay_detail``) instead of staying pending forever. Returns the resolved ids.
    """
    rows = cur.execute(
        _PARTIAL_LINES_SQL, {"path": source_file, "sha": sha256, "max_line": MAX_LINE_BYTES}
    ).fetchall()
    resolved = []
    if rows:
        with open(path, "rb") as handle:
            for quarantine_id, line, offset, length, raw_sha256 in rows:
                handle.seek(offset)
                head = handle.read(length + 1)
                # the same bytes, and the line goes on in this version (it was cut, not complete)
                if len(head) == length + 1 and head[-1:] not in (b"\n", b"\r"):
                    if hashlib.sha256(head[:length]).hexdigest() == raw_sha256:
                        resolved.append((quarantine_id, line))
    if not resolved:
        return []
    # Only rows still pending: a replay may have resolved one since it was read above (it held the
    # row's lock; this waited for it and must not overwrite its outcome), and a discarded row is
    # final too (the quarantine table's guard refuses to change it).
    updated = cur.execute(
        """UPDATE quarantine q SET replayed_at = now(), last_replay_detail = r.detail
           FROM unnest(%s::bigint[], %s::text[]) AS r(quarantine_id, detail)
           WHERE q.quarantine_id = r.quarantine_id AND q.replayed_at IS NULL AND q.discarded_at IS NULL
           RETURNING q.quarantine_id""",
        (
            [quarantine_id for quarantine_id, _ in resolved],
            [
                f"superseded: {source_file} grew after this partial last line was read; line {line} "
                f"was ingested in full from the longer file (sha256 {sha256[:12]}…)"
                for _, line in resolved
            ],
        ),
    ).fetchall()
    return sorted(r[0] for r in updated)


def stage_sql() -> str:
    """DDL of the session temp table that error events are staged in."""
    return runtime_sql("ingest_stage.sql")
