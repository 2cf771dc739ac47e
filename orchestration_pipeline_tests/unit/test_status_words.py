"""Producers' own status and severity words: parsing (both paths), the synonym map and its
configuration, the counts of unknown words, and the SDK's checks."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestration_pipeline.emit import _envelope
from orchestration_pipeline.errors import ConfigError
from orchestration_pipeline.lib.ingestion import status_words as sw
from orchestration_pipeline.lib.ingestion.envelope import (
    AGENT_STATUSES,
    SEVERITIES,
    STATUSES,
    ParsedEvent,
    Rejection,
)
from orchestration_pipeline.lib.ingestion.events import parse_common_line, parse_line
from orchestration_pipeline.lib.ingestion.status_words import (
    STATUS_SYNONYMS_ENV,
    UnknownStatusWords,
    configured_status_words,
    fold_word,
)
from orchestration_pipeline.lib.ingestion.validated import parse_line_validated

CORPUS = Path(__file__).parents[1] / "data" / "producer_status_words.jsonl"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
DEFAULTS = sw.DEFAULT_STATUS_WORDS


def corpus() -> list[tuple[int, bytes, dict]]:
    lines = CORPUS.read_bytes().splitlines()
    return [(number, raw, json.loads(raw)) for number, raw in enumerate(lines, 1)]


def _too_long_or_agent_misuse(obj: dict) -> bool:
    """What the corpus holds on purpose and must be quarantined: a status over 64 characters, and
    agent events with a word outside their enum."""
    status = obj.get("status")
    if obj["event_type"].startswith("agent."):
        return status is not None and status not in AGENT_STATUSES
    return isinstance(status, str) and len(status.strip()) > 64


@pytest.mark.parametrize("number, raw, obj", corpus(), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_every_producer_line_is_parsed_alike_on_both_paths(number, raw, obj):
    result = parse_line(raw, now=NOW)
    validated = parse_line_validated(raw, now=NOW)
    if _too_long_or_agent_misuse(obj):
        for r in (result, validated):
            assert isinstance(r, Rejection), (number, r)
            assert (r.failure_type, r.json_pointer) == ("invalid_value", "/status"), r.detail
        return
    for r in (result, validated):
        assert isinstance(r, ParsedEvent), (number, getattr(r, "detail", r))
        # stored as given, only trimmed
        assert r.status == (obj["status"].strip() if "status" in obj else None)
        assert r.severity == (obj["severity"].strip() if "severity" in obj else None)
    assert (result.event_id, result.payload_json, result.occurred_at) == (
        validated.event_id,
        validated.payload_json,
        validated.occurred_at,
    )
    common = parse_common_line(raw, NOW)
    if common is not None:  # the fast path, when it takes a line, gives the same event
        assert common.parsed_event() == validated


def test_the_corpus_holds_what_it_should():
    """The cases the corpus exists for are in it (so the tests above cannot pass vacuously)."""
    objs = [obj for _, _, obj in corpus()]
    sources = {o.get("source") for o in objs}
    assert {
        "build.sh",
        "deploy.ps1",
        "github-actions",
        "gitlab-ci",
        "jenkins",
        "airflow",
        "buildkite",
    } <= sources
    statuses = {o.get("status") for o in objs}
    assert {
        "ok",
        "done",
        "SUCCESS",
        "FAIL",
        "failure",
        "cancelled",
        "canceled",
        "manual",
        "UNSTABLE",
    } <= statuses
    assert {"ABORTED", "upstream_failed", "up_for_retry", "passed", "broken", "skipped"} <= statuses
    assert {"Warning", "Information", "WARN"} <= {o.get("severity") for o in objs}
    assert sum(_too_long_or_agent_misuse(o) for o in objs) == 2
    # a GitHub line carries its event_id, so the fast path is exercised too
    assert any(parse_common_line(raw, NOW) is not None for _, raw, _ in corpus())


@pytest.mark.parametrize(
    "value, accepted",
    [
        ("ok", "ok"),
        ("  SUCCESS\t", "SUCCESS"),
        ("x" * 64, "x" * 64),
        (" " * 5 + "y" * 64 + "\n", "y" * 64),
        ("Ünïcødé ✓", "Ünïcødé ✓"),
        ("x" * 65, None),
        ("   ", None),
        ("", None),
        (7, None),
        (["ok"], None),
        ({"ok": True}, None),
    ],
)
@pytest.mark.parametrize("field", ["status", "severity"])
def test_a_word_is_accepted_trimmed_up_to_64_characters(field, value, accepted):
    line = {
        "event_type": "metric",
        "occurred_at": "2026-11-30T10:00:00Z",
        "payload": {"name": "m", "value": 1},
    }
    raw = json.dumps({**line, "event_id": "6f1c1e0a-3c4b-4d7e-9a10-2b3c4d5e6f70", field: value}).encode()
    result = parse_line(raw, now=NOW)
    if accepted is None:
        assert isinstance(result, Rejection), result
        assert (result.failure_type, result.json_pointer) == ("invalid_value", f"/{field}")
        assert "64" in result.detail
    else:
        assert isinstance(result, ParsedEvent), result.detail
        assert getattr(result, field) == accepted


@pytest.mark.parametrize("word", ["ok", "SUCCESS", "completed", "succeeded", "paused"])
def test_agent_events_keep_their_enums(word):
    raw = json.dumps(
        {
            "event_type": "agent.progress",
            "occurred_at": "2026-11-30T10:00:00Z",
            "status": word,
            "payload": {"agent_type": "coder", "agent_name": "c1", "task_description": "t"},
        }
    ).encode()
    result = parse_line(raw, now=NOW)
    if word in AGENT_STATUSES:
        assert isinstance(result, ParsedEvent) and result.status == word
    else:
        assert isinstance(result, Rejection) and result.json_pointer == "/status"


@pytest.mark.parametrize(
    "meaning, words",
    [
        (
            "succeeded",
            ["ok", "OK", "Success", "succeeded", "passed", "PASS", "done", "completed", "complete"],
        ),
        ("failed", ["error", "FAIL", "failed", "FAILURE", "errored", "Failure"]),
        ("running", ["started", "Running", "in_progress", "In-Progress", "InProgress", "in progress"]),
        ("skipped", ["skipped", "SKIPPED"]),
        ("cancelled", ["cancelled", "canceled", "ABORTED", "Aborted"]),
    ],
)
def test_the_default_synonyms_mean_what_producers_mean(meaning, words):
    assert {w: DEFAULTS.status.meaning(w) for w in words} == dict.fromkeys(words, meaning)


@pytest.mark.parametrize(
    "word", ["okay-ish", "UNSTABLE", "manual", "upstream_failed", "up_for_retry", "broken"]
)
def test_words_with_more_than_one_reading_are_left_unknown(word):
    assert DEFAULTS.status.meaning(word) is None


def test_every_status_the_pipeline_writes_has_a_meaning():
    assert {w: DEFAULTS.status.meaning(w) is not None for w in (*STATUSES, *AGENT_STATUSES)} == dict.fromkeys(
        (*STATUSES, *AGENT_STATUSES), True
    )
    assert DEFAULTS.severity.meaning("Warning") == "warning"
    assert DEFAULTS.severity.meaning("FATAL") == "critical"
    assert sw.SEVERITY_MEANINGS == SEVERITIES  # what the pipeline writes is what words are mapped to


def test_folding_ignores_ascii_case_spaces_hyphens_and_underscores_only():
    assert fold_word("Up_For-Retry now") == "upforretrynow"
    assert fold_word("ÄBORTED") == "Äborted"  # non-ASCII letters keep their case (as in the SQL)


def test_a_json_object_in_the_variable_extends_and_trims_the_defaults():
    words = configured_status_words(
        {STATUS_SYNONYMS_ENV: '{"UNSTABLE": "failed", "ok": null, "Manual": "blocked"}'}
    )
    assert words.status.meaning("unstable") == "failed"
    assert words.status.meaning("MANUAL") == "blocked"
    assert words.status.meaning("ok") is None  # null forgets a default
    assert words.status.meaning("done") == "succeeded"  # the other defaults stay
    assert DEFAULTS.status.meaning("ok") == "succeeded"  # the defaults themselves are unchanged


def test_the_variable_may_name_a_file(tmp_path):
    path = tmp_path / "words.json"
    path.write_text('{"broken": "failed"}')
    assert configured_status_words({STATUS_SYNONYMS_ENV: str(path)}).status.meaning("BROKEN") == "failed"
    severity = configured_status_words({sw.SEVERITY_SYNONYMS_ENV: '{"loud": "critical"}'})
    assert severity.severity.meaning("Loud") == "critical"


@pytest.mark.parametrize(
    "value, words",
    [
        ("{not json", ["not valid JSON", "JSON object such as"]),
        ('["ok"]', ["expected a JSON object", "list"]),
        ('{"ok": "great"}', ["'great'", "is not a meaning", "succeeded, failed, cancelled"]),
        ('{"ok": 1}', ["is not a meaning"]),
        ('{"' + "x" * 65 + '": "failed"}', ["limit is 64"]),
        ('{"--": "failed"}', ["no letters"]),
        ("/nonexistent/words.json", ["/nonexistent/words.json", "cannot read the file"]),
    ],
)
def test_a_bad_variable_is_an_error_naming_it(value, words):
    with pytest.raises(ConfigError) as raised:
        configured_status_words({STATUS_SYNONYMS_ENV: value})
    message = str(raised.value)
    assert message.startswith(STATUS_SYNONYMS_ENV), message
    for word in words:
        assert word in message, message


def test_unknown_words_are_counted_per_producer_most_frequent_first():
    counts = UnknownStatusWords(words=DEFAULTS)
    counts.add(Counter({("build.sh", "okay-ish"): 3, ("build.sh", "ok"): 40, ("jenkins", "UNSTABLE"): 1}))
    counts.add(Counter({("build.sh", "meh"): 5, (None, "weird"): 2, ("jenkins", "SUCCESS"): 9}))
    assert counts.as_dict() == {
        "(no source)": {"weird": 2},
        "build.sh": {"meh": 5, "okay-ish": 3},
        "jenkins": {"UNSTABLE": 1},
    }
    assert list(counts.as_dict(per_source=1)["build.sh"].items()) == [("meh", 5), ("(other words)", 3)]


def test_unknown_word_counts_stay_bounded():
    counts = UnknownStatusWords(words=DEFAULTS, max_pairs=10)
    counts.add(Counter({("loop.sh", f"word-{i}"): 1 for i in range(1000)}))
    merged = UnknownStatusWords(words=DEFAULTS, max_pairs=10)
    merged.update(counts)
    merged.update(counts)
    assert len(counts.counts) <= 11 and len(merged.counts) <= 11
    assert sum(counts.as_dict()["loop.sh"].values()) == 1000
    assert sum(merged.as_dict()["loop.sh"].values()) == 2000


@pytest.mark.parametrize("event_type", ["task_end", "decision", "metric", "error", "policy_violation"])
@pytest.mark.parametrize("word", ["ok", "SUCCESS", "upstream_failed", " padded ", "x" * 64])
def test_the_sdk_accepts_the_same_words(event_type, word):
    payload = {
        "task_end": {"success": True, "duration_ms": 1},
        "decision": {"rationale": "r"},
        "metric": {"name": "m", "value": 1},
        "error": {"message": "m"},
        "policy_violation": {"host": "h", "file": "f", "policy": "p", "rule": "r"},
    }[event_type]
    _envelope.check_event(event_type, payload, stage="s", severity=word, status=word)
    event = _envelope.build_event(
        event_type, payload, source="s", session_id="x", stage="s", severity=word, status=word
    )
    parsed = parse_line(_envelope.encode_line(event).rstrip(b"\n"), now=datetime.now(UTC))
    assert isinstance(parsed, ParsedEvent) and parsed.status == word.strip()


@pytest.mark.parametrize(
    "event_type, fields, error",
    [
        ("metric", {"status": "x" * 65}, ValueError),
        ("metric", {"severity": "   "}, ValueError),
        ("task_end", {"status": 1}, TypeError),
        ("agent.completed", {"status": "ok"}, ValueError),
        ("agent.completed", {"severity": "Warning"}, ValueError),
    ],
)
def test_the_sdk_rejects_what_ingestion_would_quarantine(event_type, fields, error):
    payload = {
        "metric": {"name": "m", "value": 1},
        "task_end": {"success": True, "duration_ms": 1},
        "agent.completed": {"agent_type": "coder", "agent_name": "c", "task_description": ""},
    }[event_type]
    with pytest.raises(error) as raised:
        _envelope.check_event(event_type, payload, **fields)
    assert next(iter(fields)) in str(raised.value)


def test_the_sdk_limit_mirrors_ingestion():
    assert _envelope.MAX_WORD_CHARS == sw.MAX_WORD_CHARS


def test_the_readme_lists_the_default_status_words():
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| ([a-z_, ]+) \|$", readme, re.M)
    listed = {meaning: words.split(", ") for meaning, words in rows if meaning in sw.STATUS_MEANINGS}
    data = json.loads(sw.DEFAULTS_FILE.read_text())["status"]
    assert listed == data, "update the README's table of status words from lib/ingestion/status_words.json"
