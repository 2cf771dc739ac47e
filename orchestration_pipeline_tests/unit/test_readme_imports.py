"""Every ``from orchestration_pipeline… import …`` the README shows resolves, so its examples keep working."""

import importlib
import re

import pytest

from orchestration_pipeline_tests.conftest import REPO_ROOT

_IMPORT = re.compile(r"^from (orchestration_pipeline[\w.]*) import ([\w, ]+)$", re.MULTILINE)
README_IMPORTS = [
    (module, name.strip())
    for module, names in _IMPORT.findall((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    for name in names.split(",")
]


def test_the_readme_shows_the_public_entry_points():
    modules = {module for module, _ in README_IMPORTS}
    assert {
        "orchestration_pipeline.emit",
        "orchestration_pipeline.lib.audit",
        "orchestration_pipeline.lib.activity",
    } <= modules


@pytest.mark.parametrize(("module", "name"), README_IMPORTS, ids=[f"{m}:{n}" for m, n in README_IMPORTS])
def test_readme_import_resolves(module, name):
    assert hasattr(importlib.import_module(module), name), f"README imports {name} from {module}"
