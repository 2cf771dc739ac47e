"""docs/operator-guide.md is generated from the Definitions: every check, with its runbook steps."""

import os

from orchestration_pipeline.definitions import defs
from orchestration_pipeline.defs.checks_support import operator_guide
from orchestration_pipeline_tests.conftest import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "operator-guide.md"


def test_the_operator_guide_lists_every_check_as_the_code_declares_it():
    generated = operator_guide(defs(), REPO_ROOT)
    if os.environ.get("ORCH_UPDATE_GUIDE"):
        GUIDE.write_text(generated, encoding="utf-8")
    assert GUIDE.read_text(encoding="utf-8") == generated, (
        "docs/operator-guide.md is out of date: ORCH_UPDATE_GUIDE=1 pytest "
        "orchestration_pipeline_tests/unit/test_operator_guide.py"
    )
    checks = {k.name for k in defs().resolve_asset_graph().asset_check_keys}
    assert all(f"### {name}\n" in generated for name in checks)
    for name in checks:  # every check quotes its runbook's first steps
        entry = generated.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        assert "\n> " in entry, f"{name}: its runbook section has no text to quote"
