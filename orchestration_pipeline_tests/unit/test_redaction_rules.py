"""The rule file: every rule's examples run here, the file's own checks, and the README's list of
rules; then the shapes that redaction knows because of it (token families, key vocabulary,
assignment syntaxes, values to their end, Authorization schemes, placeholders) and the counts by
rule id that every entry point can collect."""

import json
from collections import Counter

import pytest
import re2
from hypothesis import example, given, settings
from hypothesis import strategies as st

from orchestration_pipeline.lib.redaction import (
    REDACTED,
    is_secret_key,
    may_contain_secret,
    redact_json_text,
    redact_raw_line,
    redact_text,
    redact_value,
    redacted_copy,
)
from orchestration_pipeline.lib.redaction import readme as rules_readme
from orchestration_pipeline.lib.redaction.rules import RULES, RULES_PATH, RuleFileError, load_rules
from orchestration_pipeline_tests.conftest import REPO_ROOT

TOKEN_TP = [(rule, text) for rule in RULES.tokens for text in rule.examples.tp]
TOKEN_FP = [(rule, text) for rule in RULES.tokens for text in rule.examples.fp]
STRUCTURE_TP = [(rule, text) for rule in RULES.structures for text in rule.examples.tp]
STRUCTURE_FP = [(rule, text) for rule in RULES.structures for text in rule.examples.fp]


def _ids(cases):
    return [f"{rule.id}-{i}" for i, (rule, _) in enumerate(cases)]


def _secret(rule, text: str) -> str:
    """What the rule's pattern finds in the example: its secret group, or the whole match."""
    found = re2.search(rule.pattern, text)
    assert found is not None, f"{rule.id}: the pattern does not match its own example {text!r}"
    return found.group(1) if rule.has_secret_group else found.group(0)


# --- the rule file's examples ---------------------------------------------------------------


def test_every_rule_has_examples_of_both_kinds_and_a_unique_id():
    assert len(RULES.tokens) >= 40
    for rule in (*RULES.tokens, *RULES.structures):
        assert rule.examples.tp and rule.examples.fp, rule.id
    assert len(set(RULES.ids)) == len(RULES.ids)


@pytest.mark.parametrize(("rule", "text"), TOKEN_TP, ids=_ids(TOKEN_TP))
def test_token_rule_finds_its_true_positive(rule, text):
    secret = _secret(rule, text)
    counts = Counter()
    redacted, n = redact_text(text, counts)
    assert secret not in redacted and REDACTED in redacted
    assert counts[rule.id] >= 1 and n == sum(counts.values())
    assert redact_text(redacted) == (redacted, 0)
    # the pre-check lets no example through, by keyword or by the pattern itself
    assert may_contain_secret(text.encode())
    if rule.keywords:
        assert any(k in text.lower() for k in rule.keywords), "no keyword of the rule is in its example"
    # the JSON payload path and the raw line of a quarantined, cut-off line
    value, _ = redact_value({"payload": {"note": text, "argv": ["tool", "--opt", text]}})
    assert secret not in json.dumps(value)
    raw = json.dumps({"event_type": "decision", "payload": {"note": text}})
    assert json.dumps(secret)[1:-1] not in redact_raw_line(raw[:-3])[0]


@pytest.mark.parametrize(("rule", "text"), TOKEN_FP, ids=_ids(TOKEN_FP))
def test_token_rule_false_positive_comes_through_unchanged(rule, text):
    assert redact_text(text) == (text, 0)
    assert redact_value({"note": text}) == ({"note": text}, 0)


@pytest.mark.parametrize(("rule", "text"), STRUCTURE_TP, ids=_ids(STRUCTURE_TP))
def test_structure_rule_finds_its_true_positive(rule, text):
    counts = Counter()
    if rule.input == "json":
        redacted, n = redact_value(json.loads(text), counts)
        again = redact_value(json.loads(json.dumps(redacted)))
        assert again == (redacted, 0)
    else:
        redacted, n = redact_text(text, counts)
        assert redact_text(redacted) == (redacted, 0)
    assert counts[rule.id] >= 1 and n == sum(counts.values())
    assert "LEAK" not in json.dumps(redacted)


@pytest.mark.parametrize(("rule", "text"), STRUCTURE_FP, ids=_ids(STRUCTURE_FP))
def test_structure_rule_false_positive_comes_through_unchanged(rule, text):
    if rule.input == "json":
        assert redact_value(json.loads(text)) == (json.loads(text), 0)
    else:
        assert redact_text(text) == (text, 0)


@pytest.mark.parametrize("key", RULES.keys.examples.tp)
def test_key_vocabulary_true_positives(key):
    assert is_secret_key(key)
    assert redact_value({key: "hunter2LEAK"}) == ({key: REDACTED}, 1)


@pytest.mark.parametrize("key", RULES.keys.examples.fp)
def test_key_vocabulary_false_positives(key):
    assert not is_secret_key(key)
    assert redact_value({key: "value9"}) == ({key: "value9"}, 0)


@pytest.mark.parametrize("text", RULES.grammar.examples.tp)
def test_grammar_true_positives(text):
    redacted, n = redact_text(text)
    assert "hunter2LEAK" not in redacted and n >= 1 and redact_text(redacted) == (redacted, 0)


@pytest.mark.parametrize("text", RULES.grammar.examples.fp + RULES.placeholders.examples.fp)
def test_grammar_and_placeholder_false_positives(text):
    assert redact_text(text) == (text, 0)


@pytest.mark.parametrize("text", RULES.placeholders.examples.tp)
def test_placeholder_true_positives_are_no_placeholders(text):
    redacted, n = redact_text(text)
    assert "LEAK" not in redacted and n >= 1


def test_no_keyword_is_made_of_hex_digits_alone():
    """Ids and digests are hex: such a keyword would send one event line in a few thousand down the
    slow path for nothing (write the rule without keywords: its pattern is then the pre-check)."""
    hexadecimal = re2.compile(r"[0-9a-f]+")
    for rule in RULES.tokens:
        assert not [k for k in rule.keywords if hexadecimal.fullmatch(k)], rule.id
    assert not [h for h in RULES.keys.hints if hexadecimal.fullmatch(h)]


def test_every_key_word_holds_a_hint():
    """A key is looked at only when it holds a hint: a word added without one is never found."""
    vocabulary = RULES.keys
    words = [*vocabulary.words, *vocabulary.prefixed_words, *vocabulary.pairs, *vocabulary.glued]
    for word in words:
        assert any(hint in word for hint in vocabulary.hints), word


# --- the rule file's own checks -------------------------------------------------------------


def _broken(tmp_path, old: str, new: str):
    text = RULES_PATH.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "rules.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("pattern = 'gh[pousr]_[A-Za-z0-9]{36,}'", "", "'pattern' is missing"),
        ("pattern = 'gh[pousr]_[A-Za-z0-9]{36,}'", "pattern = 'gh(?=p)_'", "not valid RE2 syntax"),
        ("pattern = 'gh[pousr]_[A-Za-z0-9]{36,}'", "pattern = '(gh[pousr]_)[A-Za-z0-9]{36,}'", "(?:…)"),
        ('keywords = ["ghp_", "gho_"', 'keywords = ["GHP_", "gho_"', "lowercase"),
        ('id = "gitlab-token"', 'id = "github-token"', "used twice"),
        ('id = "gitlab-token"', 'id = "GitLab token"', "lowercase words"),
        ('    "ghp_tooshort",\n    "see ghp_ for the prefix",\n    "a ghp_', '    "a ghp_', None),
        ("version = 1", "version = = 1", "not valid TOML"),
    ],
)
def test_a_broken_rule_file_is_refused_naming_the_fix(tmp_path, old, new, message):
    path = _broken(tmp_path, old, new)
    if message is None:  # one fp example fewer: still a valid file
        assert len(load_rules(path).tokens) == len(RULES.tokens)
        return
    with pytest.raises(RuleFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_rules(path)


def test_a_rule_without_false_positive_examples_is_refused(tmp_path):
    text = RULES_PATH.read_text(encoding="utf-8")
    start = text.index("examples.fp = [", text.index('id = "npm-token"'))
    end = text.index("]\n", start) + 2
    path = tmp_path / "rules.toml"
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    with pytest.raises(RuleFileError, match=r"npm-token.*examples"):
        load_rules(path)


def test_the_readme_lists_the_rules_of_the_rule_file():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = rules_readme.block_of(readme)
    assert block is not None, "the README lost its redaction-rules markers"
    assert block == rules_readme.render(RULES), (
        "the README's list of redaction rules is stale: python -m orchestration_pipeline.lib.redaction.readme"
    )
    for rule in (*RULES.structures, *RULES.tokens):
        assert f"`{rule.id}`" in block


def test_the_readme_block_is_regenerated_in_place(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{rules_readme.START}\nstale\n{rules_readme.END}\nafter\n", encoding="utf-8")
    assert rules_readme.main(["--check", str(readme)]) == 1
    assert rules_readme.main([str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("before\n") and text.endswith("\nafter\n") and "stale" not in text
    assert rules_readme.main(["--check", str(readme)]) == 0
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="markers"):
        rules_readme.main([str(readme)])


# --- token shapes that leaked: in sentences, argv lists, under keys that name nothing --------

_FAMILIES = [
    "slack-webhook",
    "teams-webhook",
    "discord-webhook",
    "discord-bot-token",
    "telegram-bot-token",
    "sendgrid-api-key",
    "pypi-token",
    "vault-token",
    "terraform-cloud-token",
    "huggingface-token",
    "huggingface-org-token",
    "gitlab-token",
    "digitalocean-token",
    "shopify-token",
    "sentry-token",
    "grafana-token",
    "databricks-token",
    "azure-ad-client-secret",
    "aws-access-key-id",
    "stripe-key",
    "jwt-base64",
    "pgp-private-key",
]
_BY_ID = {rule.id: rule for rule in RULES.tokens}


@pytest.mark.parametrize("family", _FAMILIES)
def test_token_shapes_are_redacted_wherever_they_appear(family):
    rule = _BY_ID[family]
    for sample in rule.examples.tp:
        token, secret = re2.search(rule.pattern, sample).group(0), _secret(rule, sample)
        for text in (f"deploy failed: {token} was rejected", f"{token}", f"'{token}'"):
            assert secret not in redact_text(text)[0], text
        value, _ = redact_value({"blob": token, "argv": ["tool", "-x", token], "env": {"X": token}})
        assert secret not in json.dumps(value)


@pytest.mark.parametrize(
    "token",
    [
        "ABIA" + "Q7XK2M4PLR8ZN3WD",
        "ACCA" + "Q7XK2M4PLR8ZN3WD",
        "A3TQ" + "Q7XK2M4PLR8ZN3WD",
        "rk_prod_" + "9fK2mQ7xLp4Rz8Nw3VbT",
        "hvb." + "AAAAAQ9fK2mQ7xLp4Rz8Nw3VbT6hYc",
    ],
)
def test_aws_and_stripe_prefixes_beyond_the_common_ones(token):
    assert redact_text(f"key {token} here") == (f"key {REDACTED} here", 1)


# --- the key vocabulary -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["HEROKU_KEY", "DD_APP_KEY", "DB_PASS", "SMTP_PW", "auth", "TOKEN2", "SECRET_1", "secret_value",
     "GITHUB_LOGIN", "TENCENT_ACCESS_ID", "creds"],
)  # fmt: skip
def test_keys_that_leaked_now_name_a_secret(key):
    assert redact_text(f"{key}=Zq8LEAKxv") == (f"{key}={REDACTED}", 1)
    assert redact_value({key: "Zq8LEAKxv"}) == ({key: REDACTED}, 1)
    raw, n = redact_raw_line(json.dumps({key: "Zq8LEAKxv"})[:-1])
    assert "LEAK" not in raw and n == 1


def test_docker_config_auths_lose_their_credentials():
    config = {"auths": {"registry.example.com": {"auth": "dXNlcjpMRUFL", "email": "ci@example.com"}}}
    value, n = redact_value(config)
    assert value["auths"]["registry.example.com"] == {"auth": REDACTED, "email": "ci@example.com"} and n == 1


def test_weak_keys_keep_numbers_dates_and_flags():
    kept = {"DB_PASS": 3, "GITHUB_LOGIN": "2026-01-01T10:00:00Z", "APP_KEY": "true", "CACHE_PW": "12"}
    assert redact_value(dict(kept)) == (kept, 0)
    assert redact_text("GITHUB_LOGIN=2026-01-01 DB_PASS: 3") == ("GITHUB_LOGIN=2026-01-01 DB_PASS: 3", 0)


# --- assignment syntaxes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('password := "LEAKa1"', f'password := "{REDACTED}"'),
        ("token ::= LEAKa2", f"token ::= {REDACTED}"),
        ('if password == "LEAKa3"', f'if password == "{REDACTED}"'),
        ('secret === "LEAKa4"', f'secret === "{REDACTED}"'),
        ("API_KEY ?= LEAKa5", f"API_KEY ?= {REDACTED}"),
        ('$password .= "LEAKa6";', f'$password .= "{REDACTED}";'),
        ('string password = @"LEAKa7";', f'string password = @"{REDACTED}";'),
        ('var password string = "LEAKa8"', f'var password string = "{REDACTED}"'),
        ('token: str = "LEAKa9"', f'token: str = "{REDACTED}"'),
        ('props.setProperty("db.password", "LEAKb1")', f'props.setProperty("db.password", "{REDACTED}")'),
        (
            '<add key="ClearTextPassword" value="LEAKb2"/>',
            f'<add key="ClearTextPassword" value="{REDACTED}"/>',
        ),
        ("<Password>LEAKb3</Password>", f"<Password>{REDACTED}</Password>"),
        ("- name: DB_PASSWORD\n  value: LEAKb4", f"- name: DB_PASSWORD\n  value: {REDACTED}"),
        ('password "LEAKb5"', f'password "{REDACTED}"'),
        ("consul -vaultToken LEAKb6 -addr x", f"consul -vaultToken {REDACTED} -addr x"),
    ],
)
def test_assignment_syntaxes_keep_the_separator_and_lose_the_value(text, expected):
    assert redact_text(text) == (expected, 1)
    assert redact_text(expected) == (expected, 0)


def test_a_quoted_word_after_a_secret_word_in_prose_is_kept():
    text = 'the password "policy" changed'
    assert redact_text(text) == (text, 0)


# --- values to their real end -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "FLY_API_TOKEN=FlyV1 " + "fm2_" + "a" * 60 + ",fm2_" + "b" * 340,  # a token holding commas
        "deploy_token=" + "a" * 40 + "," + "LEAK" * 90,
        "password=abc;LEAKdef",
        "secret=abc}LEAKdef",
        "token=abc`LEAKdef",
        "password: abc,LEAKdef",
    ],
)
def test_bare_values_run_to_their_real_end(text):
    redacted, n = redact_text(text)
    assert "LEAK" not in redacted and "b" * 20 not in redacted and n >= 1
    assert redact_text(redacted) == (redacted, 0)


def test_a_token_rule_that_stops_early_leaves_no_tail():
    # a Google API key is 39 characters; more of the value follows it
    text = "api_key=AIza" + "Sy" + "D" * 33 + "-LEAKtail"
    redacted, n = redact_text(text)
    assert redacted == f"api_key={REDACTED}" and n == 2


def test_a_value_ends_before_the_text_that_holds_it():
    assert redact_text("f(password=LEAK1)") == (f"f(password={REDACTED})", 1)
    assert redact_text("{token: LEAK2}") == (f"{{token: {REDACTED}}}", 1)
    assert redact_text("password=LEAK3, user=bob") == (f"password={REDACTED}, user=bob", 1)


# --- structures -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Api-Token LEAKc1", f"Authorization: Api-Token {REDACTED}"),
        ("Authorization: SSWS LEAKc2", f"Authorization: SSWS {REDACTED}"),
        ("authorization=LEAKc3", f"authorization={REDACTED}"),
    ],
)
def test_authorization_under_any_scheme_keeps_the_scheme(text, expected):
    assert redact_text(text) == (expected, 1)


def test_curl_with_a_token_as_user_and_no_password():
    text = "curl -u LEAKkey123: https://api.example.com"
    assert redact_text(text) == (f"curl -u {REDACTED}: https://api.example.com", 1)
    assert redact_value(["curl", "-u", "LEAKkey123:"]) == (["curl", "-u", f"{REDACTED}:"], 1)
    raw, n = redact_raw_line('{"argv": ["curl", "-u", "LEAKkey123:", "https://x"], "cut')
    assert "LEAK" not in raw and n == 1 and redact_raw_line(raw) == (raw, 0)
    for kept in ("curl -u $API_KEY: https://x", "docker run -u 1000: image"):
        assert redact_text(kept) == (kept, 0)


# --- no more over-redaction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "io.jsonwebtoken:jjwt-jackson-0.11.2",
        "implementation 'io.jsonwebtoken:jjwt-api:0.11.5'",
        "password: ${link}",
        "api_key=${API_KEY}",
        "password: <password>",
        "token: $GITHUB_TOKEN",
        "password=changeme",
        "secret: '***'",
        "Authorization: Bearer ${TOKEN}",
        "password=[REDACTED]",
        "mysql -p$MYSQL_PWD -h db",
        "sshpass -p $SSHPASS ssh host",
    ],
)
def test_placeholders_and_lookalikes_are_left_alone(text):
    assert redact_text(text) == (text, 0)


def test_placeholders_in_json_are_left_alone():
    value = {
        "password": "${DB_PASSWORD}",
        "env": [{"name": "API_TOKEN", "value": "<token>"}],
        "argv": ["--password", "***"],
    }
    assert redact_value(json.loads(json.dumps(value))) == (value, 0)
    raw = json.dumps(value)
    assert redact_raw_line(raw) == (raw, 0)


# --- counts by rule id ----------------------------------------------------------------------------


def test_every_entry_point_counts_by_rule_id():
    ghp = "ghp_" + "Ab1" * 12
    text = f"push with {ghp} and password=LEAKd1"
    counts = Counter()
    assert redact_text(text, counts)[1] == 2
    assert counts == Counter({"github-token": 1, "keyed-value": 1})

    counts = Counter()
    value, n = redact_value({"token": "LEAKd2", "note": text}, counts)
    assert n == 3 and counts == Counter({"secret-key": 1, "github-token": 1, "keyed-value": 1})

    counts = Counter()
    redact_raw_line('{"password": "LEAKd3", "dsn": "postgresql://u:LEAKd4@db/x"', counts)
    assert counts == Counter({"secret-key": 1, "url-password": 1})

    counts = Counter()
    assert "LEAKd5" not in redact_json_text(json.dumps({"api_key": "LEAKd5"}), counts)
    assert counts == Counter({"secret-key": 1})

    counts = Counter()
    copy = redacted_copy({"note": "Bearer LEAKd6abcdefg"}, counts)
    assert copy == {"note": f"Bearer {REDACTED}"} and counts == Counter({"bearer": 1})

    counts = Counter()
    assert redact_text("nothing to see here", counts) == ("nothing to see here", 0) and not counts


def test_counted_ids_are_the_ids_of_the_rule_file():
    counts = Counter()
    for _, text in TOKEN_TP:
        redact_text(text, counts)
    for rule, text in STRUCTURE_TP:
        if rule.input == "json":
            redact_value(json.loads(text), counts)
        else:
            redact_text(text, counts)
    assert set(counts) == set(RULES.ids)  # each rule counts its own examples, under its own id


# --- idempotence over the new grammar, on every path -----------------------------------------------

_PIECES = st.lists(
    st.sampled_from(
        [
            "token",
            "password",
            "DB_PASS",
            "HEROKU_KEY",
            "secret_value",
            ":=",
            "::=",
            "==",
            "=>",
            "?=",
            ".=",
            "=",
            ": ",
            ":",
            " ",
            "\n",
            "\\n",
            '"',
            "'",
            '\\"',
            "@",
            "$",
            "{",
            "}",
            "(",
            ")",
            "[",
            "]",
            ",",
            ";",
            "`",
            "<password>",
            "</password>",
            "<add key=",
            " value=",
            "- name: ",
            "value: ",
            "setToken(",
            '("token", ',
            "${A}",
            "$A",
            "os.environ[",
            "Authorization: ",
            "Token token=",
            "Api-Token ",
            "login -u a ",
            "-p ",
            "curl -u ",
            "x:",
            "https://",
            "u:p@h",
            "glc_",
            "AKIA" + "Q" * 16,
            "EAAA" + "aB3_" * 15,
            "hunter2",
            "[REDACTED]",
            "changeme",
            "var x string = ",
            "str = ",
            "-",
            "-vaultToken ",
            "io.jsonwebtoken:jjwt",
            "0.11.2",
            "x" * 40,
        ]
    ),
    max_size=10,
).map("".join)


@settings(max_examples=1500, deadline=None)
@given(_PIECES)
@example('password := "[REDACTED]x"')
@example('Authorization: Token token=\\"a\\", b=c')
def test_redacting_the_new_shapes_twice_changes_nothing(text):
    once, _ = redact_text(text)
    assert redact_text(once) == (once, 0)
    raw_once, _ = redact_raw_line(text)
    assert redact_raw_line(raw_once) == (raw_once, 0)
    value, _ = redact_value({"note": text, "argv": text.split(" ")})
    assert redact_value(json.loads(json.dumps(value))) == (value, 0)
