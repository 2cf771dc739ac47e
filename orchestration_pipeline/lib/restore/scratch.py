"""Scratch databases: created by a drill, marked as such, the only place a restore may write, and
removed afterwards, also when the drill that made one was killed.

A scratch database is ``orch_drill_<drill id hex>`` on the source's server. The drill first records
that name in its ``restore_drills`` row (committed), then creates the database from ``template0``
and marks it with ``COMMENT ON DATABASE`` (:func:`marker`). :func:`require_scratch` refuses any
target that is the source database, is not named in this drill's row, or does not carry this
drill's marker: pg_restore and ``DROP DATABASE`` never run without it.

Each drill holds a session advisory lock on its id for its whole life (:class:`DrillLease`); the
server releases it when the drill's process dies, however it dies. :func:`clean_leftovers` takes
that lock for every drill whose scratch database was not dropped: taking it proves the drill is
gone, and its database (marked, or not yet marked if it was killed between CREATE and COMMENT)
is dropped. Databases kept for forensics (``--keep``) stay until discarded explicitly.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from typing import Any

import psycopg
from psycopg import sql

from orchestration_pipeline.lib.db import connect
from orchestration_pipeline.lib.embedded import with_database
from orchestration_pipeline.lib.restore.errors import NotScratch, RestoreError
from orchestration_pipeline.lib.restore.tools import PgTools, libpq_target, stderr_tail

SCRATCH_PREFIX = "orch_drill_"


class RestoreFailed(Exception):
    """pg_restore did not complete: the backup is not shown to restore (a failed drill, not an error)."""


def scratch_name(drill_id: uuid.UUID) -> str:
    return f"{SCRATCH_PREFIX}{drill_id.hex}"


def marker(drill_id: uuid.UUID, source_db: str) -> str:
    """The comment that marks a drill's scratch database."""
    return (
        f"orchestration-pipeline restore drill {drill_id}: scratch copy of {source_db}, "
        "dropped when the drill ends (docs/runbooks/restore.md)"
    )


def lease_key(drill_id: uuid.UUID) -> int:
    """The advisory lock a drill holds while it lives (64 bits of a hash of its id)."""
    return int.from_bytes(
        hashlib.sha256(f"orch-restore-drill:{drill_id}".encode()).digest()[:8], "big", signed=True
    )


class DrillLease:
    """A session advisory lock on the drill's id, on a connection of its own, held until closed."""

    def __init__(self, dsn: str, drill_id: uuid.UUID):
        self.key = lease_key(drill_id)
        self.conn = connect(dsn, autocommit=True)
        self.conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))

    def close(self) -> None:
        """Release the lock now (a session ending releases it too, but only once the server has
        noticed), then close."""
        try:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except psycopg.Error:
            pass  # the session is gone, and its lock with it
        finally:
            self.conn.close()

    def __enter__(self) -> DrillLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _source_db(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT current_database()").fetchone()[0]


def create_scratch(conn: psycopg.Connection, drill_id: uuid.UUID) -> str:
    """Name the scratch database in the drill's row, create it like the source (encoding, locale)
    from template0, and mark it. ``conn``: an autocommit connection to the source database."""
    name, source = scratch_name(drill_id), _source_db(conn)
    updated = conn.execute(
        "UPDATE restore_drills SET scratch_db = %s WHERE drill_id = %s AND state = 'running'",
        (name, drill_id),
    ).rowcount
    if updated != 1:
        raise RestoreError(f"drill {drill_id} is not running — start a new drill")
    encoding, collate, ctype = conn.execute(
        """SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database
           WHERE datname = current_database()"""
    ).fetchone()
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        sql.Identifier(name), sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype)
    )
    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        user = conn.info.user
        raise RestoreError(
            f"the role {user} may not create databases, so the drill has nowhere to restore — grant it: "
            f"ALTER ROLE {user} CREATEDB"
        ) from None
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(marker(drill_id, source))
        )
    )
    return name


def _comment(conn: psycopg.Connection, name: str) -> tuple[bool, str | None]:
    """Whether database ``name`` exists, and its comment (the scratch marker, for a scratch database)."""
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    return (row is not None, row[0] if row else None)


def require_scratch(
    conn: psycopg.Connection, name: str, drill_id: uuid.UUID, *, unmarked_ok: bool = False
) -> bool:
    """Refuse (:class:`NotScratch`) unless ``name`` is this drill's scratch database; returns whether
    it exists. ``unmarked_ok``: a database killed between its creation and its marking may be
    dropped (never restored into)."""
    source = _source_db(conn)
    if name == source:
        raise NotScratch(
            f"refusing to touch {name}: it is the source database — a drill restores only into a scratch "
            "database it creates"
        )
    row = conn.execute("SELECT drill_id FROM restore_drills WHERE scratch_db = %s", (name,)).fetchone()
    if row is None or row[0] != drill_id:
        raise NotScratch(
            f"refusing to touch {name}: no drill of {source} created it as its scratch database — "
            "a drill restores only into a database it creates ('orchestration-pipeline drill')"
        )
    exists, comment = _comment(conn, name)
    if exists and comment != marker(drill_id, source) and not (unmarked_ok and comment is None):
        raise NotScratch(
            f"refusing to touch {name}: it is not marked as drill {drill_id}'s scratch database "
            f"(its comment is {comment!r}) — leave it, or drop it by hand if you know what it is"
        )
    return exists


def restore_into(
    tools: PgTools, conn: psycopg.Connection, source_dsn: str, name: str, drill_id: uuid.UUID,
    dump_path: str, *, jobs: int = 2, timescaledb: bool = False,
) -> None:  # fmt: skip
    """pg_restore the dump into the scratch database ``name`` (checked first: never anywhere else).

    Owners and privileges are restored as dumped (the roles are the server's, shared with the
    source). ``--exit-on-error``: the first failed statement fails the restore
    (:class:`RestoreFailed`, with pg_restore's words).
    """
    if not require_scratch(conn, name, drill_id):
        raise NotScratch(f"refusing to restore into {name}: it does not exist — the drill creates it first")
    target = with_database(source_dsn, name)
    if timescaledb:  # its catalog must be in place, and its triggers off, while the dump loads
        _timescale(target, "CREATE EXTENSION IF NOT EXISTS timescaledb", "SELECT timescaledb_pre_restore()")
    conninfo, env = libpq_target(target)
    args = [
        tools.pg_restore.path,
        "--exit-on-error",
        f"--jobs={max(1, jobs)}",
        f"--dbname={conninfo}",
        dump_path,
    ]
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RestoreFailed(f"pg_restore failed (exit {done.returncode}): {stderr_tail(done.stderr)}")
    if timescaledb:
        _timescale(target, "SELECT timescaledb_post_restore()")


def _timescale(dsn: str, *statements: str) -> None:
    """TimescaleDB's restore steps, run in the scratch database (outside any transaction)."""
    with connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def drop_scratch(
    conn: psycopg.Connection, name: str, drill_id: uuid.UUID, *, unmarked_ok: bool = False
) -> bool:
    """Drop this drill's scratch database (checked first) and note it; returns whether it existed."""
    existed = require_scratch(conn, name, drill_id, unmarked_ok=unmarked_ok)
    if existed:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    conn.execute("UPDATE restore_drills SET scratch_dropped_at = now() WHERE drill_id = %s", (drill_id,))
    return existed


def clean_leftovers(conn: psycopg.Connection, *, include_kept: bool = False) -> list[dict[str, Any]]:
    """Drop the scratch databases of drills that are gone (killed, or ended without cleaning up),
    and mark a gone drill's row that still says ``running`` as ``abandoned``. Kept databases only
    with ``include_kept``. ``conn``: an autocommit connection to the source database. Returns the
    scratch databases removed."""
    rows = conn.execute(
        """SELECT drill_id, scratch_db, state, kept FROM restore_drills
           WHERE state = 'running' OR (scratch_db IS NOT NULL AND scratch_dropped_at IS NULL)
           ORDER BY started_at"""
    ).fetchall()
    removed = []
    for drill_id, name, state, kept in rows:
        if kept and not include_kept:
            continue
        key = lease_key(drill_id)
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            continue  # that drill is alive: its database is in use
        try:
            if name is not None:
                existed = drop_scratch(conn, name, drill_id, unmarked_ok=state == "running")
                removed.append(
                    {"drill_id": str(drill_id), "scratch_db": name, "state": state, "existed": existed}
                )
            if state == "running":
                conn.execute(
                    """UPDATE restore_drills SET state = 'abandoned', finished_at = now(),
                           error = 'the drill ended without finishing (killed); a later drill removed what it left'
                       WHERE drill_id = %s AND state = 'running'""",
                    (drill_id,),
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return removed
