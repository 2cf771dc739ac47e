"""``redact=True``: secrets never reach the landing directory; off by default, and the SDK stays light."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestration_pipeline.emit import EventWriter, emit_one
from orchestration_pipeline_tests.conftest import clean_env
from orchestration_pipeline_tests.emit._support import of_type, published, read_events

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "orchestration-pipeline")

GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
PASSWORD = "correct-horse-battery-staple-42"
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvcmNoIn0.c2lnbmF0dXJlLXZhbHVlLWhlcmU"
DB_PASSWORD = "Zq9-wx7-Lm3-secret"
SECRETS = (GITHUB_TOKEN, PASSWORD, BEARER, DB_PASSWORD)


def _landing_text(landing: Path) -> str:
    return "".join(path.read_text() for path in published(landing))


def _emit_secrets(w: EventWriter) -> dict:
    tags = {"api_key": PASSWORD, "region": "eu"}
    w.decision(f"pushed with token {GITHUB_TOKEN}", tags=tags)
    w.error("db_connect", f'curl -H "Authorization: Bearer {BEARER}" https://api.example.com failed')
    with w.command("mysql", argv=["mysql", "--password", DB_PASSWORD, "-h", "db"]):
        pass
    w.metric("rows", 3, unit="count", stage=f"load token={GITHUB_TOKEN}")
    return tags


def test_redact_true_keeps_every_secret_out_of_the_landing_files(tmp_path):
    landing = tmp_path / "landing"
    with EventWriter(landing, source="deploy", session_id="s", redact=True) as w:
        tags = _emit_secrets(w)
    text = _landing_text(landing)
    assert not [secret for secret in SECRETS if secret in text]
    assert w.redactions >= 5  # one per planted value, at least
    events = read_events(landing)  # still what ingestion accepts
    (decision,) = of_type(events, "decision")
    assert decision["payload"]["rationale"].startswith("pushed with token ")
    assert decision["payload"]["tags"]["region"] == "eu"  # what is not a secret stays
    (metric,) = of_type(events, "metric")
    assert metric["stage"].startswith("load ") and GITHUB_TOKEN not in metric["stage"]
    assert tags == {"api_key": PASSWORD, "region": "eu"}  # the caller's own objects are not changed


def test_without_redact_the_secrets_are_written_as_given(tmp_path):
    landing = tmp_path / "landing"
    with EventWriter(landing, source="deploy", session_id="s") as w:
        _emit_secrets(w)
    text = _landing_text(landing)
    assert [secret for secret in SECRETS if secret in text] == list(SECRETS)
    assert w.redactions == 0


def test_the_event_returned_is_the_event_written(tmp_path):
    landing = tmp_path / "landing"
    with EventWriter(landing, source="deploy", session_id="s", redact=True) as w:
        returned = w.decision("rotate", password=PASSWORD)
        clean = w.decision("nothing secret here", attempt=2)
    written = {e["event_id"]: e for e in read_events(landing)}
    assert written[returned["event_id"]] == returned and returned["payload"]["password"] != PASSWORD
    assert written[clean["event_id"]] == clean


def test_source_and_session_id_are_redacted_once_and_name_the_files(tmp_path):
    landing = tmp_path / "landing"
    with EventWriter(landing, source="deploy", session_id=f"token={GITHUB_TOKEN}", redact=True) as w:
        w.decision("started")
    assert GITHUB_TOKEN not in w.session_id
    (event,) = read_events(landing)
    assert event["session_id"] == w.session_id
    assert GITHUB_TOKEN not in _landing_text(landing)


def test_redact_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match="redact"):
        EventWriter(tmp_path, source="x", session_id="s", redact="yes")


def test_emit_one_redacts_when_asked(tmp_path):
    landing = tmp_path / "landing"
    path = emit_one(
        landing,
        "decision",
        source="deploy.sh",
        session_id="s",
        payload={"rationale": f"used {GITHUB_TOKEN}", "password": PASSWORD},
        redact=True,
    )
    text = path.read_text()
    assert GITHUB_TOKEN not in text and PASSWORD not in text
    (event,) = read_events(landing)
    assert event["payload"]["rationale"].startswith("used ")


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_the_redaction_engine_is_imported_only_by_a_redacting_writer(tmp_path):
    result = _run_python(
        f"""
        import json, sys
        from orchestration_pipeline.emit import EventWriter
        before = "orchestration_pipeline.lib.redaction" in sys.modules
        EventWriter({str(tmp_path)!r}, source="x", session_id="s").close()
        plain = "orchestration_pipeline.lib.redaction" in sys.modules
        EventWriter({str(tmp_path)!r}, source="x", session_id="s", redact=True).close()
        print(json.dumps([before, plain, "orchestration_pipeline.lib.redaction" in sys.modules]))
        """
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [False, False, True]


def _cli_emit(landing: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "emit", "decision", "--landing-dir", str(landing), *args],
        capture_output=True,
        text=True,
        env=clean_env(ORCH_SESSION_ID="S1", ORCH_SOURCE="build.sh"),
        timeout=60,
    )


def test_the_cli_redacts_with_redact_and_writes_owner_only_files(tmp_path):
    fields = ("-f", f"rationale=deploy with {GITHUB_TOKEN}", "-f", f"password={PASSWORD}")
    redacted = _cli_emit(tmp_path / "redacted", *fields, "--redact")
    assert redacted.returncode == 0, redacted.stderr
    plain = _cli_emit(tmp_path / "plain", *fields)
    assert plain.returncode == 0, plain.stderr

    (path,) = published(tmp_path / "redacted")
    assert str(path) == redacted.stdout.strip()
    assert GITHUB_TOKEN not in path.read_text() and PASSWORD not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    (event,) = read_events(tmp_path / "redacted")
    assert event["payload"]["rationale"].startswith("deploy with ")
    assert PASSWORD in _landing_text(tmp_path / "plain")  # off unless asked for
