"""What an operator asks of the index: where it is, its size, the backlog, the dead letters."""

from __future__ import annotations

from typing import Any

import psycopg

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.index.outbox import backlog
from orchestration_pipeline.lib.index.runtime import IndexRuntime


def index_status(conn: psycopg.Connection, runtime: IndexRuntime) -> dict[str, Any]:
    """One flat dict: location, embedder, points, payload indexes, backlog, dead letters, last
    reconciliation. An unreachable index is reported (``index_error``), not raised."""
    pending = backlog(conn)
    decisions = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    dead = conn.execute("SELECT count(*) FROM search_dead_letters WHERE replayed_at IS NULL").fetchone()[0]
    last = conn.execute(
        "SELECT run_id, finished_at, remaining_drift FROM index_reconcile_runs ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    end_read(conn)
    body: dict[str, Any] = {
        "index": f"{runtime.location.kind} {runtime.location.location}",
        "quantization": "on" if runtime.quantization else "off",
        "decisions": decisions,
        "outbox_pending": pending.pending,
        "outbox_oldest_age_s": round(pending.oldest_age_s, 3),
        "outbox_retrying": pending.retrying,
        "dead_letters": dead,
        "last_reconcile": None
        if last is None
        else f"run {last[0]} at {last[1]:%Y-%m-%d %H:%M:%S%z}, drift {last[2]}",
    }
    try:
        with runtime.open() as (index, embedder):
            body["embedder"] = embedder.name
            body["points"] = index.count()
            body["payload_indexes"] = dict(index.payload_indexes())
    except Exception as exc:  # reported, so the rest of the status still shows
        body["index_error"] = f"{type(exc).__name__}: {exc}"
    return body


def dead_letters(conn: psycopg.Connection, *, include_replayed: bool = False) -> list[dict[str, Any]]:
    """Dead letters, newest first, with their error group's template."""
    rows = conn.execute(
        """SELECT d.dead_letter_id, d.entity_id, d.version, d.op, d.attempts, d.fingerprint,
                  d.error_class || ': ' || d.error_text, d.dead_at, d.replayed_at, d.replayed_by,
                  e.message_template
           FROM search_dead_letters d LEFT JOIN search_dead_letter_errors e USING (fingerprint)
           WHERE %s OR d.replayed_at IS NULL
           ORDER BY d.dead_letter_id DESC""",
        (include_replayed,),
    ).fetchall()
    end_read(conn)
    keys = ("dead_letter_id", "entity_id", "version", "op", "attempts", "fingerprint", "error", "dead_at",
            "replayed_at", "replayed_by", "error_template")  # fmt: skip
    return [dict(zip(keys, row, strict=True)) for row in rows]
