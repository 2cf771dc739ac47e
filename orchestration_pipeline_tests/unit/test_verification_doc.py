"""docs/verification.md names only checks that are in the Definitions and tests that exist."""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "verification.md"
TESTS_ROOT = REPO_ROOT / "orchestration_pipeline_tests"
#: The capabilities a criterion may be left to, written ``planned: <name>`` in the page.
PLANNED = {"vector index", "retention", "restore drills", "HTTP API", "alerting"}


@dataclass(frozen=True)
class Row:
    ident: str
    criterion: str
    enforced_by: str


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def table_rows(markdown: str) -> list[Row]:
    """The body rows of every table: the first cell is the row's id, the last says what enforces it."""
    rows, previous = [], ""
    for line in markdown.splitlines():
        is_row = line.startswith("|")
        if is_row and not re.fullmatch(r"\|[\s|:-]+\|?", line.strip()):
            header = not previous.startswith("|")
            if not header:
                cells = _cells(line)
                rows.append(Row(cells[0], " | ".join(cells[1:-1]), cells[-1]))
        previous = line
    return rows


def _defined_tests(path: Path) -> set[str]:
    """``test_x`` and ``Class::test_x`` for every test function a test file defines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return names


def problems(markdown: str, check_names: set[str], tests_root: Path) -> list[str]:
    """What is wrong with the page: references that do not resolve, rows naming nothing, repeated ids."""
    found, seen = [], set()
    for row in table_rows(markdown):
        if row.ident in seen:
            found.append(f"{row.ident}: the id is used twice")
        seen.add(row.ident)
        names = re.findall(r"`([^`]+)`", row.enforced_by)
        planned = [p.strip() for p in re.findall(r"planned: ([^;|`]+)", row.enforced_by)]
        if not names and not planned and not row.enforced_by.startswith("n/a:"):
            found.append(f"{row.ident}: names no check, test or planned capability (or 'n/a: why')")
        found += [f"{row.ident}: {p!r} is not a planned capability" for p in planned if p not in PLANNED]
        for name in names:
            if "::" not in name:
                if name not in check_names:
                    found.append(f"{row.ident}: no asset check named {name!r} in the Definitions")
                continue
            file, _, test = name.partition("::")
            path = tests_root / file
            if not path.is_file():
                found.append(f"{row.ident}: no test file {file}")
            elif test not in _defined_tests(path):
                found.append(f"{row.ident}: {file} defines no {test}")
    return found


def _check_names() -> set[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from orchestration_pipeline.definitions import defs

        graph = defs().resolve_asset_graph()
    return {key.name for key in graph.asset_check_keys}


def test_every_reference_in_the_verification_document_exists():
    markdown = DOC.read_text(encoding="utf-8")
    assert problems(markdown, _check_names(), TESTS_ROOT) == []
    rows = table_rows(markdown)
    assert len(rows) >= 80
    for plan in ("000", "001", "002", "003", "004"):
        assert any(row.ident.startswith(f"{plan}-") for row in rows), f"no criterion of plan {plan}"


def test_every_check_of_the_definitions_enforces_a_criterion_on_the_page():
    named = {
        n
        for row in table_rows(DOC.read_text(encoding="utf-8"))
        for n in re.findall(r"`([^`]+)`", row.enforced_by)
    }
    assert sorted(_check_names() - named) == [], (
        "add the check to the criterion it enforces in docs/verification.md"
    )


def test_the_reader_catches_what_does_not_exist(tmp_path):
    (tmp_path / "unit").mkdir()
    (tmp_path / "unit" / "test_a.py").write_text(
        "def test_real():\n    pass\n\nclass TestB:\n    def test_m(self):\n        pass\n"
    )
    page = """
| # | criterion | enforced by |
|---|---|---|
| X-1 | fine | `real_check`; `unit/test_a.py::test_real`; `unit/test_a.py::TestB::test_m`; planned: vector index |
| X-2 | a check that is gone | `gone_check` |
| X-3 | a test that is gone | `unit/test_a.py::test_gone` |
| X-4 | a file that is gone | `unit/test_gone.py::test_real` |
| X-5 | nothing at all | to be decided |
| X-6 | a wrong plan | planned: teleportation |
| X-6 | not a property | n/a: bookkeeping |
"""
    assert problems(page, {"real_check"}, tmp_path) == [
        "X-2: no asset check named 'gone_check' in the Definitions",
        "X-3: unit/test_a.py defines no test_gone",
        "X-4: no test file unit/test_gone.py",
        "X-5: names no check, test or planned capability (or 'n/a: why')",
        "X-6: 'teleportation' is not a planned capability",
        "X-6: the id is used twice",
    ]
