"""Options the CLI must refuse before touching a database: one error line, a non-zero exit, no traceback."""

import io
import os

import pytest
from click.testing import CliRunner

from orchestration_pipeline.cli import main
from orchestration_pipeline.errors import OrchError
from orchestration_pipeline.lib.ingestion.failure_types import FAILURE_TYPES
from orchestration_pipeline.lib.ingestion.files import (
    LineBlock,
    NotARegularFile,
    discover_files,
    iter_blocks,
    iter_lines,
)
from orchestration_pipeline.lib.ingestion.ingest import Ingestor
from orchestration_pipeline.lib.ingestion.landing import scan_landing

# Unreachable servers: a command that got past option checking would fail with exit 1, not 2.
UNREACHABLE = {
    "ORCH_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/orchestration",
    "TASKS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/tasks",
}


def invoke(*args: str, tmp_path, env: dict[str, str] | None = None):
    cleared = {k: None for k in os.environ if k.startswith(("ORCH_", "TASKS_", "QDRANT_", "DAGSTER_"))}
    environment = {**cleared, "ORCH_HOME": str(tmp_path / "home"), **(env or UNREACHABLE)}
    return CliRunner().invoke(main, list(args), env=environment)


def assert_usage_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # click's usage error, not a crash
    assert "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ")
    for fragment in fragments:
        assert fragment in last
    return last


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["quarantine", "list", "--limit", "-5"], "--limit"),
        (["quarantine", "list", "--offset", "-1"], "--offset"),
        (["quarantine", "replay", "--limit", "-1"], "--limit"),
        (["quarantine", "replay", "--limit", "0"], "--limit"),  # 0 used to replay everything
        (["projection", "reports", "--limit", "-1"], "--limit"),
        (["projection", "reconcile", "--grace-minutes", "-5"], "--grace-minutes"),
        (["projection", "reconcile", "--repair-max-rows", "-1"], "--repair-max-rows"),
        (["projection", "update", "--batch-events", "0"], "--batch-events"),
        (["ingest", "--batch-rows", "0", "."], "--batch-rows"),  # used to hang forever
        (["ingest", "--batch-rows", "-1", "."], "--batch-rows"),
    ],
)
def test_out_of_range_options_are_usage_errors(argv, option, tmp_path):
    assert_usage_error(invoke(*argv, tmp_path=tmp_path), f"'{option}'", "is not in the range")


def test_a_payload_key_given_twice_is_a_usage_error(tmp_path):
    # which one would the action hash cover? json.loads silently kept the last
    result = invoke(
        "decisions", "execute", "p", "--payload", '{"message": "a", "message": "b"}', tmp_path=tmp_path
    )
    assert_usage_error(result, "--payload", "key 'message' appears twice")


def test_ranges_show_in_help(tmp_path):
    assert "x>=1" in invoke("quarantine", "replay", "--help", tmp_path=tmp_path).output
    assert "x>=0" in invoke("quarantine", "list", "--help", tmp_path=tmp_path).output
    assert "x>=1" in invoke("ingest", "--help", tmp_path=tmp_path).output


@pytest.mark.parametrize("command", ["list", "replay"])
def test_unknown_failure_type_lists_the_valid_ones(command, tmp_path):
    result = invoke("quarantine", command, "--failure-type", "nonsense", tmp_path=tmp_path)
    assert_usage_error(result, "'--failure-type'", "nonsense", *FAILURE_TYPES)
    assert "malformed_json" in invoke("quarantine", command, "--help", tmp_path=tmp_path).output


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--since", "99999999d"], "out of range"),  # used to be an OverflowError traceback
        (["--since", "10000000000000000000h"], "out of range"),
        (["--until", "10000000000000000000h"], "out of range"),
        (["--since", ""], "empty"),  # used to mean "no bound"
        (["--since", "  "], "empty"),
        (["--since", "1h", "--until", "2h"], "is not after --since"),
        (["--since", "2026-01-02", "--until", "2026-01-01"], "is not after --since"),
    ],
)
def test_audit_query_times_are_validated(argv, fragment, tmp_path):
    assert_usage_error(invoke("audit", "query", *argv, tmp_path=tmp_path), fragment)


def test_ingest_refuses_devices_and_fifos(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    for path in ("/dev/null", str(fifo)):
        with pytest.raises(NotARegularFile, match="is not a regular file") as raised:
            discover_files([path])
        assert isinstance(raised.value, OrchError)  # the CLI prints it as one line, exit 1
        assert "\n" not in str(raised.value)


def test_directory_ingest_skips_hidden_files_and_matches_suffixes_in_any_case(tmp_path):
    landing = tmp_path / ".orch" / "landing"  # a hidden directory above the root is fine
    for name in ("a.jsonl", "B.JSONL", "c.NdJson", ".d.jsonl", "e.jsonl.tmp", "f.json", "sub/g.Jsonl"):
        (landing / name).parent.mkdir(parents=True, exist_ok=True)
        (landing / name).write_text("{}\n")
    (landing / ".staging").mkdir()
    (landing / ".staging" / "h.jsonl").write_text("{}\n")
    expected = sorted(str((landing / n).resolve()) for n in ("a.jsonl", "B.JSONL", "c.NdJson", "sub/g.Jsonl"))
    assert sorted(map(str, discover_files([landing]))) == expected
    # the landing sensor picks exactly the same files
    assert sorted(str(os.path.realpath(p)) for p in scan_landing(landing, None).new_files) == expected
    # an explicit hidden file is still ingested when asked for by name
    assert discover_files([landing / ".d.jsonl"]) == [(landing / ".d.jsonl").resolve()]


BOM = b"\xef\xbb\xbf"


def test_a_bom_at_the_start_of_a_file_is_skipped():
    data = BOM + b'{"a": 1}\n' + BOM + b'{"b": 2}\n'  # a BOM past offset 0 is data
    lines = list(iter_lines(io.BytesIO(data)))
    assert [(x.number, x.offset, x.raw) for x in lines] == [(1, 3, b'{"a": 1}'), (2, 12, BOM + b'{"b": 2}')]
    got = []
    for block in iter_blocks(io.BytesIO(data), max_lines=1):
        assert isinstance(block, LineBlock)
        got.extend((x.number, x.offset, x.raw) for x in block.lines())
    assert got == [(x.number, x.offset, x.raw) for x in lines]
    # a block built by hand at the start of a file agrees with iter_lines too
    assert LineBlock(data, 0, 0).lines() == lines


def test_zero_batch_rows_is_refused_rather_than_looping_forever():
    with pytest.raises(ValueError, match="at least 1"):
        next(iter_blocks(io.BytesIO(b"{}\n"), 0))
    with pytest.raises(ValueError, match="batch_rows must be at least 1"):
        Ingestor(None, batch_rows=0)  # type: ignore[arg-type]
