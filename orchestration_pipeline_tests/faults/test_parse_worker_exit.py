"""An ingestion that uses parse workers ends promptly, and quietly, when it fails or is interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl

pytestmark = [pytest.mark.db, pytest.mark.slow]


class _Stop(Exception):
    pass


def _big_file(tmp_path, lines: int = 30_000):
    # Results of a few thousand lines are far larger than a pipe's buffer: a worker parsing ahead
    # blocks writing its result while the ingesting process is busy (or failing) elsewhere.
    return write_jsonl(
        tmp_path / "big.jsonl",
        (make_event("decision", payload={"rationale": "r" * 200}) for _ in range(lines)),
    )


def test_a_failure_mid_file_stops_the_workers_at_once(orch_dsn, tmp_path):
    path = _big_file(tmp_path)

    def fail_on_first_batch(info):
        if not info["final"]:
            raise _Stop()

    with connection(orch_dsn) as conn:
        ingestor = Ingestor(
            conn, batch_rows=2_000, parse_workers=1, parallel_min_bytes=0, progress=fail_on_first_batch,
            progress_every_s=0,
        )  # fmt: skip
        started = time.monotonic()
        with pytest.raises(_Stop):
            ingestor.ingest_paths([path])
        elapsed = time.monotonic() - started
    assert elapsed < 5, f"ingest took {elapsed:.1f}s to give up: a worker was left blocked"


def test_ctrl_c_ends_the_ingest_promptly_without_a_worker_traceback(orch_dsn, tmp_path):
    path = _big_file(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys
        from orchestration_pipeline.lib.db import connection
        from orchestration_pipeline.lib.ingestion.ingest import Ingestor

        def progress(info):
            print("progress", flush=True)

        with connection({orch_dsn!r}) as conn:
            try:
                Ingestor(conn, batch_rows=500, parse_workers=1, parallel_min_bytes=0, progress=progress,
                         progress_every_s=0).ingest_paths([{str(path)!r}])
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)
                sys.exit(130)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout.readline() == b"progress\n"
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: the whole process group
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    elapsed = time.monotonic() - started
    assert proc.returncode == 130, err.decode()
    assert elapsed < 5, f"took {elapsed:.1f}s to exit after Ctrl-C"
    assert b"Traceback" not in err, err.decode()
    assert err.decode().strip() == "interrupted"
