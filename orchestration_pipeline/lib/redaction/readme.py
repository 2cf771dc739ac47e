"""The README's list of redaction rules, generated from ``rules.toml`` so that it cannot drift.

    python -m orchestration_pipeline.lib.redaction.readme [--check] [README.md]

rewrites the block between the ``redaction-rules`` markers of the README (by default the one of
the checkout); ``--check`` only tells whether it is up to date (exit status 1 when not). A test
fails when the block and the rule file differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestration_pipeline.lib.redaction.rules import RuleSet, load_rules

START = "<!-- redaction-rules:start (generated from lib/redaction/rules.toml: python -m orchestration_pipeline.lib.redaction.readme) -->"
END = "<!-- redaction-rules:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rules: RuleSet) -> str:
    """The block, markers included."""
    lines = [
        START,
        "<details><summary>"
        f"The {len(rules.tokens)} token rules and {len(rules.structures)} rules of structure "
        "(ids as counted in <code>redactions_by_rule</code>)</summary>",
        "",
        "| rule | what it redacts |",
        "| --- | --- |",
        *(f"| `{r.id}` | {_cell(r.description)} |" for r in rules.structures),
        *(f"| `{r.id}` | {_cell(r.description)} |" for r in rules.tokens),
        "",
        "</details>",
        END,
    ]
    return "\n".join(lines)


def block_of(readme: str) -> str | None:
    """The generated block as it stands in ``readme``, or None when its markers are missing."""
    start, end = readme.find(START), readme.find(END)
    if start == -1 or end < start:
        return None
    return readme[start : end + len(END)]


def updated(readme: str, rules: RuleSet) -> str:
    """``readme`` with its block regenerated."""
    current = block_of(readme)
    if current is None:
        raise ValueError(f"the README has no block between {START!r} and {END!r}; add the two markers")
    return readme.replace(current, render(rules))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "readme", nargs="?", type=Path, default=Path(__file__).resolve().parents[3] / "README.md"
    )
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when the block is stale")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    new = updated(text, load_rules())
    if args.check:
        if new != text:
            print(f"{args.readme}: the redaction rules block is stale; run without --check to regenerate it")
            return 1
        return 0
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
        print(f"{args.readme}: redaction rules block regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
