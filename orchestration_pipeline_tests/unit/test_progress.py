from orchestration_pipeline.lib.ingestion.batches import Counts
from orchestration_pipeline.lib.ingestion.ingest import FileResult, describe_progress


def test_progress_lines_for_batches_and_files():
    assert (
        describe_progress({"final": False, "file": "a.jsonl", "lines": 120000})
        == "a.jsonl: 120,000 lines read"
    )
    done = FileResult(
        "a.jsonl", "0" * 64, 10, counts=Counts(lines=5, accepted=3, quarantined=1, duplicates=1)
    )
    assert describe_progress(
        {"final": True, "file": "a.jsonl", "file_index": 1, "file_count": 2, "result": done}
    ) == ("[1/2] a.jsonl: 5 lines: 3 accepted, 1 quarantined, 1 duplicates, 0 collapsed")
    skipped = FileResult("b.jsonl", "1" * 64, 10, skipped=True)
    line = describe_progress(
        {"final": True, "file": "b.jsonl", "file_index": 2, "file_count": 2, "result": skipped}
    )
    assert line == "[2/2] b.jsonl: already ingested (skipped)"
