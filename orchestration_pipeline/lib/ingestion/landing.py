"""Watching the landing directory for new event files, with a small resumable cursor."""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration_pipeline.lib.ingestion.files import has_event_file_name


class UnreadableCursor(ValueError):
    """A stored cursor that is not one :func:`scan_landing` wrote (garbage, or an older format)."""


@dataclass(frozen=True)
class LandingScan:
    new_files: list[str]
    cursor: dict[str, Any]

    @property
    def run_key(self) -> str:
        digest = hashlib.sha256("\n".join(sorted(self.new_files)).encode()).hexdigest()[:16]
        return f"landing-{self.cursor['ctime_ns']}-{digest}"


def load_cursor(text: str | None) -> dict[str, Any] | None:
    """The cursor stored as JSON text; ``None`` for no cursor.

    Raises :class:`UnreadableCursor`, saying why, for anything else.
    """
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UnreadableCursor(f"not JSON ({exc})") from exc
    return validate_cursor(data)


def validate_cursor(cursor: Any) -> dict[str, Any] | None:
    """``{"ctime_ns": int, "names": [str, ...]}`` normalized; :class:`UnreadableCursor` otherwise."""
    if cursor is None:
        return None
    if not isinstance(cursor, dict):
        raise UnreadableCursor(f"expected a JSON object, got {type(cursor).__name__}")
    if "ctime_ns" not in cursor:
        raise UnreadableCursor(f"no 'ctime_ns' (keys: {sorted(map(str, cursor))})")
    mark = cursor["ctime_ns"]
    if isinstance(mark, bool) or not isinstance(mark, (int, str)):
        raise UnreadableCursor(f"'ctime_ns' is not an integer: {mark!r}")
    try:
        mark = int(mark)
    except ValueError as exc:
        raise UnreadableCursor(f"'ctime_ns' is not an integer: {mark!r}") from exc
    names = cursor.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UnreadableCursor("'names' is not a list of strings")
    return {"ctime_ns": mark, "names": names}


def scan_landing(landing: Path, cursor: dict[str, Any] | None) -> LandingScan:
    """Files whose effective change time is after the cursor (or at it, but not yet seen).

    A file's effective change time is the newest ``ctime`` of the file (followed through a
    symlink), of the symlink itself, and of every directory between ``landing`` and the file.
    ``ctime`` moves when something is renamed into place, but renaming or moving a directory
    does not touch the files inside it, and a symlink's target keeps its own ``ctime``; taking
    the maximum sees a spool file or directory that was written before the last scan but
    renamed (or linked) in after it. Directory stats are cached, so a scan is linear in the
    number of files. The price: a directory's ``ctime`` also moves when an entry is added to or
    removed from it, so activity in a subdirectory re-reports the files already in it (ingestion
    deduplicates by file hash, so that costs a no-op run, never a duplicate).

    The cursor holds one timestamp plus the names at exactly that timestamp, so it stays small
    however many files land: a file is named by itself when its own change time is the newest,
    otherwise by the deepest directory above it that carries that time (one entry for a whole
    directory moved in). Files are selected exactly as directory ingestion selects them
    (:func:`~orchestration_pipeline.lib.ingestion.files.is_event_file`). Raises :class:`UnreadableCursor` for a malformed cursor.
    """
    cursor = validate_cursor(cursor)
    watermark = cursor["ctime_ns"] if cursor else -1
    seen_at_mark = set(cursor["names"]) if cursor else set()
    # relative directory -> (effective ctime, deepest directory carrying it); "." is the root,
    # whose own ctime moves whenever anything lands and so does not count.
    dirs: dict[Path, tuple[int, str]] = {Path("."): (-1, "")}

    def dir_mark(rel: Path) -> tuple[int, str]:
        if rel not in dirs:
            parent_ctime, parent_key = dir_mark(rel.parent)
            own = (landing / rel).lstat().st_ctime_ns
            dirs[rel] = (own, str(landing / rel)) if own >= parent_ctime else (parent_ctime, parent_key)
        return dirs[rel]

    new: list[tuple[int, str, str]] = []  # (effective ctime, file name, cursor key)
    if landing.is_dir():
        for path in landing.rglob("*"):
            if not has_event_file_name(path, landing):
                continue
            try:
                link = path.lstat()  # one stat for a plain file; a symlink's target is stat'ed too
                target = path.stat() if stat.S_ISLNK(link.st_mode) else link
                if not stat.S_ISREG(target.st_mode):  # as is_event_file: regular files only
                    continue
                own = max(target.st_ctime_ns, link.st_ctime_ns)
                parent_ctime, parent_key = dir_mark(path.relative_to(landing).parent)
            except FileNotFoundError:  # removed while scanning (or a dangling link)
                continue
            name = str(path)
            ctime, key = (own, name) if own >= parent_ctime else (parent_ctime, parent_key)
            if ctime > watermark or (ctime == watermark and key not in seen_at_mark):
                new.append((ctime, name, key))
    if not new:
        return LandingScan([], cursor or {"ctime_ns": watermark, "names": []})
    top = max(c for c, _, _ in new)
    keys_at_top = {k for c, _, k in new if c == top}
    if top == watermark:
        keys_at_top |= seen_at_mark
    return LandingScan(sorted(n for _, n, _ in new), {"ctime_ns": top, "names": sorted(keys_at_top)})
