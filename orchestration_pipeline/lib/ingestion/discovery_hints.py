"""Why a directory gave ingestion nothing: the files in it that are not event files, and why.

A directory search picks up only event file names (:func:`files.has_event_file_name`). A file
named ``events.json`` or a producer's ``*.tmp`` spool file is skipped without a word, so a
directory holding only such files would ingest nothing and look like success. These helpers name
what was skipped and how event files must be named, so the caller can say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.ingestion.files import EVENT_FILE_SUFFIXES, has_event_file_name, is_event_file
from orchestration_pipeline.lib.wording import plural

NAMING_RULE = (
    f"event files end in {' or '.join(EVENT_FILE_SUFFIXES)} (in any case) and are not hidden (.name) "
    "or in-progress *.tmp files"
)
NOT_EVENT_NAME = "not an event file name"


class NoEventFiles(OrchError):
    """The paths given hold no event file, so there is nothing to ingest."""


@dataclass(frozen=True)
class SkippedFile:
    path: Path  # the directory as given, joined with the file's path below it
    reason: str


def skip_reason(path: Path, root: Path) -> str | None:
    """Why a directory search under ``root`` skips ``path``; None when it is an event file."""
    if is_event_file(path, root):
        return None
    relative = path.relative_to(root)
    if any(part.startswith(".") for part in relative.parts[:-1]):
        return "in a hidden directory (where producers keep in-progress files)"
    if relative.name.startswith("."):
        return "a hidden file (often a producer's in-progress file)"
    if path.suffix.lower() == ".tmp":
        return "an in-progress *.tmp spool file"
    if has_event_file_name(path, root):
        return "not a regular file"
    return NOT_EVENT_NAME


def skipped_files(directory: Path) -> list[SkippedFile]:
    """Every file below ``directory`` that a directory search skips, with the reason, in path order."""
    skipped = []
    for path in sorted(directory.rglob("*")):
        if path.is_dir():
            continue
        reason = skip_reason(path, directory)
        if reason is not None:
            skipped.append(SkippedFile(directory / path.relative_to(directory), reason))
    return skipped


def no_event_files_message(directories: Sequence[Path], *, show: int = 5) -> str:
    """One line for directories that hold no event file: what they hold instead, and the fix."""
    where = ", ".join(str(d) for d in directories)
    skipped = [s for d in directories for s in skipped_files(d)]
    if not skipped:
        found = "no files at all" if len(directories) == 1 else "no files in any of them"
        return f"no event files in {where}: {found} — {NAMING_RULE}; check the path"
    named = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:show])
    if len(skipped) > show:
        named += f"; and {plural(len(skipped) - show, 'more file')}"
    return (
        f"no event files in {where}, {plural(len(skipped), 'file')} skipped ({named}) — {NAMING_RULE}; "
        "rename the files, or name a file itself to ingest it whatever its name"
    )
