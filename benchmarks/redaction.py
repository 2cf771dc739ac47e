"""Redaction speed: ordinary lines against a baseline, and adversarial lines against ordinary ones.

    python benchmarks/redaction.py [--mib 1] [--repeat 3]

Ordinary lines (event lines as producers write them, log and command lines, URLs, sentences
that mention passwords and tokens without holding one) go through ``redact_text`` one line per
call, and as raw lines through ``redact_raw_line``; the baseline, in the same process, is
``json.loads`` of the same lines, what every ingested line costs anyway. Target: at least 20 MB/s
per core for ordinary lines.

Every pattern that is not RE2 (Python ``re``, kept where its construct is linear: bounded,
possessive or unambiguous repeats) has adversarial cases here: a piece that starts a match (or a
near-match) repeated to a line of --mib MiB, timed against the same-size ordinary line (the piece
changed by one character), each through ``redact_text`` and ``redact_raw_line`` (the quarantine
path), best of --repeat. Target: no adversarial line of 1 MiB over 0.2 s on either path.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from orchestration_pipeline.lib.redaction import redact_raw_line, redact_text

ORDINARY_MB_PER_S = 20.0
ADVERSARIAL_S_PER_MIB = 0.2

# (name, what it targets, adversarial piece, ordinary piece of the same length): each repeated to
# the line size.
CASES = (
    ("url_user_eq", "curl -u", "-u=", "-v="),  # every "-u=" the start of a user:password
    ("escaped_quotes", "raw JSON keys", '\\"', "\\x"),  # every \" a JSON key's opening quote
    ("escaped_tab_user", "curl -u", ".-u\\ta", ".-v\\ta"),  # -u, an escaped tab, a user running on
    ("glued_user", "curl -u", "\\t-ua", "\\t-va"),
    ("mysql_quote", "mysql -p", "mysql -p'", "mysqx -x'"),
    ("user_pairs", "curl -u", "-u a:", "-v a:"),
    ("kv_pairs", "key=value", "x a:", "x a;"),
    ("token_prefixes", "token rules", "ghp_", "ghq_"),
    ("jwt_dashes", "token rules", "-eyJ", "-eyK"),
    ("jwt_dots", "token rules", "eyJaaaaaaaa.", "eyKaaaaaaaa."),
    ("mysql_words", "mysql -p", "mysql ", "mysqx "),
    ("sshpass_flags", "sshpass -p", "sshpass -p ", "sshpasx -p "),
    ("aws_prefixes", "token rules", "AKIA", "AKIB"),
    ("raw_user_flags", "curl -u", '"-u", "', '"-v", "'),
    ("user_bundles", "curl -u", "-sSu a:", "-sSw a:"),  # every bundle ending in -u the start of a user
    ("quoted_user_bundles", "curl -u", "-su 'a/", "-sw 'a/"),
    ("redacted_values", "key=value", "token=[REDACTED]", "tokex=[REDACTED]"),  # stepped over, not rescanned
    ("escaped_quote_values", "key=value", 'token=\\"', 'tokex=\\"'),  # an unclosed \" value at every key
    ("aws_keys", "token rules", "AKIAAAAAAAAAAAAAAAAA ", "AKIBAAAAAAAAAAAAAAAA "),  # a real match each
    (
        "private_key_headers",
        "token rules",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEX-----",
    ),
    ("discord_shapes", "token rules", "MTAAAAAAAAAAAAAAAAAAAAAA.aaaaaa.", "mTAAAAAAAAAAAAAAAAAAAAAA.aaaaaa."),
    ("assignments", "key=value", "token := ", "tokex := "),
    ("typed_declarations", "key=value", "token: str = ", "tokex: str = "),
    ("array_keys", "key=value", "$c['token'] .= ", "$c['tokex'] .= "),
    ("quoted_after_key", "key=value", 'token "', 'tokex "'),
    ("placeholders", "key=value", "password=${A} ", "passwore=${A} "),
    ("expressions", "key=value", "password=os.environ[", "passwore=os.environ["),
    ("single_dash_flags", "--flag value", " -token ", " -tokex "),
    ("xml_pairs", "XML", 'key="password" value="', 'kex="password" value="'),
    ("xml_elements", "XML", "<password>x", "<password x"),
    ("yaml_pairs", "YAML name/value", "name: TOKEN\n  value: ", "name: TOKEN\n  valux: "),
    ("escaped_yaml_pairs", "YAML name/value", "name: TOKEN\\n  value: ", "name: TOKEN\\n  valux: "),
    ("call_arguments", "call arguments", '("token", ', '["token", '),
    ("setters", "call arguments", 'setToken("', 'setTokex("'),
    ("auth_schemes", "Authorization", "Authorization: x ", "Authorizatiox: x "),
    ("auth_params", "Authorization", "Authorization: Token a=", "Authorizatiox: Token a="),
    ("bearer_words", "bearer", "bearer ", "bearex "),
    ("url_passwords", "connection strings", "a://u:p", "a:/_u:p"),
    ("token_users", "curl -u", "-u abc: ", "-v abc: "),
    ("registry_logins", "docker login -p", "login -u a ", "logix -u a "),
    # a secret-named JSON key at every 13 bytes: each one a real key/value pair to redact
    ("json_secret_keys", "key=value", '{"password":"', '{"passwore":"'),
    ("quoted_keys", "raw JSON keys", '"key":', '"kex":'),
    ("keyed_lines", "key=value", "password:\n", "passwore:\n"),
)

# Lines that hold no secret, as they come: events, logs, commands, URLs, talk about credentials.
ORDINARY_LINES = (
    '{"event_id": "0b6f1c1e-8a44-4c1e-9d43-2f0f8d6b9a11", "occurred_at": "2026-01-01T00:00:00+00:00", '
    '"session_id": "sess-0000042", "task_id": "T-00000420", "source": "bench-orchestrator", '
    '"event_type": "decision", "stage": "plan", "payload": {"rationale": "selected System provider after '
    'cache miss", "provider": "System"}}',
    '{"event_id": "5d2c7a90-13f4-4b7e-8f0a-6c1d2e3f4a5b", "occurred_at": "2026-01-01T00:00:01+00:00", '
    '"event_type": "metric", "payload": {"name": "rows_inserted", "value": 4711, "unit": "rows", '
    '"tags": {"table": "events"}}}',
    '{"event_id": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", "occurred_at": "2026-01-01T00:00:02+00:00", '
    '"event_type": "command_start", "payload": {"command_id": "c42", "command": "pytest -q tests/unit"}}',
    "GET /api/v1/users?page=2&per_page=50 200 12ms",
    "Compiling orchestration_pipeline v0.1.0 (/srv/build/orchestration_pipeline)",
    "pushed 3 commits to origin/main (4f9c2e1a7b3d8e6f0a1b2c3d4e5f60718293a4b5)",
    "docker run --rm -u 1000:1000 -v /srv/data:/data ghcr.io/org/app@sha256:0123456789abcdef",
    "tokens_used=1834 token_count=7 max_tokens=4096 temperature=0.2",
    "the password policy now requires 12 characters; rotate keys every 90 days",
    "cache key miss for user:42, falling back to the primary store",
    "https://example.com/docs/auth/overview#tokens",
    "org.apache.commons:commons-lang3:3.14.0 resolved from maven central",
    "retrying in 5s (attempt 3 of 5): connection reset by peer",
    "INFO  [main] o.a.k.clients.consumer.KafkaConsumer - subscribed to topic events",
    "mkdir -p /srv/data && cp -pr build/ /srv/data/ && ls -la /srv/data",
)


def _best(call, texts: tuple[str, ...], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for text in texts:
            call(text)
        best = min(best, time.perf_counter() - started)
    return best


def _ordinary(mib: float, repeat: int) -> dict:
    lines, size = [], 0
    while size < mib * (1 << 20):
        for line in ORDINARY_LINES:
            lines.append(line)
            size += len(line)
    lines = tuple(lines)
    mb = size / 1e6
    text_s = _best(redact_text, lines, repeat)
    raw_s = _best(redact_raw_line, lines, repeat)
    loads_s = _best(json.loads, tuple(json.dumps(line) for line in lines), repeat)
    changed = sum(redact_text(line)[1] for line in ORDINARY_LINES)
    return {
        "lines": len(lines),
        "mb": round(mb, 2),
        "redact_text_mb_per_s": round(mb / text_s, 1),
        "redact_raw_line_mb_per_s": round(mb / raw_s, 1),
        "baseline_json_loads_mb_per_s": round(mb / loads_s, 1),
        "ratio_to_baseline": round(loads_s / max(text_s, raw_s), 3),
        "redactions": changed,  # 0: none of them holds a secret
    }


def _adversarial(mib: float, repeat: int) -> dict:
    size = max(64, int(mib * (1 << 20)))
    cases = {}
    for name, target, adversarial, ordinary in CASES:
        assert len(adversarial) == len(ordinary), name
        slow_line, fast_line = (
            (adversarial * (size // len(adversarial)),),
            (ordinary * (size // len(ordinary)),),
        )
        text_s, raw_s = _best(redact_text, slow_line, repeat), _best(redact_raw_line, slow_line, repeat)
        base_s = max(_best(redact_text, fast_line, repeat), _best(redact_raw_line, fast_line, repeat))
        worst = max(text_s, raw_s)
        cases[name] = {
            "pattern": target,
            "s_per_mib": round(worst / mib, 3),  # the slower of the two paths
            "text_s_per_mib": round(text_s / mib, 3),
            "raw_s_per_mib": round(raw_s / mib, 3),
            "baseline_s_per_mib": round(base_s / mib, 3),
            "ratio": round(worst / base_s, 1) if base_s else None,
        }
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=float, default=1.0, help="size of each adversarial line in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="timings per line; the best is kept")
    args = parser.parse_args()
    ordinary = _ordinary(args.mib, args.repeat)
    cases = _adversarial(args.mib, args.repeat)
    worst = max(cases.items(), key=lambda item: item[1]["s_per_mib"])
    worst_s = worst[1]["s_per_mib"]
    ordinary_mb = min(ordinary["redact_text_mb_per_s"], ordinary["redact_raw_line_mb_per_s"])
    print(
        json.dumps(
            {
                "benchmark": "redaction",
                "mib": args.mib,
                "ordinary": ordinary,
                "cases": cases,
                "worst_case": worst[0],
                "worst_s_per_mib": worst_s,
                "targets": {
                    "ordinary_mb_per_s": ORDINARY_MB_PER_S,
                    "adversarial_s_per_mib": ADVERSARIAL_S_PER_MIB,
                },
                "targets_met": ordinary_mb >= ORDINARY_MB_PER_S
                and worst_s <= ADVERSARIAL_S_PER_MIB
                and ordinary["redactions"] == 0,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
