"""Reading what the SDK wrote, the way ingestion will."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from orchestration_pipeline.lib.ingestion.envelope import ParsedEvent
from orchestration_pipeline.lib.ingestion.events import parse_line


def published(landing: Path) -> list[Path]:
    return sorted(landing.glob("*.jsonl"))


def read_events(landing: Path) -> list[dict[str, Any]]:
    """Every event in the published files; asserts each line is whole and a valid ParsedEvent."""
    events = []
    for path in published(landing):
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path.name} ends in a partial line"
        for number, raw in enumerate(data.split(b"\n")[:-1], 1):
            parsed = parse_line(raw)
            assert isinstance(parsed, ParsedEvent), f"{path.name}:{number}: {parsed}"
            events.append(json.loads(raw))
    return events


def of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == event_type]


def assert_pairs_match(events: list[dict[str, Any]]) -> None:
    """What the coverage check asks: each task_start has one task_end (by session + task_id), each
    command_start one command_end (by payload.command_id)."""
    starts = Counter((e["session_id"], e.get("task_id")) for e in of_type(events, "task_start"))
    ends = Counter((e["session_id"], e.get("task_id")) for e in of_type(events, "task_end"))
    assert starts == ends
    starts = Counter(e["payload"]["command_id"] for e in of_type(events, "command_start"))
    ends = Counter(e["payload"]["command_id"] for e in of_type(events, "command_end"))
    assert starts == ends
    assert all(n == 1 for n in starts.values())
