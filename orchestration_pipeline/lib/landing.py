"""Watching the landing directory for new event files, with a small resumable cursor."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration_pipeline.lib.ingest import is_event_file


@dataclass(frozen=True)
class LandingScan:
    new_files: list[str]
    cursor: dict[str, Any]

    @property
    def run_key(self) -> str:
        digest = hashlib.sha256("\n".join(sorted(self.new_files)).encode()).hexdigest()[:16]
        return f"landing-{self.cursor['ctime_ns']}-{digest}"


def scan_landing(landing: Path, cursor: dict[str, Any] | None) -> LandingScan:
    """Files whose change time is after the cursor (or at it, but not yet seen).

    ``ctime`` moves when a file is renamed into place, so a spool file that was written before
    the last scan but renamed after it is still seen. The cursor holds one timestamp plus the
    names at exactly that timestamp, so it stays small however many files land. Files are
    selected exactly as directory ingestion selects them (:func:`is_event_file`).
    """
    watermark = int(cursor["ctime_ns"]) if cursor else -1
    seen_at_mark = set(cursor.get("names", [])) if cursor else set()
    new: list[tuple[int, str]] = []
    if landing.is_dir():
        for path in landing.rglob("*"):
            if not is_event_file(path, landing):
                continue
            ctime = path.stat().st_ctime_ns
            name = str(path)
            if ctime > watermark or (ctime == watermark and name not in seen_at_mark):
                new.append((ctime, name))
    if not new:
        return LandingScan([], cursor or {"ctime_ns": watermark, "names": []})
    top = max(c for c, _ in new)
    names_at_top = {n for c, n in new if c == top}
    if top == watermark:
        names_at_top |= seen_at_mark
    return LandingScan(sorted(n for _, n in new), {"ctime_ns": top, "names": sorted(names_at_top)})
