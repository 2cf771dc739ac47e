"""A parse worker process: ``python -m orchestration_pipeline.lib.ingestion.parse_worker``.

Reads jobs from stdin and writes results to stdout, each frame an 8-byte big-endian length followed
by a pickle. A job is the argument tuple of :func:`orchestration_pipeline.lib.ingestion.rows.parse_batch`;
a result is ``("ok", ParsedBatch)`` or ``("error", message)``. The worker exits when stdin closes,
so it never outlives the process that started it. Being a plain module run with ``-m`` (not
multiprocessing), it never re-imports the caller's ``__main__``.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from typing import BinaryIO

_HEADER = struct.Struct(">Q")


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame's payload, or None at end of stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (length,) = _HEADER.unpack(header)
    payload = stream.read(length)
    if len(payload) < length:
        return None
    return payload


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def main() -> int:
    # Ctrl-C in a terminal reaches the whole process group: the ingesting process handles it and
    # closes the pipes, which ends this worker (EOF on stdin, or EPIPE on stdout) without a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from orchestration_pipeline.lib.ingestion.rows import parse_batch

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (frame := read_frame(stdin)) is not None:
        try:
            result = ("ok", parse_batch(*pickle.loads(frame)))
        except Exception as exc:  # reported to the parent, which fails the file
            result = ("error", f"{type(exc).__name__}: {exc}")
        try:
            write_frame(stdout, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        except BrokenPipeError:
            # The parent is gone (killed): nobody to report to. Point stdout at /dev/null so the
            # interpreter's final flush does not print a traceback either (as the Python docs advise).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
