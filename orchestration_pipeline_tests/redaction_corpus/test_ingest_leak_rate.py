"""The corpus through real ingestion: what ``events.payload`` and ``quarantine.raw_line`` hold.

One sample of each (family, embedding) pair becomes a ``decision`` event whose payload carries
it; every third of them is also written cut off (malformed JSON), which quarantine stores as a raw
line. The stored rows are held to the same targets as the in-memory paths, and each stored
payload must be what ``redact_value`` makes of it (one redaction, everywhere).
"""

import pytest

from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import make_event, write_jsonl
from orchestration_pipeline_tests.redaction_corpus.generate import INSTANCES, build_corpus
from orchestration_pipeline_tests.redaction_corpus.measure import (
    MAX_BENIGN_ALTERED,
    MAX_LEAK_OVERALL,
    Measurement,
    Run,
    as_payload,
    examples,
    leaked_run,
    rate,
    raw_line,
    raw_path,
    strings_of,
    table,
    value_path,
)

pytestmark = pytest.mark.db


def _payload(carrier) -> dict:
    return {"rationale": "corpus sample", **as_payload(carrier)}


def _stored_payload(sample, event: dict, stored: dict) -> Measurement:
    payload = stored[event["event_id"]]
    run = Run("events.payload", event["payload"], payload, strings_of(payload), value_path)
    return Measurement(sample.family, sample.embedding, run, leaked_run(sample.parts, run.searchable))


def _stored_raw_line(sample, line: str) -> Measurement:
    run = Run("quarantine.raw_line", None, line, line, raw_path)
    return Measurement(sample.family, sample.embedding, run, leaked_run(sample.parts, line))


def test_ingested_rows_hold_no_more_secrets_than_the_targets_allow(orch_conn, tmp_path):
    corpus = build_corpus()
    samples = corpus.samples[::INSTANCES]  # one of each (family, embedding)
    events = [make_event("decision", payload=_payload(s.carrier)) for s in samples]
    benign = [make_event("decision", payload=_payload(b)) for b in corpus.benign]
    broken = samples[::3]
    write_jsonl(tmp_path / "landing" / "events.jsonl", events + benign)
    write_jsonl(tmp_path / "landing" / "broken.jsonl", [raw_line(_payload(s.carrier)) for s in broken])

    summary = Ingestor(orch_conn).ingest_paths([tmp_path / "landing"]).as_dict()
    assert (summary["accepted"], summary["quarantined"]) == (len(events) + len(benign), len(broken))
    stored = dict(orch_conn.execute("SELECT event_id::text, payload FROM events").fetchall())
    quarantined = dict(
        orch_conn.execute(
            "SELECT source_line, raw_line FROM quarantine WHERE source_file LIKE %s", ("%broken.jsonl",)
        ).fetchall()
    )
    orch_conn.rollback()

    measured = [_stored_payload(s, e, stored) for s, e in zip(samples, events, strict=True)]
    measured += [_stored_raw_line(s, quarantined[i]) for i, s in enumerate(broken, 1)]
    report = "\n\n".join(
        [
            table(measured, lambda m: m.path, "stored in"),
            table(measured, lambda m: m.family, "family", limit=25),
            "examples:\n" + examples(measured),
        ]
    )
    for where in ("events.payload", "quarantine.raw_line"):
        leaked = rate([m for m in measured if m.path == where])
        assert leaked <= MAX_LEAK_OVERALL, f"{where}: {leaked:.1%} of the samples leak\n\n{report}"

    changed = [e["payload"] for e in benign if stored[e["event_id"]] != e["payload"]]
    assert len(changed) <= MAX_BENIGN_ALTERED * len(benign), (
        f"{len(changed)} of {len(benign)} benign payloads altered when stored: {changed[:20]}"
    )
    differ = [
        (e["payload"], stored[e["event_id"]])
        for e in events + benign
        if stored[e["event_id"]] != value_path(e["payload"])
    ]
    assert not differ, f"{len(differ)} stored payloads are not what redact_value makes of them: {differ[:5]}"
