"""Worker processes that parse batches while the ingesting process writes the previous one."""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Iterable, Iterator

from orchestration_pipeline.lib.ingestion.parse_worker import read_frame, write_frame
from orchestration_pipeline.lib.ingestion.rows import ParsedBatch


class ParseWorkerDied(RuntimeError):
    """A parse worker process exited mid-file; the file's transaction is rolled back."""


class ParsePool:
    """Worker processes that parse batches while this process writes the previous one.

    Parsing is CPU-bound Python and writing waits on PostgreSQL, so on a multi-core machine the
    two overlap. Each worker is ``python -m orchestration_pipeline.lib.ingestion.parse_worker`` fed over its
    stdin/stdout, with one batch in flight per worker (no pipe deadlock, bounded memory). A worker
    that dies (e.g. OOM-killed) fails the file at once; workers exit when this process dies.
    """

    def __init__(self, workers: int):
        import subprocess
        import sys

        self.broken = False
        self._procs = [
            subprocess.Popen(
                [sys.executable, "-m", "orchestration_pipeline.lib.ingestion.parse_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
            for _ in range(max(1, workers))
        ]

    def _send(self, proc, job: tuple) -> None:
        try:
            write_frame(proc.stdin, pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, OSError):
            raise ParseWorkerDied(self._death(proc)) from None

    def _receive(self, proc) -> ParsedBatch:
        frame = read_frame(proc.stdout)
        if frame is None:
            raise ParseWorkerDied(self._death(proc))
        status, value = pickle.loads(frame)
        if status != "ok":
            raise RuntimeError(f"parse worker failed: {value}")
        return value

    @staticmethod
    def _death(proc) -> str:
        try:
            code = proc.wait(timeout=5)
        except Exception:
            code = None
        return (
            f"parse worker {proc.pid} exited mid-file (exit code {code}); nothing from this file was "
            "committed — rerun the ingestion, or pass parse_workers=0 if workers are being killed for memory"
        )

    def map(self, jobs: Iterable[tuple]) -> Iterator[ParsedBatch]:
        """Results in job order. A worker gets its next job before its result is handed on, so
        every worker parses while the caller writes (one worker is enough to overlap the two)."""
        jobs = iter(jobs)
        in_flight: deque = deque()  # workers with a job, in submission order
        completed = False
        try:
            for proc in self._procs:
                job = next(jobs, None)
                if job is None:
                    break
                self._send(proc, job)
                in_flight.append(proc)
            while in_flight:
                proc = in_flight.popleft()
                result = self._receive(proc)
                job = next(jobs, None)
                if job is not None:
                    self._send(proc, job)
                    in_flight.append(proc)
                yield result
            completed = True
        finally:
            if not completed:  # results still in flight would be read by the next file: start afresh
                self.broken = True

    def close(self) -> None:
        """Stop the workers at once. Closing both pipes ends a worker waiting for a job (EOF) and one
        blocked writing a result that will never be read (EPIPE), so nothing waits on a full pipe."""
        for proc in self._procs:
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except Exception:
                proc.kill()
                proc.wait()
