"""Redaction cost on adversarial lines against ordinary lines of the same size, in one run.

    python benchmarks/redaction.py [--mib 1] [--repeat 3]

Every redaction pattern must stay linear in the length of its input: a line that makes one
backtrack (a trigger repeated over a megabyte) may cost a small factor more than an ordinary line
of the same shape, never orders of magnitude. For each case the same-size ordinary line (the
trigger changed by one character) is the baseline; both go through ``redact_text`` and
``redact_raw_line`` (the quarantine path), best of --repeat. Prints one JSON line with the seconds
per MiB of each case, its ratio to the baseline, and the worst of both.
Target: every adversarial case under 2 s per MiB (a line is at most 1 MiB; longer ones are
quarantined unparsed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from orchestration_pipeline.lib.redaction import redact_raw_line, redact_text

# (name, adversarial piece, ordinary piece of the same length): each repeated to the line size.
CASES = (
    ("url_user_eq", "-u=", "-v="),  # every "-u=" the start of a user:password
    ("escaped_quotes", '\\"', "\\x"),  # every \" a JSON key's opening quote
    ("escaped_tab_user", ".-u\\ta", ".-v\\ta"),  # -u, an escaped tab, a user running on
    ("glued_user", "\\t-ua", "\\t-va"),
    ("mysql_quote", "mysql -p'", "mysqx -x'"),
    ("user_pairs", "-u a:", "-v a:"),
    ("kv_pairs", "x a:", "x a;"),
    ("token_prefixes", "ghp_", "ghq_"),
    ("jwt_dashes", "-eyJ", "-eyK"),
    ("jwt_dots", "eyJaaaaaaaa.", "eyKaaaaaaaa."),
    ("mysql_words", "mysql ", "mysqx "),
    ("sshpass_flags", "sshpass -p ", "sshpasx -p "),
    ("aws_prefixes", "AKIA", "AKIB"),
    ("raw_user_flags", '"-u", "', '"-v", "'),
    ("user_bundles", "-sSu a:", "-sSw a:"),  # every bundle ending in -u the start of a user
    ("quoted_user_bundles", "-su 'a/", "-sw 'a/"),
    ("redacted_values", "token=[REDACTED]", "tokex=[REDACTED]"),  # each stepped over, never rescanned
    ("escaped_quote_values", 'token=\\"', 'tokex=\\"'),  # an unclosed \" value at every key
)


def _best(texts: tuple[str, ...], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for text in texts:
            redact_text(text)
            redact_raw_line(text)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=float, default=1.0, help="size of each line in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="timings per line; the best is kept")
    args = parser.parse_args()
    size = max(64, int(args.mib * (1 << 20)))
    cases = {}
    for name, adversarial, ordinary in CASES:
        assert len(adversarial) == len(ordinary), name
        slow = _best((adversarial * (size // len(adversarial)),), args.repeat)
        fast = _best((ordinary * (size // len(ordinary)),), args.repeat)
        cases[name] = {
            "s_per_mib": round(slow / args.mib, 3),
            "baseline_s_per_mib": round(fast / args.mib, 3),
            "ratio": round(slow / fast, 2) if fast else None,
        }
    worst = max(cases.items(), key=lambda item: item[1]["s_per_mib"])
    print(
        json.dumps(
            {
                "benchmark": "redaction",
                "mib": args.mib,
                "cases": cases,
                "worst_case": worst[0],
                "worst_s_per_mib": worst[1]["s_per_mib"],
                "worst_ratio": max(c["ratio"] or 0 for c in cases.values()),
                "targets_met": worst[1]["s_per_mib"] < 2.0,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
