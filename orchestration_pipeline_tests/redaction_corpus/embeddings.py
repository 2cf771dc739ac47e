"""Ways of embedding a secret: the places producers leak them, as text or as a JSON payload.

Each embedding turns a :class:`Secret` into a carrier (a ``str`` of text, or a ``dict`` that is an
event payload) and says which parts of it must not survive. The variant (key name, syntax,
surrounding sentence) is drawn from the random generator, so the families share the variants.

Which family kinds each embedding takes (``Embedding.kinds``; a test holds this table to them):

========================  =====  =====  ========  =====
embedding                 token  keyed  compound  block
========================  =====  =====  ========  =====
json_key_common           x      x      x         x
json_key_unusual          x      x      x         x
json_name_value           x      x      x         x
json_multiline            x      x      x         x
yaml, xml, dotenv         x      x      x         x
json_key_neutral          x             x
argv_positional           x             x
free_text                 x             x         x
argv_flag, cli_flag       x      x      x
assign_* (9 operators)    x      x      x
csharp_verbatim           x      x      x
typed_declaration         x      x      x
call_argument, ini        x      x      x
curl_user                 x      x
auth_header               x      x
url_credentials           x      x
========================  =====  =====  ========  =====

A value known only by its name (``keyed``) is never placed where nothing names it; a URL or
connection string (``compound``) is not placed inside another URL or a header; a multi-line key
block only where a multi-line value is natural (JSON strings, YAML block scalars, XML elements,
``.env`` values with ``\\n`` escapes, free text).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote
from xml.sax.saxutils import escape

from orchestration_pipeline_tests.redaction_corpus.families import (
    BLOCK,
    COMPOUND,
    KEYED,
    TOKEN,
    Family,
    Secret,
)

Carrier = str | dict


@dataclass(frozen=True)
class Names:
    """The variable name of a secret's family, spelled the ways code spells it, and its kind."""

    upper: str  # GITHUB_TOKEN
    snake: str  # github_token
    camel: str  # githubToken
    pascal: str  # GithubToken
    kind: str = TOKEN

    @classmethod
    def of(cls, var: str, kind: str = TOKEN) -> Names:
        words = var.lower().split("_")
        camel = words[0] + "".join(w.capitalize() for w in words[1:])
        return cls(var, var.lower(), camel, camel[0].upper() + camel[1:], kind)


Embed = Callable[[Secret, Names, random.Random], tuple[Carrier, tuple[str, ...]]]


@dataclass(frozen=True)
class Embedding:
    name: str
    kinds: frozenset[str]
    embed: Embed


ALL = frozenset({TOKEN, KEYED, COMPOUND, BLOCK})
LINE = frozenset({TOKEN, KEYED, COMPOUND})  # a single-line value
BY_FORM = frozenset({TOKEN, COMPOUND})  # recognisable without a name
CREDENTIAL = frozenset({TOKEN, KEYED})  # fits a URL's userinfo, an Authorization header, curl -u

EMBEDDINGS: list[Embedding] = []


def embedding(name: str, kinds: frozenset[str]):
    def register(embed: Embed) -> Embed:
        EMBEDDINGS.append(Embedding(name, kinds, embed))
        return embed

    return register


def _encoded(secret: Secret, encode: Callable[[str], str]) -> tuple[str, tuple[str, ...]]:
    """The value as an embedding must encode it (URL-quoted, XML-escaped); the parts encoded alike
    (both encodings work character by character, so an encoded part is a substring of the value)."""
    return encode(secret.value), tuple(encode(p) for p in secret.parts)


def _template(
    templates: list[str], secret: Secret, names: Names, rng: random.Random, value: str | None = None
):
    text = rng.choice(templates).format(v=secret.value if value is None else value, **vars(names))
    return text, secret.parts


# -- JSON payloads ---------------------------------------------------------------------------------

COMMON_KEYS = [
    "token",
    "api_key",
    "apiKey",
    "secret",
    "password",
    "access_token",
    "client_secret",
    "auth_token",
]
BLOCK_KEYS = ["private_key", "privateKey", "ssh_key", "signing_key", "gpg_key"]
# secret-bearing names outside the usual vocabulary, as producers name them
UNUSUAL_KEYS = [
    "HEROKU_KEY",
    "DD_APP_KEY",
    "DB_PASS",
    "SMTP_PW",
    "auth",
    "TOKEN2",
    "SECRET_1",
    "secret_value",
    "JENKINS_LOGIN",
    "S3_ACCESS_ID",
    "creds",
    "x-api-key",
    "passphrase",
    "signingKey",
    "apiSecret",
    "MASTER_KEY",
    "sas_token",
    "LDAP_BIND_PW",
    "webhook_secret",
]
NEUTRAL_KEYS = ["result", "output", "value", "line", "detail"]


@embedding("json_key_common", ALL)
def _json_key_common(secret, names, rng):
    key = rng.choice((BLOCK_KEYS if "\n" in secret.value else COMMON_KEYS) + [names.upper, names.snake])
    payload = {key: secret.value}
    return (rng.choice([payload, {"config": {"service": "api", **payload}}])), secret.parts


@embedding("json_key_unusual", ALL)
def _json_key_unusual(secret, names, rng):
    return {"settings": {rng.choice(UNUSUAL_KEYS): secret.value, "retries": 3}}, secret.parts


@embedding("json_key_neutral", BY_FORM)
def _json_key_neutral(secret, names, rng):
    key = rng.choice(NEUTRAL_KEYS)
    return rng.choice([{key: secret.value}, {"data": {"id": 7, key: secret.value}}]), secret.parts


@embedding("json_name_value", ALL)
def _json_name_value(secret, names, rng):
    v = secret.value
    return rng.choice(
        [
            {"env": [{"name": "REGION", "value": "eu-west-1"}, {"name": names.upper, "value": v}]},
            {"parameters": [{"ParameterKey": names.pascal, "ParameterValue": v}]},
            {"secrets": [{"key": names.snake, "value": v}]},
            {"variables": {names.upper: {"value": v, "masked": False}}},
        ]
    ), secret.parts


@embedding("json_multiline", ALL)
def _json_multiline(secret, names, rng):
    v = secret.value
    if "\n" in v:
        text = rng.choice(
            [
                "Your identification has been saved in id_ed25519\n{v}\nThe key fingerprint is SHA256:x",
                "# deploy key for the build hosts\n{v}\n",
                "writing key to disk:\n{v}\ndone",
            ]
        )
    else:
        text = rng.choice(
            [
                "#!/bin/sh\nset -eu\nexport {upper}={v}\n./deploy.sh --prod\n",
                "[default]\nregion = eu-west-1\n{snake} = {v}\noutput = json\n",
                "services:\n  api:\n    environment:\n      {upper}: {v}\n      LOG_LEVEL: info\n",
            ]
        )
    return {rng.choice(["script", "file_content", "stdout"]): text.format(v=v, **vars(names))}, secret.parts


# -- text --------------------------------------------------------------------------------------------


@embedding("free_text", BY_FORM | {BLOCK})
def _free_text(secret, names, rng):
    if "\n" in secret.value:
        return _template(
            ["here is the key:\n{v}\nkeep it safe", "{v}", "ssh-keygen wrote\n{v}\n"], secret, names, rng
        )
    return _template(
        [
            "rotated the credential, the new value is {v}, update the CI settings",
            "Error 401 from the API using {v}: revoked",
            "paste this into your config: {v} (expires in 30 days)",
            "Using {v}.",
            "found `{v}` in the build log",
            "notify failed ({v}); retrying in 5s",
            "{v}",
        ],
        secret,
        names,
        rng,
    )


@embedding("argv_flag", LINE)
def _argv_flag(secret, names, rng):
    v = secret.value
    return {
        "argv": rng.choice(
            [
                ["deploy", "--token", v, "--env", "prod"],
                ["app", f"--api-key={v}"],
                ["mysql", "-h", "db", "-u", "root", f"--password={v}"],
                ["docker", "login", "-u", "ci", "-p", v, "registry.example.com"],
                ["java", "-jar", "tool.jar", f"-{names.camel}", v],
                ["kubectl", "create", "secret", "generic", "app", f"--from-literal={names.snake}={v}"],
            ]
        )
    }, secret.parts


@embedding("argv_positional", BY_FORM)
def _argv_positional(secret, names, rng):
    v = secret.value
    argv = rng.choice([["gh-release", "upload", v, "dist/"], ["notify", v, "build passed"], ["echo", v]])
    return {"argv": argv}, secret.parts


_ASSIGNMENTS = {
    "assign_eq": ["{upper}={v}", '{snake} = "{v}"', "set {upper}={v}", '$env:{upper} = "{v}"'],
    "assign_colon": ["{snake}: {v}", '"{camel}": "{v}"', "{upper}: '{v}'"],
    "assign_walrus": ['{camel} := "{v}"', "{upper} := {v}"],
    "assign_bnf": ["{upper} ::= {v}", '{snake} ::= "{v}"'],
    "assign_eqeq": ['if {snake} == "{v}":', '[ "${upper}" == "{v}" ]'],
    "assign_eqeqeq": ["if (config.{camel} === '{v}') {{", '{camel} === "{v}"'],
    "assign_arrow": ["'{snake}' => '{v}',", ':{snake} => "{v}"', "{camel} => {v}"],
    "assign_conditional": ["{upper} ?= {v}", '{upper} ?= "{v}"'],
    "assign_concat": ["${camel} .= '{v}';", "$config['{snake}'] .= \"{v}\";"],
    "csharp_verbatim": ['var {camel} = @"{v}";', 'string {pascal} = @"{v}";', 'options.{pascal} = @"{v}";'],
    "typed_declaration": [
        'var {camel} string = "{v}"',
        'private static final String {upper} = "{v}";',
        'let {snake}: &str = "{v}";',
        "const {camel}: string = '{v}';",
        'val {camel}: String = "{v}"',
    ],
    "call_argument": [
        'System.setProperty("{camel}", "{v}");',
        'os.environ.setdefault("{upper}", "{v}")',
        'config.set("auth", "{snake}", "{v}")',
        'client.set{pascal}("{v}");',
        'viper.Set("{snake}", "{v}")',
    ],
    "ini": ["[auth]\n{snake} = {v}\nretries = 3\n", "[credentials]\n{snake}={v}\n"],
    "cli_flag": [
        "deploy --token {v} --env prod",
        "app --api-key={v} --verbose",
        "docker login -u ci -p {v} registry.example.com",
        "java -jar tool.jar -{camel} {v}",
        "mysql -h db -u root --password={v} app",
    ],
}


def _assignment(templates: list[str]) -> Embed:
    return lambda secret, names, rng: _template(templates, secret, names, rng)


for _name, _templates in _ASSIGNMENTS.items():
    embedding(_name, LINE)(_assignment(_templates))


@embedding("curl_user", CREDENTIAL)
def _curl_user(secret, names, rng):
    templates = [
        "curl -u ci:{v} https://api.example.com/v1/items",
        "curl -u {v}: https://api.example.com/v1/charges",
        "curl --user 'admin:{v}' -X GET https://jenkins.example.com/api/json",
    ]
    if names.kind == TOKEN:  # a token passed as the user name; a password there would be odd
        templates.append('curl -su "{v}:x-oauth-basic" https://api.example.com/user')
    return _template(templates, secret, names, rng)


@embedding("yaml", ALL)
def _yaml(secret, names, rng):
    if "\n" in secret.value:
        body = "".join(f"  {line}\n" for line in secret.value.split("\n"))
        return f"{names.snake}: |\n{body}", secret.parts
    return _template(
        [
            "service:\n  {snake}: {v}\n  timeout: 30\n",
            'env:\n  - name: {upper}\n    value: "{v}"\n',
            "stringData:\n  {snake}: '{v}'\n",
        ],
        secret,
        names,
        rng,
    )


@embedding("xml", ALL)
def _xml(secret, names, rng):
    value, parts = _encoded(secret, escape)
    if "\n" in secret.value:
        return f"<{names.camel}>{value}</{names.camel}>", parts
    text, _ = _template(
        [
            '<add key="{pascal}" value="{v}" />',
            "<{camel}>{v}</{camel}>",
            '<property name="{snake}" value="{v}"/>',
            '<feed><add key="Username" value="ci" /><add key="ClearTextPassword" value="{v}" /></feed>',
        ],
        secret,
        names,
        rng,
        value,
    )
    return text, parts


@embedding("dotenv", ALL)
def _dotenv(secret, names, rng):
    if "\n" in secret.value:
        return f'{names.upper}="{secret.value.replace(chr(10), chr(92) + "n")}"\n', secret.parts
    return _template(["{upper}={v}\n", 'export {upper}="{v}"\n', "{upper}='{v}'\n"], secret, names, rng)


@embedding("auth_header", CREDENTIAL)
def _auth_header(secret, names, rng):
    v = secret.value
    choice = rng.randrange(8)
    if choice == 0:
        basic = base64.b64encode(f"ci:{v}".encode()).decode()
        return f"Authorization: Basic {basic}", (basic,)
    if choice == 1:
        return {
            "headers": {"Authorization": f"Klaviyo-API-Key {v}", "Accept": "application/json"}
        }, secret.parts
    return _template(
        [
            "curl -H 'Authorization: Bearer {v}' https://api.example.com/v1/me",
            "Authorization: Api-Token {v}",
            'Authorization: Token token="{v}"',
            "Authorization: SSWS {v}",
            'curl -H "X-Api-Key: {v}" https://api.example.com/v1/items',
            "authorization: GenieKey {v}",
        ],
        secret,
        names,
        rng,
    )


@embedding("url_credentials", CREDENTIAL)
def _url_credentials(secret, names, rng):
    value, parts = _encoded(secret, lambda s: quote(s, safe=""))
    templates = [
        "cloning https://ci:{v}@git.example.com/org/repo.git",
        "GET https://api.example.com/v1/items?access_token={v}&page=2",
        "connecting to wss://stream.example.com/socket?token={v}",
        "ftp://deploy:{v}@files.example.com/upload",
    ]
    if names.kind == TOKEN:  # a token as the URL's user name, as git hosts accept it
        templates.append("git remote add origin https://{v}@git.example.com/org/repo.git")
    if rng.random() < 0.2:
        return {"url": f"https://x-access-token:{value}@git.example.com/org/repo.git"}, parts
    text, _ = _template(templates, secret, names, rng, value)
    return text, parts


def embedding_names() -> list[str]:
    return [e.name for e in EMBEDDINGS]


def fits(family: Family, emb: Embedding) -> bool:
    return family.kind in emb.kinds
