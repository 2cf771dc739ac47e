"""Finding event files and reading them as lines and blocks of lines.

A directory is searched for ``*.jsonl``/``*.ndjson`` (any case; hidden names and ``*.tmp`` skipped).
Files are read in blocks of whole lines so that a parse worker can take a block as it is; a line
over the limit is cut and remembered with its full size and hash, never held whole in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.ingestion.envelope import MAX_LINE_BYTES

EVENT_FILE_SUFFIXES = (".jsonl", ".ndjson")  # matched case-insensitively
UTF8_BOM = b"\xef\xbb\xbf"


class NotARegularFile(OrchError):
    """An explicit ingest path is a device, FIFO or socket, which cannot be ingested."""


def has_event_file_name(path: Path, root: Path | None = None) -> bool:
    """True for a name that directory ingestion picks up (and the landing sensor sees).

    The suffix is ``.jsonl`` or ``.ndjson`` in any case. Hidden files, and files in hidden
    directories below ``root``, are skipped: producers commonly write in-progress files there.
    In-progress spool files (``*.tmp``) never match the suffix.
    """
    if path.suffix.lower() not in EVENT_FILE_SUFFIXES:
        return False
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return not any(part.startswith(".") for part in parts)


def is_event_file(path: Path, root: Path | None = None) -> bool:
    """A regular file (or a link to one) with an event file's name (:func:`has_event_file_name`)."""
    return has_event_file_name(path, root) and path.is_file()


def discover_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files to ingest: explicit files as given; directories searched for event files.

    See :func:`is_event_file` for what a directory search picks up. An explicit path that is
    neither a regular file nor a directory (``/dev/null``, a FIFO) is refused.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if is_event_file(p, path))
        elif path.is_file():
            found.append(path)
        elif path.exists():
            raise NotARegularFile(
                f"{path} is not a regular file (a device, FIFO or socket) — give event files or directories"
            )
        else:
            raise FileNotFoundError(f"no such file or directory: {path} — check the path")
    return list(dict.fromkeys(p.resolve() for p in found))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(slots=True)
class Line:
    number: int
    offset: int
    raw: bytes
    truncated_total: int | None = None  # set when the line exceeded the read limit: its full size
    full_sha256: str | None = None  # and the hash of the whole line


def _read_line(handle: BinaryIO) -> tuple[bytes, int, int | None, str | None] | None:
    """The next line without its newline, the bytes it took, and for an over-long line its full
    size and sha256 (only its first part is kept); None at the end of the file."""
    chunk = handle.readline(MAX_LINE_BYTES + 2)
    if not chunk:
        return None
    taken = len(chunk)
    total = digest = None
    if not chunk.endswith(b"\n") and len(chunk) > MAX_LINE_BYTES:
        # drain the rest of the over-long line, measuring and hashing it without holding it
        digest = hashlib.sha256(chunk)
        total = len(chunk)
        while True:
            more = handle.readline(1 << 20)
            if not more:
                break
            taken += len(more)
            if more.endswith(b"\n"):
                more = more.rstrip(b"\r\n")
                total += len(more)
                digest.update(more)
                break
            total += len(more)
            digest.update(more)
    return chunk.rstrip(b"\r\n"), taken, total, digest.hexdigest() if digest else None


def _skip_bom(handle: BinaryIO) -> int:
    """Step over a UTF-8 byte-order mark at the handle's position; returns the bytes skipped.

    Called only at the start of a file (offset 0): a BOM anywhere else is data.
    """
    head = handle.read(len(UTF8_BOM))
    if head == UTF8_BOM:
        return len(head)
    if head:
        handle.seek(-len(head), io.SEEK_CUR)
    return 0


def iter_lines(handle: BinaryIO, number: int = 0, offset: int = 0) -> Iterator[Line]:
    """Non-blank lines with their 1-based numbers and byte offsets, in bounded memory.

    A line longer than the read limit yields its first part (enough to quarantine it as too
    large) and the rest is skipped without being held in memory. ``number`` and ``offset`` are
    the lines and bytes of the file before ``handle``'s position. At the start of a file
    (both 0) a UTF-8 BOM is skipped: line 1 then starts at byte 3. ``handle`` must be seekable.
    """
    if number == 0 and offset == 0:
        offset = _skip_bom(handle)
    while (line := _read_line(handle)) is not None:
        raw, taken, total, full_sha256 = line
        number += 1
        if raw.strip():
            yield Line(number, offset, raw, total, full_sha256)
        offset += taken


@dataclass(slots=True)
class LineBlock:
    """Consecutive whole lines of a file as one bytes object: what a parse worker is sent.

    Splitting it into lines is left to the worker, so the ingesting process handles no line
    one at a time. ``lines()`` gives exactly what :func:`iter_lines` gives for the same bytes.
    """

    data: bytes
    number: int  # lines of the file before this block
    offset: int  # bytes of the file before this block

    def lines(self) -> list[Line]:
        pieces = self.data.split(b"\n")
        last = pieces.pop()  # after the last newline: nothing, or a last line without one
        # lines iter_lines would cut (its read limit counts the newline), or a BOM it would skip
        if (
            max(map(len, pieces), default=0) > MAX_LINE_BYTES + 1
            or len(last) > MAX_LINE_BYTES
            or (self.offset == 0 and self.number == 0 and self.data.startswith(UTF8_BOM))
        ):
            return list(iter_lines(io.BytesIO(self.data), self.number, self.offset))
        if last:
            pieces.append(last)
        out = []
        number, offset = self.number, self.offset
        for piece in pieces:
            number += 1
            raw = piece.rstrip(b"\r")
            if raw.strip():
                out.append(Line(number, offset, raw))
            offset += len(piece) + 1
        return out


_BLOCK_BYTES = 8 * 1024 * 1024  # read size and largest block; must exceed MAX_LINE_BYTES + 2


def iter_blocks(handle: BinaryIO, max_lines: int) -> Iterator[LineBlock | list[Line]]:
    """The file in order as blocks of at most ``max_lines`` whole lines and ``_BLOCK_BYTES`` bytes.

    A line too long to fit a block comes alone, already cut as :func:`iter_lines` cuts it (a list
    of that one line, or an empty list if it is blank), so memory stays bounded whatever the line
    and file sizes. ``handle`` must be seekable and at the start of the file; a UTF-8 BOM there is
    skipped (line 1 starts at byte 3), as :func:`iter_lines` skips it.
    """
    if max_lines < 1:
        raise ValueError(f"max_lines must be at least 1, got {max_lines}")
    number = 0
    offset = _skip_bom(handle)
    carry = b""  # the start of a line not yet complete
    while True:
        data = handle.read(_BLOCK_BYTES - len(carry))
        if carry:
            data, carry = carry + data, b""
        if not data:
            return
        if len(data) < _BLOCK_BYTES:  # the end of the file: the last line needs no newline
            cut = len(data)
        else:
            cut = data.rfind(b"\n") + 1
            if not cut:  # one line fills the whole block: read it again as iter_lines does
                handle.seek(offset)
                raw, taken, total, full_sha256 = _read_line(handle)  # type: ignore[misc]
                number += 1
                if raw.strip():
                    yield [Line(number, offset, raw, total, full_sha256)]
                offset += taken
                continue
        lines = data.count(b"\n", 0, cut) + (data[cut - 1] != 0x0A)
        if lines > max_lines:  # end the block after its max_lines-th newline
            end = -1
            for _ in range(max_lines):
                end = data.index(b"\n", end + 1)
            cut, lines = end + 1, max_lines
        block, carry = (data, b"") if cut == len(data) else (data[:cut], data[cut:])
        yield LineBlock(block, number, offset)
        number += lines
        offset += cut


# --- parsing a batch (in-process, or in a worker process for large files) ------------------
