"""Where archive files live: ``$ORCH_HOME/archive/<table>/<YYYY-MM-DD>.parquet``, or under any URI
pyarrow's filesystems accept (``s3://bucket/prefix``, ``gs://…``, ``file:///…``).

A file is written under a temporary name beside its final one, flushed and (on a local disk)
fsynced, then renamed into place, so a reader never sees half a file and a crash leaves at most a
temporary file, which the next export of that day removes. Its sha256 and size are computed from
the bytes as they are written.

A day archived again after part of it was purged (rows that arrived late) gets a new file
``<YYYY-MM-DD>.<part>.parquet``: a file whose rows were purged is never overwritten.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow.fs as pafs

_TMP_MARK = ".tmp-"
_READ_CHUNK = 8 << 20


@dataclass(frozen=True)
class WrittenFile:
    uri: str
    sha256: str
    size: int


class _HashingSink(io.RawIOBase):
    """A writable stream that passes bytes on to ``target`` and hashes and counts them on the way."""

    def __init__(self, target) -> None:
        super().__init__()
        self._target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data)
        self._target.write(view)
        self.digest.update(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._target.flush()


def _is_uri(location: str) -> bool:
    return "://" in location


def filesystem_of(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for ``uri`` (a local path or a URI) and the path within it."""
    if not _is_uri(uri):
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(
            f"archive location {uri} is not one pyarrow can open ({exc}) — fix the URI"
        ) from None


def archive_file_uri(root: str, table: str, day: date, part: int = 1) -> str:
    """The file of ``table``'s archive of ``day`` (``part`` > 1: a later archive of late rows)."""
    name = f"{day:%Y-%m-%d}.parquet" if part == 1 else f"{day:%Y-%m-%d}.{part}.parquet"
    base = root.rstrip("/") if _is_uri(root) else str(Path(root).resolve())
    return f"{base}/{table}/{name}"


@contextmanager
def atomic_write(uri: str) -> Iterator[_HashingSink]:
    """A stream to write ``uri``'s new content into; on success it is durable and renamed into place
    (on error, the temporary file is removed and ``uri`` is untouched). The sink's ``digest`` and
    ``size`` describe exactly the bytes written."""
    fs, path = filesystem_of(uri)
    parent, name = path.rsplit("/", 1)
    tmp = f"{parent}/.{name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    local = isinstance(fs, pafs.LocalFileSystem)
    fs.create_dir(parent, recursive=True)
    _remove_stale_temporaries(fs, parent, name)
    try:
        if local:
            with open(tmp, "wb") as handle:
                sink = _HashingSink(handle)
                yield sink
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(parent)
        else:
            with fs.open_output_stream(tmp) as stream:
                sink = _HashingSink(stream)
                yield sink
            fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except (FileNotFoundError, OSError):
            pass
        raise


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (a directory fsync; not every platform supports it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(fs: pafs.FileSystem, parent: str, name: str) -> None:
    """Temporary files of ``name`` left by an export that was killed (the caller holds the day's lock)."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
    except OSError:
        return
    for info in infos:
        if info.base_name.startswith(f".{name}{_TMP_MARK}"):
            try:
                fs.delete_file(info.path)
            except OSError:
                pass


def file_info(uri: str) -> tuple[bool, int | None]:
    """(exists, size in bytes) of ``uri``."""
    fs, path = filesystem_of(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return False, None
    return True, info.size


def file_sha256(uri: str) -> tuple[str, int]:
    """sha256 and size of the bytes stored at ``uri``, read in chunks; FileNotFoundError if it is gone."""
    fs, path = filesystem_of(uri)
    digest = hashlib.sha256()
    size = 0
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(_READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def open_input(uri: str):
    """A random-access pyarrow file for reading ``uri`` (Parquet needs seeking)."""
    fs, path = filesystem_of(uri)
    return fs.open_input_file(path)
