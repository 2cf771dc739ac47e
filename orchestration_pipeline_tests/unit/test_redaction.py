import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from orchestration_pipeline.lib.ingestion.envelope import ParsedEvent
from orchestration_pipeline.lib.ingestion.events import parse_line
from orchestration_pipeline.lib.redaction import (
    FORM_PATTERNS,
    REDACTED,
    SECRET_MARKERS,
    is_secret_key,
    lines_with_markers,
    may_contain_secret,
    redact_raw_line,
    redact_text,
    redact_value,
)


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "DB_PASSWORD",
        "api_key",
        "apiKey",
        "GithubToken",
        "client-secret",
        "Authorization",
        "access_token",
        "private_key",
        "pwd",
    ],
)
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["token_count", "tokens_used", "keyboard", "passed", "monkey", "author", "task_id"]
)
def test_ordinary_keys_are_left_alone(key):
    assert not is_secret_key(key)


def test_nested_secrets_are_redacted_and_counted():
    value = {
        "config": {"db": {"password": "p1", "host": "h"}, "list": [{"api_key": "k1"}, {"ok": "fine"}]},
        "headers": {"Authorization": "Bearer abcdefghijklmnop"},
        "note": "called with Bearer abcdefghijklmnop and postgresql://svc:s3cr3t@db:5432/app",
        "dsn": "host=db user=svc password=s3cr3t dbname=app",
        "token_count": 1234,
    }
    redacted, count = redact_value(value)
    text = json.dumps(redacted)
    for secret in ("p1", "k1", "abcdefghijklmnop", "s3cr3t"):
        assert secret not in text
    assert redacted["config"]["db"] == {"password": REDACTED, "host": "h"}
    assert redacted["token_count"] == 1234
    assert redacted["note"] == f"called with Bearer {REDACTED} and postgresql://svc:{REDACTED}@db:5432/app"
    assert count == 6


def test_redaction_is_idempotent():
    value, first = redact_value({"password": "x", "s": "Bearer abcdefghijkl"})
    again, second = redact_value(value)
    assert first == 2 and second == 0 and again == value


def test_raw_text_redaction_for_unparseable_lines():
    raw = '{"event_type": "x", "password": "hunter2", "dsn": "postgres://u:hunter2@h/db", "note": "Bearer abcdefghijk'
    text, count = redact_raw_line(raw)
    assert "hunter2" not in text and "abcdefghijk" not in text
    assert count == 3


def test_parser_redacts_before_anything_is_stored():
    raw = json.dumps(
        {
            "event_type": "decision",
            "occurred_at": "2026-01-01T00:00:00Z",
            "payload": {"rationale": "used postgresql://a:topsecret@h/db", "nested": {"secret": {"x": 1}}},
        }
    ).encode()
    ev = parse_line(raw)
    assert isinstance(ev, ParsedEvent)
    assert "topsecret" not in ev.payload_json
    assert json.loads(ev.payload_json)["nested"] == {"secret": REDACTED}
    assert ev.redactions == 2


def test_plain_text_bearer_and_kv():
    text, n = redact_text("Authorization: bearer eyJhbGciOiJIUzI1NiJ9.x.y; PWD=abc123;")
    assert "eyJhbGci" not in text and "abc123" not in text and n == 2


markerish = st.lists(
    st.sampled_from(
        [
            b"pass",
            b"PWD",
            b"Secret",
            b"toKen",
            b"key",
            b"AUTH",
            b"bearer",
            b"\\u",
            b"\\/",
            b"://",
            "\u017f".encode(),
            "\u212a".encode(),
            b"ghp_",
            b"GitHub_PAT_",
            b"AKIA",
            b"xoxb-",
            b"k_live_",
            b"sk-ant-",
            b"eyJ",
            b"-u",
            b"-U",
            b" ",
            b'"',
            b"\\",
            b"-user",
            b"MySQL",
            b"sshpass",
            b"-ua:",
            b"'",
            b"\\t",
            b"\\n-u",
            b"\n",
        ]
    )
    | st.binary(max_size=8),
    max_size=6,
).map(b"".join)


@settings(max_examples=300)
@given(markerish)
def test_secret_markers_are_what_the_pre_check_looks_for(raw):
    low = raw.lower()
    assert may_contain_secret(raw) == (
        any(marker in low for marker in SECRET_MARKERS)
        or any(pattern.search(low) for pattern in FORM_PATTERNS)
    )


@settings(max_examples=300)
@given(
    st.lists(markerish.map(lambda b: b.replace(b"\n", b"")), max_size=12), st.sampled_from([b"\n", b"\r\n"])
)
def test_markers_found_per_block_are_those_found_per_line(lines, newline):
    data = newline.join(lines) + newline
    spans, at = [], 0
    for line in lines:
        spans.append((at, at + len(line)))
        at += len(line) + len(newline)
    assert lines_with_markers(data, spans) == {i for i, line in enumerate(lines) if may_contain_secret(line)}


def test_every_non_ascii_letter_the_full_path_reads_as_ascii_is_a_marker():
    """Derived again from str.lower() and re, so a change in either shows up here."""
    import re
    import string
    import sys

    folded = set()
    for cp in range(0x80, sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if set(c.lower()) & set(string.ascii_lowercase) or any(
            re.fullmatch(f"(?i){a}", c) for a in string.ascii_lowercase if c.lower() != c or c.upper() != c
        ):
            folded.add(c)
    assert folded, "the derivation found nothing: it is broken"
    for c in folded:
        assert c.encode() in SECRET_MARKERS, f"U+{ord(c):04X} is missing from SECRET_MARKERS"
    for marker in SECRET_MARKERS:  # each one, as spelled in may_contain_secret, is seen there
        assert may_contain_secret(b"x" + marker + b"x"), marker
    kelvin = '{"payload": {"TO\u212aEN": "hunter2"}}'.encode()
    assert may_contain_secret(kelvin)
    assert is_secret_key("TO\u212aEN") and redact_text("pa\u017f\u017fword=hunter2")[1] == 1


@pytest.mark.parametrize(
    "raw",
    [
        '{"event_type":"x","payload":{"password":"hunter2"',  # first key of a nested object
        '{"api_\u212aey":"hunter2"',  # Kelvin sign
        '{"pass\\u0077ord":"hunter2"',  # JSON escape in the key
        '{"credentials": {"user":"u","v":"hunter2"}, "ok": 1',  # secret key, object value
        '{"credentials": ["hunter2", {"a":"b"',  # secret key, cut-off array value
        '{"items": [{"token": "hunter2"}]',  # inside an array of objects
        '{"password": hunter2, "x": "y"}',  # bare value
    ],
)
def test_raw_lines_lose_their_secrets_wherever_the_key_is(raw):
    text, n = redact_raw_line(raw)
    assert "hunter2" not in text and n >= 1


def test_raw_line_redaction_keeps_the_rest():
    text, n = redact_raw_line('{"a":"password","note":"he said \\"hi\\"","secret":"s3","b":[1,2]')
    assert text == '{"a":"password","note":"he said \\"hi\\"","secret":"[REDACTED]","b":[1,2]' and n == 1
    assert redact_raw_line('{"token":"[REDACTED]"}') == ('{"token":"[REDACTED]"}', 0)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://:LEAKC1@db/x", "LEAKC1"),  # empty user name
        ("redis://:LEAKC3@cache:6379/0", "LEAKC3"),
        ("postgresql://user:p@LEAKC2@db/x", "LEAKC2"),  # an @ inside the password
        ("https://u:ab/LEAK9@host/x", "LEAK9"),  # a / inside the password
        ("failed with api_key=LEAKA1 at step 3", "LEAKA1"),
        ("token=LEAKA2&x=1", "LEAKA2"),
        ("secret=LEAKA3", "LEAKA3"),
        ("client_secret=LEAKA4", "LEAKA4"),
        ('{"password": "LEAKB2"}', "LEAKB2"),  # JSON inside a string
        ('{\\"password\\": \\"LEAKB3\\"}', "LEAKB3"),  # ... as written in a raw line
        ("password: LEAKB1", "LEAKB1"),
        ("Authorization: Basic TEVBS0QxOnB3", "TEVBS0QxOnB3"),
        ("Authorization: Token LEAKD2abcdef", "LEAKD2abcdef"),
        ("mysql --password LEAKF1 -h db", "LEAKF1"),
        ("X-Api-Key: LEAKF3", "LEAKF3"),
        ("DB_PASSWORD=LEAKF4", "LEAKF4"),
        ("postgresql://u:p#LEAKG1@db/x", "LEAKG1"),  # "#" or "?" inside the password
        ("connect mysql://root:a?LEAKG2#b@db:3306/x failed", "LEAKG2"),
        ("dbPassword=LEAKH1", "LEAKH1"),  # camelCase and glued keys
        ("GET /cb?accessToken=LEAKH2&x=1", "LEAKH2"),
        ("export PGPASSWORD=LEAKH3; psql", "LEAKH3"),
        ("TF_VAR_prod_eu_app_db_password=LEAKH4", "LEAKH4"),
        ("signing_key: LEAKH5", "LEAKH5"),
        ("Cookie: sid=LEAKH6", "LEAKH6"),
        ('{"password": "correct horse LEAKI1 staple"}', "LEAKI1"),  # quoted values, whole
        ("password='my LEAKI2 phrase'", "LEAKI2"),
        ('run --password "LEAKI3"', "LEAKI3"),
        ("cli --no-password --token LEAKI4", "LEAKI4"),
        ("rotated: password=LEAKL1", "LEAKL1"),  # inside another key's value
        ("a: b: c: password: LEAKL2", "LEAKL2"),
        ("x=password=LEAKL3", "LEAKL3"),
    ],
)
def test_secrets_inside_text_are_redacted(text, secret):
    redacted, count = redact_text(text)
    assert secret not in redacted and count >= 1
    raw, raw_count = redact_raw_line(text)
    assert secret not in raw and raw_count >= 1
    assert redact_text(redacted) == (redacted, 0)  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "tokens_used=5 token_count=7",
        "http://host:8080/path",
        "https://example.com/users/me?page=2",
        "key: 2, ok: 1",
        "the password policy changed",
        "retry after 30s",
        "git+https://localhost:8080/@scope/pkg@1.2.3",  # a port and a path, not a password
        "docker://ghcr.io:443/org/app@sha256:abc",
        "gh auth login --with-token --hostname github.com",  # flags that take no value
        "psql --password -h db",
        "error: timeout=30 retries=3",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact_text(text) == (text, 0)


def test_authorization_bearer_is_redacted_once():
    assert redact_text("Authorization: Bearer abcdefghijklmnop") == (f"Authorization: Bearer {REDACTED}", 1)


def test_structured_secrets_beyond_key_names():
    value = {
        "headers": [{"name": "Authorization", "value": "LEAKE1xyz"}, {"name": "Accept", "value": "json"}],
        "argv": ["mysql", "--password", "LEAKF1", "--host", "db"],
        "Password ": "LEAKK1",  # trailing space in the key
        "jwt": "LEAKK2",
    }
    redacted, count = redact_value(value)
    assert "LEAK" not in json.dumps(redacted)
    assert redacted["headers"][1] == {"name": "Accept", "value": "json"}
    assert redacted["argv"] == ["mysql", "--password", REDACTED, "--host", "db"]
    assert count == 4
    # a flag with no value does not pass the rule on to the next word
    argv, n = redact_value(["cmd", "--token", "--password", "LEAKJ1", "--with-token", "github.com"])
    assert argv == ["cmd", "--token", "--password", REDACTED, "--with-token", "github.com"] and n == 1


_TRICKY = st.lists(
    st.sampled_from(
        [
            "password",
            "Pwd",
            "token",
            "api_key",
            "Cookie",
            "authorization",
            "Bearer ",
            "--token",
            "-D",
            "PGPASSWORD",
            "://",
            "u:",
            "@",
            "h/",
            ":",
            "=",
            " ",
            "\n",
            "  ",
            '"',
            "'",
            "\\",
            '\\"',
            "|",
            ">",
            ";",
            ",",
            "&",
            "x",
            "hunter2",
            "[REDACTED]",
            "-----BEGIN RSA PRIVATE KEY-----",
            "-----END RSA PRIVATE KEY-----",
            "{",
            "[",
            "]",
            "-",
            "-u ",
            "--user ",
            "a:b",
            "1000:1000",
            "mysql ",
            "-p",
            "sshpass -p ",
            "ghp_" + "A1" * 18,
            "eyJhbGciOiJI",
            ".",
            "AKIA" + "Z" * 16,
            "xoxb-",
            "-u'",
            "-u\\t",
            "-ua:",
            "-p'",
            "', '",
            '"-p", "',
            "\\n",
            "sshpass -v -p ",
            "SSHPASS=",
            "$U",
            "-su ",
            "-sSU'",
            "CORP/",
            "y" * 510,  # with a few more characters, past the 512 of a bounded value
        ]
    ),
    max_size=12,
).map("".join)


@settings(max_examples=3000, deadline=None)
@given(_TRICKY)
@example("mysql sshpass -p | -p'password")  # the pipe ended the mysql command until redacted
@example("mysql -u a:b;c -p'password")
@example("-ua:authorization://")  # a URL until the header rule redacted it, then not kept
@example('-u "=-ua: ')  # a token user redacted ("-u [REDACTED]: "), then no user:password
def test_redacting_twice_changes_nothing(text):
    once, _ = redact_text(text)
    assert redact_text(once) == (once, 0)
    raw_once, _ = redact_raw_line(text)
    assert redact_raw_line(raw_once) == (raw_once, 0)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("password=-Xk9LEAKM1", "LEAKM1"),  # a value starting with "-"
        ("private_key: -----BEGIN RSA PRIVATE KEY-----\nLEAKM2\n-----END RSA PRIVATE KEY-----", "LEAKM2"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn LEAKM3", "LEAKM3"),  # cut off
        ("PASSWORD='abc\nLEAKM4'", "LEAKM4"),  # across lines
        ('password="LEAKM5', "LEAKM5"),  # never closed
        ("password: |\n  LEAKM6\n  more\nnext: 1", "LEAKM6"),  # a YAML block
        ("mvn deploy -Dgpg.passphrase=LEAKM7", "LEAKM7"),
        ("Cookie: theme=dark; sessionid=LEAKM8", "LEAKM8"),
        ("password: correct horse LEAKM9", "LEAKM9"),
        ("AccountName=a;AccountKey=LEAKN1==;EndpointSuffix=x", "LEAKN1"),
    ],
)
def test_harder_secret_shapes_are_redacted(text, secret):
    assert secret not in redact_text(text)[0]


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("https://x-access-token:LEAK@github.com/o/r.git", "@github.com/o/r.git"),
        ("arn:aws:secretsmanager:us-east-1:1:secret:prod/db-AbCdEf", "secret:prod/db-AbCdEf"),
        ("PWD=/home/ci/build", "/home/ci/build"),
        ("Proxy-Authorization: Basic LEAK", "Basic"),
    ],
)
def test_what_surrounds_a_secret_is_kept(text, kept):
    redacted, count = redact_text(text)
    assert kept in redacted and "LEAK" not in redacted and count <= 1


def test_glued_and_dotted_keys_in_objects():
    value, count = redact_value(
        {
            "env": {"PGPASSWORD": "a", "db.password": "b", "PWD": "/home/x"},
            "vars": [{"name": "GITHUBTOKEN", "value": "c"}],
        }
    )
    assert value == {
        "env": {"PGPASSWORD": REDACTED, "db.password": REDACTED, "PWD": "/home/x"},
        "vars": [{"name": "GITHUBTOKEN", "value": REDACTED}],
    }
    assert count == 3


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("//registry.npmjs.org/:_authToken=LEAKP1", "LEAKP1"),  # .npmrc
        ('$env:GITHUB_TOKEN = "LEAKP2"', "LEAKP2"),  # PowerShell
        ("./server -db-password=LEAKP3 -port=8080", "LEAKP3"),  # a single-dash flag
        ("HTTP_AUTHORIZATION=Basic LEAKP4", "LEAKP4"),
        ("password => 'LEAKP5'", "LEAKP5"),
        ("token=b'LEAKP6'", "LEAKP6"),  # a string prefix before the quote
    ],
)
def test_secret_keys_in_more_syntaxes(text, secret):
    assert secret not in redact_text(text)[0]


@pytest.mark.parametrize(
    "text",
    [
        "docker://alpine:3.19@sha256:0123abc",
        "http://localhost:3000?email=bob@example.com",
        "http://[::1]:8080/x@y",
        "automountServiceAccountToken: false",
        "requirePassword=true",
        "System.Runtime, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b03f5f7f11d50a3a",
    ],
)
def test_more_ordinary_text_is_left_alone(text):
    assert redact_text(text) == (text, 0)


def test_raw_lines_get_the_pair_and_argv_rules_too():
    for raw in (
        '{"env":[{"name":"DB_PASSWORD","value":"LEAKQ1"}], cut',
        '{"argv":["psql","--password","LEAKQ2"], cut',
    ):
        redacted, count = redact_raw_line(raw)
        assert "LEAKQ" not in redacted and count == 1
        assert redact_raw_line(redacted) == (redacted, 0)


def test_more_pair_shapes_and_booleans_in_objects():
    value, count = redact_value(
        {
            "aws": {"Name": "Authorization", "Value": "LEAKR1"},
            "headers": [["Authorization", "Basic LEAKR2"], ["Accept", "json"]],
            "spec": {"automountServiceAccountToken": False, "hasPassword": True},
        }
    )
    assert "LEAKR" not in json.dumps(value) and count == 2
    assert value["headers"][1] == ["Accept", "json"]
    assert value["spec"] == {"automountServiceAccountToken": False, "hasPassword": True}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('{"password":"","api_key":"LEAKS1"}', "LEAKS1"),  # after an empty value
        ('{"token":"[REDACTED]","refresh_token":"LEAKS2"}', "LEAKS2"),  # after a redacted one
        ("git clone https://x-access-token:ghp_A@github.com/o/r.git?x=1&token=LEAKS3", "LEAKS3"),
        ("java -Dapi_key=LEAKS4 -jar app.jar", "LEAKS4"),
        ("password=True!LEAKS5", "LEAKS5"),  # starts like a plain word, is not one
        ("redis://default:123#LEAKS6@redis:6379/0", "LEAKS6"),  # digits, then '#': not a port
        ("secret=no|client_secret=LEAKS7", "LEAKS7"),  # a pipe ends a bare value
    ],
)
def test_what_follows_a_kept_value_is_still_examined(text, secret):
    assert secret not in redact_text(text)[0]


def test_two_word_lists_are_not_header_tuples_unless_they_name_a_header():
    value, count = redact_value({"required": ["password", "email"], "h": [["X-Api-Key", "LEAKT1"]]})
    assert value == {"required": ["password", "email"], "h": [["X-Api-Key", REDACTED]]} and count == 1


def test_long_and_prefixed_values_on_raw_lines():
    raw = '{"env":[{"name":"DB_PASSWORD","value":"' + "A" * 5000 + 'LEAKU1"}] cut'
    assert "LEAKU1" not in redact_raw_line(raw)[0]
    assert "LEAKU2" not in redact_raw_line('{"token": b"LEAKU2"')[0]
    raw, count = redact_raw_line('{"token": ' + "a" * 700 + 'LEAKU3, "x": 1')  # bare, past the bound
    assert "LEAKU3" not in raw and raw.endswith('"x": 1') and count == 1
    raw, count = redact_raw_line('{"argv": ["curl", "-u", "alice:' + "a" * 700 + 'LEAKU4"], "cut')
    assert "LEAKU4" not in raw and count == 1
    raw, count = redact_raw_line('{"cmd": "run --password \\"abcLEAKU5')  # an escaped quote, cut off
    assert "LEAKU5" not in raw and count == 1 and redact_raw_line(raw) == (raw, 0)


@pytest.mark.parametrize(
    "text",
    [
        "curl -u deploy:LEAKP1:ghp_" + "A" * 36 + " https://api",  # its tail redacted first, by form
        "curl -u admin:LEAKP2:[REDACTED] https://api",  # a password that merely holds the marker
    ],
)
def test_a_password_partly_redacted_already_is_redacted_whole(text):
    redacted, _ = redact_text(text)
    assert "LEAKP" not in redacted and redact_text(redacted) == (redacted, 0)
    assert "LEAKP" not in json.dumps(redact_value(["curl", "-u", text.split()[2]])[0])
    assert "LEAKP" not in redact_raw_line(json.dumps({"argv": ["curl", "-u", text.split()[2]]})[:-2])[0]


def test_argv_lists_lose_passwords_after_switch_bundles():
    argv = ["curl", "-su", "alice:LEAKV1", "-sSU", "proxy:LEAKV2", "-k", "x:y", "https://api"]
    value, count = redact_value(argv)
    assert count == 2 and "LEAKV" not in json.dumps(value) and value[6] == "x:y"


_GHP = "ghp_" + "Ab1" * 12
_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"


@pytest.mark.parametrize(
    "token",
    [
        _GHP,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXY",
        "glpat-abcdefghij0123456789",
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAIOSFODNN7EXAMPLE",
        "xoxb-123456789012-abcdefABCDEF",
        "xoxe.xoxp-1-Mi0yLTExMjM0NTY3ODkw",
        "xoxe-1-My0xLTExMjM0NTY3ODkwLTEy",
        "xapp-1-A0123ABCDEF-1234567890123-0123456789abcdef",
        "sk_live_" + "a1B2" * 6,
        "rk_test_" + "a1B2" * 6,
        "AIza" + "SyD-abcdefghijklmnopqrstuvwxyz01234",
        "npm_" + "aB3" * 12,
        "sk-proj-" + "Ab_-9" * 8,
        "sk-ant-api03-" + "x" * 40,
        "sk-" + "Ab1xYz9Q" * 2 + "T3BlbkFJ" + "Qw8eR7tY" * 2 + "Zx0C" * 2,
        _JWT,
    ],
)
@pytest.mark.parametrize(
    "template",
    [
        "{}",
        "deploy failed with {} in the log",
        "https://{}@github.com/o/r.git",
        "Authorization: token {}",
        "'{}'",
    ],
)
def test_credentials_known_by_their_form_are_redacted_without_a_key(token, template):
    text = template.format(token)
    redacted, count = redact_text(text)
    assert token not in redacted and count >= 1
    assert may_contain_secret(text.encode()), "the pre-check would let this line skip redaction"
    assert redact_text(redacted) == (redacted, 0)
    raw = json.dumps(
        {"event_type": "decision", "occurred_at": "2026-01-01T00:00:00Z", "payload": {"rationale": text}}
    )
    ev = parse_line(raw.encode())
    assert isinstance(ev, ParsedEvent) and token not in ev.payload_json and ev.redactions >= 1
    assert token not in redact_raw_line(raw[:-3])[0]  # a cut-off line, as quarantined


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("curl -u alice:LEAK1x https://api", "LEAK1x", "curl -u alice:"),
        ("curl --user alice:LEAK2x https://api", "LEAK2x", "--user alice:"),
        ("curl --proxy-user=bob:LEAK3x -x proxy", "LEAK3x", "bob:"),
        ("curl -U 'bob:LEAK4x' https://api", "LEAK4x", "bob:"),
        ("curl -u alice@example.com:LEAK4y https://api", "LEAK4y", "alice@example.com:"),
        ("mysql -h db -uroot -pLEAK5x appdb", "LEAK5x", "-uroot -p"),
        ("cd /srv && mysqldump --single-transaction -pLEAK6x db > dump.sql", "LEAK6x", "mysqldump"),
        ('MARIADB-DUMP -u root "-pLEAK7x"', "LEAK7x", "-u root"),
        ("sshpass -p LEAK8x ssh deploy@host", "LEAK8x", "ssh deploy@host"),
    ],
)
def test_command_line_passwords_are_redacted(text, secret, kept):
    redacted, count = redact_text(text)
    assert secret not in redacted and kept in redacted and count == 1
    assert may_contain_secret(text.encode())
    assert redact_text(redacted) == (redacted, 0)


@pytest.mark.parametrize(
    "text",
    [
        "docker run -u 1000:1000 image",  # uid:gid
        "git push -u origin main",
        "sort -u names.txt",
        "mysql -p -h db",  # -p alone prompts for the password
        "mysql --port 3306 -P 3306",
        "mkdir -p /srv/data && cp -pr a b",  # -p outside a mysql command
        "ghp_tooshort",
        "tasks in Asia: akia-7, ASIA-2",
        "AKIAIOSFODNN7EXAMPLEX",  # one character too long: not an access key id
        "risk-" + "a" * 48 + " and disk-1, task-42",  # sk- inside a word
        "sk-" + "a1" * 24 + "b",  # 49 characters: not the 48 of a key
        "xapp-store release notes",
        "eyJ only a prefix",
        "docker run -u $(id -u):$(id -g) image",  # no -uuser:pw glued inside "$(id -u):"
        "['mysql', '-p', 'appdb']",  # a list: -p alone, then the database
        "bash: sshpass: command not found",  # only SSHPASS so spelled is a secret key
        "sshpass -e ssh -p 2222 host",  # ssh's port
        "ps -fu root",  # a bundle ending in -u, with no password
        "sort -nu names.txt",
        "tar -cvu archive.tar a:b",  # not a bundle of curl's switches
        "curl -su https://api",  # a URL, not user:password
    ],
)
def test_ordinary_command_lines_and_lookalikes_are_left_alone(text):
    assert redact_text(text) == (text, 0)


def test_argv_lists_lose_command_line_passwords():
    argv = ["curl", "-u", "alice:LEAK9x", "--user", "bob:LEAK9y", "https://api"]
    assert redact_value(argv) == (
        ["curl", "-u", f"alice:{REDACTED}", "--user", f"bob:{REDACTED}", "https://api"],
        2,
    )
    assert redact_value(["C:\\mysql\\bin\\mysql.exe", "-pLEAK9w"]) == (
        ["C:\\mysql\\bin\\mysql.exe", f"-p{REDACTED}"],
        1,
    )
    assert redact_value(["/usr/bin/mysql", "-uroot", "-pLEAK9z", "db"]) == (
        ["/usr/bin/mysql", "-uroot", f"-p{REDACTED}", "db"],
        1,
    )
    for kept in (["docker", "run", "-u", "1000:1000"], ["mysql", "-p"], ["mkdir", "-psrc"]):
        assert redact_value(list(kept)) == (kept, 0)
    raw = '{"argv": ["curl", "-u", "alice:LEAK9x"], "db": ["mysql", "-pLEAK9z"'
    redacted, count = redact_raw_line(raw)
    assert "LEAK9" not in redacted and count == 2 and '"alice:' in redacted
    assert redact_raw_line(redacted) == (redacted, 0)


def _event_line(rationale: str) -> str:
    return json.dumps(
        {"event_type": "decision", "occurred_at": "2026-01-01T00:00:00Z", "payload": {"rationale": rationale}}
    )


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ('curl -u"alice:LEAKQ1" https://api', "LEAKQ1", '-u"alice:'),  # the quote glued to -u
        ("curl -u'alice:LEAKQ2' https://api", "LEAKQ2", "-u'alice:"),
        ("curl -ualice:LEAKQ3 -T f https://api", "LEAKQ3", "-ualice:"),  # the value glued to -u
        ("curl -u :LEAKQ4 https://api", "LEAKQ4", "-u :"),  # an API token as an empty user's password
        ("curl -u 'alice:my LEAKQ5' https://api", "LEAKQ5", "-u 'alice:"),  # quoted: spaces and all
        ("curl -u 'alice:p\"LEAKQ6' https://api", "LEAKQ6", "'alice:"),
        (
            "Command '['curl', '-u', 'alice:LEAKQ7', 'https://api']' returned non-zero exit status 22.",
            "LEAKQ7",
            "'alice:",
        ),
        ("mysql -uroot -p'LEAKQ8' appdb", "LEAKQ8", "-uroot -p'"),
        ('mysql -uroot -p"my LEAKQ9" appdb', "LEAKQ9", '-uroot -p"'),
        ("mysql -uroot -p-LEAKR1 appdb", "LEAKR1", "-uroot -p"),  # a password starting with "-"
        ("mysql -h db \\\n  -uroot -pLEAKR2 appdb", "LEAKR2", "-uroot -p"),  # a continued line
        ("sshpass -p 'LEAKR4' ssh deploy@host", "LEAKR4", "ssh deploy@host"),
        ('sshpass -p "my LEAKR5" ssh host', "LEAKR5", "ssh host"),
        ("sshpass -v -p LEAKR6 ssh host", "LEAKR6", "sshpass -v -p"),
        ("sshpass -P assword: -p LEAKR7 ssh host", "LEAKR7", "-P assword:"),
        (
            "Command '['sshpass', '-p', 'LEAKR8', 'ssh', 'h']' returned non-zero exit status 255.",
            "LEAKR8",
            "'ssh'",
        ),
        ("SSHPASS=LEAKR9 sshpass -e ssh host", "LEAKR9", "sshpass -e ssh host"),
        # -u at the end of a bundle of curl's switches, and users with a domain
        ("curl -su alice:LEAKB1 https://api", "LEAKB1", "curl -su alice:"),
        ("curl -sSLu alice:LEAKB2 https://api", "LEAKB2", "-sSLu alice:"),
        ("curl -kU proxyuser:LEAKB3 -x proxy https://api", "LEAKB3", "-kU proxyuser:"),
        ("curl -u 'CORP/alice:LEAKB4' https://api", "LEAKB4", "-u 'CORP/alice:"),
        ("curl --ntlm -u 'CORP\\alice:LEAKB5' https://api", "LEAKB5", "-u 'CORP\\alice:"),
        ('curl -u "CORP/alice:LEAKB6" https://api', "LEAKB6", '"CORP/alice:'),
        # values longer than a pattern's bound (512 characters) lose their tails too
        ("token=" + "a" * 600 + "LEAKL1 next", "LEAKL1", " next"),
        ('password="' + "a" * 600 + 'LEAKL2" next=1', "LEAKL2", '" next=1'),
        ("password: " + "a" * 600 + "LEAKL3", "LEAKL3", "password: "),
        ("Cookie: " + "a" * 2100 + "LEAKL4", "LEAKL4", "Cookie: "),
        ("run --password " + "a" * 600 + "LEAKL5 next", "LEAKL5", " next"),
        ("curl -u alice:" + "a" * 600 + "LEAKL6 https://api", "LEAKL6", " https://api"),
        ("sshpass -p " + "a" * 600 + "LEAKL7 ssh host", "LEAKL7", " ssh host"),
        ("mysql -p" + "a" * 300 + "LEAKL8 db", "LEAKL8", " db"),
        ("api_key='" + "a" * 600 + "LEAKL9'", "LEAKL9", "api_key='"),
        ("Authorization: Basic " + "a" * 3000 + "LEAKM1 next", "LEAKM1", " next"),
    ],
)
def test_command_line_passwords_in_more_shapes(text, secret, kept):
    redacted, count = redact_text(text)
    assert secret not in redacted and kept in redacted and count == 1
    assert redact_text(redacted) == (redacted, 0)
    raw = _event_line(text)
    assert may_contain_secret(raw.encode())
    ev = parse_line(raw.encode())
    assert isinstance(ev, ParsedEvent) and secret not in ev.payload_json
    cut, _ = redact_raw_line(raw[:-3])  # a cut-off line, as quarantined: JSON escapes and all
    assert secret not in cut and redact_raw_line(cut) == (cut, 0)


@pytest.mark.parametrize(
    "text",
    [
        "curl -u\talice:LEAKT1 https://api",  # a tab, "\t" on the raw line
        'curl -u "alice:LEAKT2" https://api',  # \" on the raw line
        "mysql -h db\t-pLEAKT3 appdb",
        'sshpass -p "LEAKT4" ssh host',
    ],
)
def test_raw_lines_lose_command_line_passwords_behind_json_escapes(text):
    cut, count = redact_raw_line(_event_line(text)[:-3])
    assert "LEAKT" not in cut and count == 1 and redact_raw_line(cut) == (cut, 0)


@pytest.mark.parametrize(
    "text",
    [
        '{"log": "step 1\\nTOKEN_HERE done"}',  # JSON logged inside a string: "\n" then the token
        "a\\tTOKEN_HERE",
        "next=%2Fapi%3Fkey%3DTOKEN_HERE%26x%3D1",  # URL-encoded
        "q=%22TOKEN_HERE%22",
    ],
)
@pytest.mark.parametrize(
    "token", [_GHP, "AKIAIOSFODNN7EXAMPLE", "AIza" + "SyD-abcdefghijklmnopqrstuvwxyz01234", _JWT]
)
def test_known_tokens_after_an_escape_are_redacted(text, token):
    text = text.replace("TOKEN_HERE", token)
    redacted, count = redact_text(text)
    assert token not in redacted and count == 1 and redact_text(redacted) == (redacted, 0)


def test_known_tokens_on_cut_off_raw_lines_after_an_escaped_newline():
    for token in (_GHP, "AKIAIOSFODNN7EXAMPLE", _JWT):
        cut, count = redact_raw_line(_event_line(f"line 1\n{token}\tline 2")[:-3])
        assert token not in cut and count == 1 and redact_raw_line(cut) == (cut, 0)


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        (["sudo", "mysql", "-uroot", "-pLEAKS1"], "LEAKS1"),
        (["docker", "exec", "-i", "db", "mysql", "-pLEAKS2", "app"], "LEAKS2"),
        (["mysql", "-p-LEAKS3"], "LEAKS3"),
        (["sshpass", "-p", "LEAKS4", "ssh", "host"], "LEAKS4"),
        (["/usr/bin/sshpass", "-v", "-pLEAKS5", "ssh", "host"], "LEAKS5"),
        (["curl", "-u", ":LEAKS6", "https://api"], "LEAKS6"),
        ({"env": {"SSHPASS": "LEAKS7"}}, "LEAKS7"),
        ({"env": [{"name": "SSHPASS", "value": "LEAKS8"}]}, "LEAKS8"),
    ],
)
def test_argv_lists_lose_more_command_line_passwords(value, secret):
    raw = json.dumps({"argv": value})
    redacted, count = redact_value(json.loads(raw))
    assert secret not in json.dumps(redacted) and count == 1
    assert redact_value(redacted)[1] == 0
    assert may_contain_secret(raw.encode())
    cut, _ = redact_raw_line(raw[:-2])
    assert secret not in cut and redact_raw_line(cut) == (cut, 0)


@pytest.mark.parametrize(
    "value",
    [
        ["docker", "run", "--name", "mysql", "-p3306:3306", "mysql:8"],  # ports
        ["sshpass", "-e", "ssh", "-p", "2222", "host"],  # ssh's port, not sshpass's password
        ["mysql", "-p", "appdb"],  # -p alone prompts
        ["date", "-u", "+%H:%M:%S"],
        ["ffuf", "-u", "https://target/FUZZ"],
    ],
)
def test_argv_lists_that_hold_no_password_are_left_alone(value):
    assert redact_value(list(value)) == (value, 0)
    raw = json.dumps({"argv": value})
    assert redact_raw_line(raw[:-2])[1] == 0


@pytest.mark.parametrize(
    "text",
    [
        "TIMESTAMP=$(date -u +%Y-%m-%dT%H:%M:%SZ)",  # a date format, not user:password
        "ffuf -u https://target/FUZZ -w words.txt",  # -u URL
        "sqlmap -u 'http://shop/item?id=1' --batch",
        "docker run --rm -u ${UID}:${GID} -v $PWD:/w image",  # uid:gid as shell variables
        "docker run --name mysql -p3306:3306 -d mysql:8",  # docker's ports in a line naming mysql
        "ERROR 1045 (28000): Access denied for user 'root'@'localhost' (using password: YES)",
        "Settings(password=None)",
    ],
)
def test_more_ordinary_command_lines_are_left_alone(text):
    assert redact_text(text) == (text, 0)
    assert redact_raw_line(json.dumps(text)) == (json.dumps(text), 0)


def test_every_secret_word_passes_the_quick_key_check():
    """is_secret_key looks for a hint (pass, key, token, …) before normalising a key: a secret word
    added without one would never be recognised."""
    from orchestration_pipeline.lib.redaction.patterns import _GLUED_SECRET, _SECRET_WORDS

    glued = _GLUED_SECRET.pattern.split("(?:", 1)[1].split(")", 1)[0].split("|")
    assert "accesskey" in glued
    for word in [*_SECRET_WORDS.split("|"), *glued]:
        assert is_secret_key(word) and is_secret_key("DB_" + word.upper()), word
    assert is_secret_key("SSHPASS")
