"""`orchestration-pipeline dev` starts a Dagster webserver that answers HTTP and stops by its process group."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orchestration_pipeline_tests.conftest import clean_env

pytestmark = [pytest.mark.slow, pytest.mark.db]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dev_serves_the_ui_and_stops_on_sigterm(tmp_path, server_mode, databases):
    home = tmp_path / "orch"
    env = clean_env(ORCH_HOME=str(home))
    if server_mode:
        env.update(
            ORCH_DATABASE_URL=databases.create("orch"),
            TASKS_DATABASE_URL=databases.create("tasks"),
            DAGSTER_DATABASE_URL=databases.create("dagster"),
        )
    port = _free_port()
    cli = str(Path(sys.executable).parent / "orchestration-pipeline")
    log = open(tmp_path / "dev.log", "w+")
    proc = subprocess.Popen(
        [cli, "dev", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        answered = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as resp:
                    answered = resp.status
                    break
            except OSError:
                time.sleep(1)
        log.seek(0)
        assert answered == 200, f"webserver never answered; log:\n{log.read()[-3000:]}"
        # a second `dev` for the same ORCH_HOME refuses at once, naming the running one
        second = subprocess.run(
            [cli, "dev", "--port", str(_free_port())], env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1, second.stderr
        assert (
            f"Dagster is already running for this ORCH_HOME on http://127.0.0.1:{port} (pid {proc.pid})"
            in (second.stderr)
        )
        if not server_mode:
            assert (home / "dagster" / "dagster.yaml").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("dagster dev ignored SIGTERM to its process group")
        subprocess.run([cli, "down"], env=clean_env(ORCH_HOME=str(home)), capture_output=True)
        log.close()
    assert proc.returncode is not None
