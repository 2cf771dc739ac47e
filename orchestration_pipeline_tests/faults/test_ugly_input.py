"""Ugly input: every kind of bad line lands in exactly one bucket, nothing raises, no secret is stored."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.envelope import MAX_LINE_BYTES
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline_tests.conftest import REPO_ROOT, clean_env
from orchestration_pipeline_tests.faults._support import (
    SECRET,
    counts_of,
    line,
    rows_mentioning,
    table_counts,
    valid_event,
)

pytestmark = pytest.mark.db

BIG_LINE_BYTES = 1536 * 1024  # 1.5 MiB


def _ingest(dsn: str, *paths: Path, **kwargs) -> dict:
    with connection(dsn) as conn:
        return Ingestor(conn, **kwargs).ingest_paths(list(paths)).as_dict()


def _build_ugly_file(path: Path, now: datetime) -> dict:
    """Write the ugly file; returns what each physical line should become."""
    ts = (now - timedelta(hours=2)).isoformat()
    dup = valid_event(1, now)  # a task_end with an explicit event_id, sent twice

    big = json.dumps({"event_type": "decision", "occurred_at": ts, "payload": {"rationale": ""}})
    big = big.replace('"rationale": ""', '"rationale": "' + "x" * (BIG_LINE_BYTES - len(big)) + '"')
    assert len(big) == BIG_LINE_BYTES

    def error_event(host: int, retries: int) -> bytes:
        message = f"could not connect to postgresql://u:{SECRET}@db-{host}/x after {retries} retries"
        return line(
            {"event_type": "error", "occurred_at": ts, "stage": "load", "payload": {"message": message}}
        )

    # (raw bytes, line ending, expected outcome); outcome None = blank, not counted
    spec: list[tuple[bytes, bytes, tuple | str | None]] = [
        (line(valid_event(0, now)), b"\r\n", "accepted"),
        (b"", b"\n", None),
        (b"   \t  ", b"\n", None),
        (
            b'{"event_type": "task_start", "password": "' + SECRET.encode() + b'", ',
            b"\n",
            ("malformed_json", ""),
        ),
        (
            b'\xff\xfe{"event_type":"task_start","occurred_at":"' + ts.encode() + b'"}',
            b"\n",
            ("invalid_utf8", ""),
        ),
        (line([valid_event(2, now)]), b"\n", ("not_an_object", "")),
        (
            line({k: v for k, v in valid_event(3, now).items() if k != "occurred_at"}),
            b"\n",
            ("missing_field", "/occurred_at"),
        ),
        (
            line({**valid_event(5, now), "payload": {"success": True, "duration_ms": "5"}}),
            b"\n",
            ("wrong_type", "/payload/duration_ms"),
        ),
        (
            line({**valid_event(6, now), "event_type": "task_teleport"}),
            b"\n",
            ("unknown_event_type", "/event_type"),
        ),
        (big.encode(), b"\n", ("payload_too_large", "/payload")),
        (
            line({"event_type": "decision", "occurred_at": ts, "payload": {"rationale": "a\u0000b"}}),
            b"\n",
            ("invalid_value", ""),
        ),
        (
            b'{"event_type":"decision","occurred_at":"'
            + ts.encode()
            + b'","payload":{"rationale":"x\\ud800y"}}',
            b"\n",
            ("invalid_value", ""),
        ),
        (
            line({**valid_event(8, now), "occurred_at": (now + timedelta(days=2)).isoformat()}),
            b"\n",
            ("future_timestamp", "/occurred_at"),
        ),
        (
            line(
                {**valid_event(7, now), "payload": {"rationale": f"migrated postgresql://u:{SECRET}@host/db"}}
            ),
            b"\r\n",
            "accepted",
        ),
        (b"", b"\r\n", None),
        (line(dup), b"\r\n", "accepted"),
        (line(dup), b"\r\n", "duplicate"),
        (error_event(1, 3), b"\n", "accepted"),  # the error group's one event
        (error_event(2, 7), b"\n", "collapsed"),  # same group (same stage and template)
        (line(valid_event(4, now)), b"", "accepted"),  # no trailing newline
    ]
    offsets, offset = [], 0
    with open(path, "wb") as handle:
        for raw, ending, _ in spec:
            offsets.append(offset)
            handle.write(raw + ending)
            offset += len(raw) + len(ending)
    assert line(dup) in path.read_bytes() and json.loads(line(dup))["event_type"] == "task_end"
    assert b'"a\\u0000b"' in path.read_bytes()  # the escape itself, as a producer would send it
    return {
        "outcomes": {n: outcome for n, (_, _, outcome) in enumerate(spec, 1)},
        "offsets": {n: offsets[n - 1] for n in range(1, len(spec) + 1)},
        "big": big,
    }


def test_every_kind_of_ugly_line_lands_in_exactly_one_bucket(orch_dsn, tmp_path):
    now = datetime.now(UTC)
    path = tmp_path / "ugly.jsonl"
    built = _build_ugly_file(path, now)
    outcomes = built["outcomes"]
    quarantined = {n: o for n, o in outcomes.items() if isinstance(o, tuple)}

    summary = _ingest(orch_dsn, path, batch_rows=4, now=lambda: now)  # several batches per file

    assert counts_of(summary) == {
        "files": 1,
        "skipped_files": 0,
        "lines": 17,  # 20 physical lines, 3 blank or whitespace-only
        "accepted": 5,
        "quarantined": 10,
        "duplicates": 1,
        "collapsed": 1,
    }
    assert summary["balanced"] is True
    assert summary["lines"] == (
        summary["accepted"] + summary["quarantined"] + summary["duplicates"] + summary["collapsed"]
    )
    assert summary["quarantine_by_type"] == {
        "malformed_json": 1,
        "invalid_utf8": 1,
        "not_an_object": 1,
        "missing_field": 1,
        "wrong_type": 1,
        "unknown_event_type": 1,
        "payload_too_large": 1,
        "invalid_value": 2,
        "future_timestamp": 1,
    }
    # one in the malformed line, one in the accepted decision, one in each error message
    assert summary["redactions"] == 4

    source_file = str(path.resolve())
    with connection(orch_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT source_line, failure_type, json_pointer, source_file, byte_offset, raw_truncated, "
            "octet_length(raw_line) FROM quarantine ORDER BY source_line"
        ).fetchall()
        events = conn.execute(
            "SELECT source_line, event_type, source_file FROM events ORDER BY source_line"
        ).fetchall()
        ledger = conn.execute(
            "SELECT path, lines, accepted, quarantined, duplicates, collapsed FROM ingest_files"
        )
        ledger = ledger.fetchall()
        big_raw, big_detail, big_sha = conn.execute(
            "SELECT raw_line, detail, raw_sha256 FROM quarantine WHERE failure_type = 'payload_too_large'"
        ).fetchone()
        utf8_raw = conn.execute(
            "SELECT raw_line FROM quarantine WHERE failure_type = 'invalid_utf8'"
        ).fetchone()[0]
        error_payload = conn.execute("SELECT payload FROM events WHERE event_type = 'error'").fetchone()[0]

    assert [(r[0], r[1], r[2]) for r in rows] == [(n, *o) for n, o in sorted(quarantined.items())]
    assert {r[3] for r in rows} == {source_file}
    assert [r[4] for r in rows] == [built["offsets"][n] for n in sorted(quarantined)]
    assert [r[0] for r in rows if r[5]] == [10]  # only the 1.5 MiB line is truncated
    assert max(r[6] for r in rows) <= MAX_LINE_BYTES + 256

    accepted_lines = sorted(n for n, o in outcomes.items() if o == "accepted")
    assert [e[0] for e in events] == accepted_lines
    assert {e[2] for e in events} == {source_file}
    assert [e[1] for e in events if e[0] == 16] == ["task_end"]
    assert error_payload["count"] == 2  # the collapsed repeat is counted in its group's event

    assert ledger == [(source_file, 17, 5, 10, 1, 1)]

    # The over-long line keeps its first MiB, says it was cut, and where the full line starts.
    assert big_raw.startswith(built["big"][:4096])
    assert f"full line at byte {built['offsets'][10]} of the source file" in big_raw
    assert "1 MiB" in big_detail
    assert len(big_sha) == 64
    assert utf8_raw.startswith("\\xff\\xfe{")

    # The secret never reached any table, in any column.
    leaks = {table: n for table, n in rows_mentioning(orch_dsn, SECRET).items() if n}
    assert leaks == {}
    with connection(orch_dsn, autocommit=True) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM quarantine WHERE raw_line LIKE %s OR detail LIKE %s",
                (f"%{SECRET}%",) * 2,
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute(
                "SELECT count(*) FROM events WHERE payload::text LIKE %s", (f"%{SECRET}%",)
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute("SELECT count(*) FROM events WHERE payload::text LIKE '%[REDACTED]%'").fetchone()[0]
            == 2
        )  # the decision and the error group's event
        assert (
            conn.execute(
                'SELECT count(*) FROM quarantine WHERE raw_line LIKE \'%"password": "[REDACTED]"%\''
            ).fetchone()[0]
            == 1
        )

    # Re-ingesting the same bytes is a no-op.
    again = _ingest(orch_dsn, path, now=lambda: now)
    assert (again["skipped_files"], again["lines"]) == (1, 0)
    assert table_counts(orch_dsn, ("events", "quarantine", "ingest_files")) == {
        "events": 5,
        "quarantine": 10,
        "ingest_files": 1,
    }


def test_same_line_twice_in_one_file_is_one_event_and_one_duplicate(orch_dsn, tmp_path):
    event = valid_event(0, datetime.now(UTC))
    path = tmp_path / "twice.jsonl"
    path.write_bytes(line(event) + b"\n" + line(event) + b"\n")

    summary = _ingest(orch_dsn, path)

    assert counts_of(summary) == {
        "files": 1,
        "skipped_files": 0,
        "lines": 2,
        "accepted": 1,
        "quarantined": 0,
        "duplicates": 1,
        "collapsed": 0,
    }
    assert summary["balanced"] is True
    with connection(orch_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT event_id, source_line FROM events").fetchall()
    assert rows == [(uuid.UUID(event["event_id"]), 1)]


def test_same_line_in_two_batches_and_two_files_is_counted_once(orch_dsn, tmp_path):
    now = datetime.now(UTC)
    events = [valid_event(i, now) for i in range(5)]
    first = tmp_path / "a.jsonl"
    first.write_bytes(b"".join(line(e) + b"\n" for e in events + events))  # second half: next batches
    second = tmp_path / "b.jsonl"
    second.write_bytes(b"".join(line(e) + b"\n" for e in reversed(events)))  # same events, new bytes

    summary = _ingest(orch_dsn, first, second, batch_rows=2)

    assert counts_of(summary) == {
        "files": 2,
        "skipped_files": 0,
        "lines": 15,
        "accepted": 5,
        "quarantined": 0,
        "duplicates": 10,
        "collapsed": 0,
    }
    assert table_counts(orch_dsn, ("events", "ingest_files")) == {"events": 5, "ingest_files": 2}


def test_empty_file_is_ingested_with_zero_lines_and_a_ledger_entry(orch_dsn, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n \n\t\r\n")

    summary = _ingest(orch_dsn, path, blank)

    assert counts_of(summary) == {
        "files": 2,
        "skipped_files": 0,
        "lines": 0,
        "accepted": 0,
        "quarantined": 0,
        "duplicates": 0,
        "collapsed": 0,
    }
    assert summary["balanced"] is True
    with connection(orch_dsn, autocommit=True) as conn:
        ledger = conn.execute(
            "SELECT path, size_bytes, lines FROM ingest_files ORDER BY size_bytes"
        ).fetchall()
    assert ledger == [(str(path.resolve()), 0, 0), (str(blank.resolve()), 6, 0)]
    assert table_counts(orch_dsn, ("events", "quarantine")) == {"events": 0, "quarantine": 0}

    again = _ingest(orch_dsn, path)
    assert (again["files"], again["skipped_files"]) == (1, 1)


MEMORY_CHILD = r"""
import json, resource, sys
from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.ingestion.ingest import Ingestor

dsn, warmup, huge = sys.argv[1:4]
with connection(dsn) as conn:
    Ingestor(conn).ingest_paths([warmup])  # imports, caches and a 1.2 MiB line: the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    summary = Ingestor(conn).ingest_paths([huge]).as_dict()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": peak - base, "summary": summary}))
"""


def test_a_64_mib_line_is_quarantined_in_bounded_memory(orch_dsn, tmp_path):
    ts = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    warmup = tmp_path / "warmup.jsonl"
    warmup.write_text(
        json.dumps({"event_type": "decision", "occurred_at": ts, "payload": {"rationale": "y" * 1_200_000}})
        + "\n"
    )
    huge = tmp_path / "huge.jsonl"
    with open(huge, "w") as handle:
        handle.write(json.dumps({"event_type": "task_start", "occurred_at": ts}) + "\n")
        handle.write('{"event_type":"decision","occurred_at":' + json.dumps(ts) + ',"payload":{"rationale":"')
        chunk = "x" * (1 << 20)
        for _ in range(64):
            handle.write(chunk)
        handle.write('"}}\n')
        handle.write(json.dumps({"event_type": "task_start", "occurred_at": ts, "payload": {"after": 1}}))

    result = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, orch_dsn, str(warmup), str(huge)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=clean_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert (summary["lines"], summary["accepted"], summary["quarantined"]) == (3, 2, 1)
    assert summary["quarantine_by_type"] == {"payload_too_large": 1}
    # Reading the 64 MiB line whole would grow the process by > 64 MiB.
    assert report["growth_kib"] < 24 * 1024, report["growth_kib"]

    with connection(orch_dsn, autocommit=True) as conn:
        stored, truncated = conn.execute(
            "SELECT octet_length(raw_line), raw_truncated FROM quarantine"
        ).fetchone()
    assert truncated is True and stored <= MAX_LINE_BYTES + 256


# --- regressions: each of these once crashed a file or leaked a secret ---------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_type":"metric","occurred_at":"%(ts)s","payload":{"name":"m","value":NaN}}',
        b'{"event_type":"metric","occurred_at":"%(ts)s","payload":{"name":"m","value":Infinity}}',
        b'{"event_type":"metric","occurred_at":"%(ts)s","payload":{"name":"m","value":1e400}}',
        b'{"event_type":"task_end","occurred_at":"%(ts)s","payload":{"success":true,"duration_ms":100000000000000000000}}',
        b'{"event_type":"artifact_emit","occurred_at":"%(ts)s","payload":{"path":"a","size_bytes":100000000000000000000,"hash_skipped_reason":"big"}}',
        b'{"event_type":"metric","occurred_at":"%(ts)s","payload":{"name":"m","value":1' + b"0" * 400 + b"}}",
    ],
    ids=[
        "nan",
        "infinity",
        "1e400",
        "duration_ms_beyond_bigint",
        "size_bytes_beyond_bigint",
        "int_beyond_float8",
    ],
)
def test_unstorable_number_is_quarantined_not_fatal(orch_dsn, tmp_path, raw):
    """A value PostgreSQL cannot store (NaN/Infinity in jsonb, beyond bigint or float8) is one bad line."""
    ts = (datetime.now(UTC) - timedelta(hours=1)).isoformat().encode()
    path = tmp_path / "numbers.jsonl"
    path.write_bytes(line(valid_event(0)) + b"\n" + raw % {b"ts": ts} + b"\n" + line(valid_event(1)) + b"\n")

    summary = _ingest(orch_dsn, path)

    assert (summary["lines"], summary["accepted"], summary["quarantined"]) == (3, 2, 1)
    assert table_counts(orch_dsn, ("events", "quarantine", "ingest_files")) == {
        "events": 2,
        "quarantine": 1,
        "ingest_files": 1,
    }


@pytest.mark.parametrize(
    "raw",
    [
        # valid event; JSON-escaped slashes hide '://' from the redaction pre-filter
        b'{"event_type":"decision","occurred_at":"%(ts)s","payload":{"rationale":"postgresql:\\/\\/u:hunter2@h\\/db"}}',
        # quarantined line; camelCase secret key (redacted in valid events, not in raw lines)
        b'{"event_type":"task_teleport","occurred_at":"%(ts)s","payload":{"dbPassword":"hunter2"}}',
        # quarantined line; unicode-escaped secret key
        b'{"event_type":"task_teleport","occurred_at":"%(ts)s","payload":{"pass\\u0077ord":"hunter2"}}',
        # quarantined line; the unknown event_type is echoed unredacted in quarantine.detail
        b'{"event_type":"postgresql://u:hunter2@h/db","occurred_at":"%(ts)s"}',
        # valid event; a key spelled with the Kelvin sign, which lowercases to "k", as raw UTF-8
        '{"event_type":"decision","occurred_at":"%(ts)s","payload":{"TO\u212aEN":"hunter2"}}'.encode(),
        # valid event; "pa\u017f\u017fword=" (long s) in free text, as raw UTF-8
        '{"event_type":"decision","occurred_at":"%(ts)s","payload":{"rationale":"pa\u017f\u017fword=hunter2"}}'.encode(),
        # quarantined line (valid JSON, unknown type); the Kelvin-sign key again
        '{"event_type":"task_teleport","occurred_at":"%(ts)s","payload":{"api_\u212aey":"hunter2"}}'.encode(),
        # cut-off lines, redacted as raw text: a nested first key, a Kelvin-sign key, an escaped key,
        # and a secret key whose value is an object
        b'{"event_type":"decision","occurred_at":"%(ts)s","payload":{"password":"hunter2"',
        '{"event_type":"decision","occurred_at":"%(ts)s","payload":{"TO\u212aEN":"hunter2"'.encode(),
        b'{"event_type":"decision","occurred_at":"%(ts)s","payload":{"pass\\u0077ord":"hunter2"',
        b'{"event_type":"decision","occurred_at":"%(ts)s","payload":{"credentials":{"user":"u","v":"hunter2"}',
    ],
    ids=[
        "escaped_slashes_in_valid_event",
        "camel_case_key_quarantined",
        "escaped_key_quarantined",
        "secret_in_unknown_event_type_detail",
        "kelvin_sign_key_in_valid_event",
        "long_s_password_in_valid_event",
        "kelvin_sign_key_quarantined",
        "cut_off_nested_first_key",
        "cut_off_kelvin_sign_key",
        "cut_off_escaped_key",
        "cut_off_secret_object",
    ],
)
def test_secret_spellings_are_never_stored(orch_dsn, tmp_path, raw):
    """Escaped or camelCase spellings of a secret are redacted in events and quarantine alike."""
    ts = (datetime.now(UTC) - timedelta(hours=1)).isoformat().encode()
    path = tmp_path / "secret.jsonl"
    path.write_bytes(raw % {b"ts": ts} + b"\n")

    summary = _ingest(orch_dsn, path)

    assert summary["lines"] == 1 and summary["balanced"]
    leaks = {t: n for t, n in rows_mentioning(orch_dsn, SECRET).items() if n}
    assert leaks == {}


def test_cli_reports_bad_input_without_a_traceback(orch_dsn, tmp_path):
    """One NaN line used to crash `ingest` with a psycopg DataError traceback."""
    ts = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    path = tmp_path / "nan.jsonl"
    path.write_text(
        json.dumps({"event_type": "task_start", "occurred_at": ts})
        + "\n"
        + '{"event_type":"metric","occurred_at":"'
        + ts
        + '","payload":{"name":"m","value":NaN}}\n'
    )
    env = clean_env(ORCH_HOME=str(tmp_path / "home"), ORCH_DATABASE_URL=orch_dsn, TASKS_DATABASE_URL=orch_dsn)

    result = subprocess.run(
        [str(Path(sys.executable).parent / "orchestration-pipeline"), "ingest", str(path), "--json", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )

    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["lines"], summary["accepted"], summary["quarantined"]) == (2, 1, 1)


def test_oversized_lines_are_described_by_their_own_size_and_hash(orch_dsn, tmp_path):
    ts = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    head = '{"event_type":"decision","occurred_at":' + json.dumps(ts) + ',"payload":{"rationale":"'
    sizes = {"a.jsonl": 3 * MAX_LINE_BYTES // 2, "b.jsonl": 3 * MAX_LINE_BYTES}  # same first MiB
    for name, size in sizes.items():
        (tmp_path / name).write_text(head + "x" * (size - len(head) - 3) + '"}}\n')

    summary = _ingest(orch_dsn, *(tmp_path / name for name in sizes))

    assert summary["quarantine_by_type"] == {"payload_too_large": 2}
    with connection(orch_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT detail, raw_sha256 FROM quarantine ORDER BY source_file").fetchall()
    details = [detail for detail, _ in rows]
    assert f"line is {sizes['a.jsonl']} bytes" in details[0], details[0]
    assert f"line is {sizes['b.jsonl']} bytes" in details[1], details[1]
    assert rows[0][1] != rows[1][1]
