"""Token families recognisable by their form: checksummed and structured tokens."""

from __future__ import annotations

import json
import random

from orchestration_pipeline_tests.redaction_corpus import tokens as t
from orchestration_pipeline_tests.redaction_corpus.model import TOKEN, Secret, family

# -- checksummed and structured tokens ---------------------------------------------------------


@family(
    "github_classic_pat",
    TOKEN,
    "GITHUB_TOKEN",
    r"ghp_[0-9A-Za-z]{36}",
    "ghp_ + 30 base62 + CRC32 in 6 base62",
)
def _github_classic(rng):
    body = t.rand(rng, t.ALNUM, 30)
    return Secret(f"ghp_{body}{t.crc32_base62(body)}", (body,))


@family(
    "github_oauth",
    TOKEN,
    "GH_OAUTH_TOKEN",
    r"gh[ousr]_[0-9A-Za-z]{36}",
    "gho_/ghu_/ghs_/ghr_ + 30 base62 + CRC32",
)
def _github_oauth(rng):
    body = t.rand(rng, t.ALNUM, 30)
    return Secret(f"{rng.choice(['gho', 'ghu', 'ghs', 'ghr'])}_{body}{t.crc32_base62(body)}", (body,))


@family(
    "github_fine_grained_pat",
    TOKEN,
    "GH_PAT",
    r"github_pat_[0-9A-Za-z]{22}_[0-9A-Za-z]{59}",
    "github_pat_ + 22 base62 (id) + _ + 59 base62",
)
def _github_fine_grained(rng):
    head, body = t.rand(rng, t.ALNUM, 22), t.rand(rng, t.ALNUM, 59)
    return Secret(f"github_pat_{head}_{body}", (head, body))


@family("npm_token", TOKEN, "NPM_TOKEN", r"npm_[0-9A-Za-z]{36}", "npm_ + 30 base62 + CRC32 in 6 base62")
def _npm(rng):
    body = t.rand(rng, t.ALNUM, 30)
    return Secret(f"npm_{body}{t.crc32_base62(body)}", (body,))


@family(
    "grafana_service_account",
    TOKEN,
    "GRAFANA_SA_TOKEN",
    r"glsa_[0-9A-Za-z]{32}_[0-9a-f]{8}",
    "glsa_ + 32 base62 + _ + CRC32 (8 hex)",
)
def _grafana_sa(rng):
    body = t.rand(rng, t.ALNUM, 32)
    return Secret(f"glsa_{body}_{t.crc32_hex(f'glsa_{body}')}", (body,))


@family(
    "grafana_cloud_token",
    TOKEN,
    "GRAFANA_CLOUD_TOKEN",
    r"glc_eyJ[A-Za-z0-9+/]{60,}={0,2}",
    "glc_ + base64 of a JSON object holding the org, name, key and region",
)
def _grafana_cloud(rng):
    org = t.rand(rng, t.DIGITS, 6)
    claims = {
        "o": org,
        "n": f"stack-{org}-hm-read-ci",
        "k": t.rand(rng, t.ALNUM, 24),
        "m": {"r": "prod-eu-west-2"},
    }
    body = t.b64(json.dumps(claims, separators=(",", ":")).encode())
    return Secret(f"glc_{body}", (body,))


@family(
    "sentry_org_token",
    TOKEN,
    "SENTRY_AUTH_TOKEN",
    r"sntrys_eyJ[A-Za-z0-9+/=]{40,}_[A-Za-z0-9+/]{43}",
    "sntrys_ + base64 JSON (org, urls) + _ + 43 base64 secret",
)
def _sentry_org(rng):
    claims = {"iat": rng.randint(1_700_000_000, 1_760_000_000), "url": "https://sentry.io", "org": "acme"}
    head = t.b64(json.dumps(claims, separators=(",", ":")).encode())
    secret = t.rand(rng, t.B64, 43)
    return Secret(f"sntrys_{head}_{secret}", (secret,))


@family(
    "discord_bot_token",
    TOKEN,
    "DISCORD_BOT_TOKEN",
    r"[MNO][A-Za-z0-9]{23,25}\.[\w-]{6}\.[\w-]{27,38}",
    "base64(user id) . 6 timestamp . 27-38 HMAC",
)
def _discord_bot(rng):
    user = t.b64url(str(rng.randint(10**17, 10**19 - 1)).encode())
    stamp, mac = t.rand(rng, t.B64URL, 6), t.rand(rng, t.B64URL, rng.choice([27, 38]))
    return Secret(f"{user}.{stamp}.{mac}", (mac,))


@family(
    "telegram_bot_token",
    TOKEN,
    "TELEGRAM_BOT_TOKEN",
    r"\d{8,10}:AA[\w-]{33}",
    "bot id (8-10 digits) : AA + 33 base64url",
)
def _telegram(rng):
    body = "AA" + t.rand(rng, t.B64URL, 33)
    return Secret(f"{rng.randint(10**7, 10**10 - 1)}:{body}", (body,))


@family(
    "sendgrid_api_key",
    TOKEN,
    "SENDGRID_API_KEY",
    r"SG\.[\w-]{22}\.[\w-]{43}",
    "SG. + 22 base64url (id) . 43 base64url",
)
def _sendgrid(rng):
    head, body = t.rand(rng, t.B64URL, 22), t.rand(rng, t.B64URL, 43)
    return Secret(f"SG.{head}.{body}", (head, body))


@family(
    "terraform_cloud_token",
    TOKEN,
    "TFE_TOKEN",
    r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9]{60,70}",
    "14 alnum .atlasv1. 60-70 alnum",
)
def _terraform(rng):
    head, body = t.rand(rng, t.ALNUM, 14), t.rand(rng, t.ALNUM, rng.randint(60, 70))
    return Secret(f"{head}.atlasv1.{body}", (head, body))


@family(
    "azure_ad_client_secret",
    TOKEN,
    "AZURE_CLIENT_SECRET",
    r"[\w~.]{3}\dQ~[\w~.-]{31,34}",
    "3 chars + digit + Q~ + 31-34 chars",
)
def _azure_ad(rng):
    value = (
        t.rand(rng, t.ALNUM + "_~.", 3)
        + rng.choice(t.DIGITS)
        + "Q~"
        + t.rand(rng, t.ALNUM + "_~.-", rng.randint(31, 34))
    )
    return Secret(value, (value,))


@family(
    "aws_access_key_id",
    TOKEN,
    "AWS_ACCESS_KEY_ID",
    r"(?:AKIA|ASIA)[A-Z2-7]{16}",
    "AKIA (long-term) / ASIA (session) + 16 base32",
)
def _aws_id(rng):
    value = rng.choice(["AKIA", "ASIA"]) + t.rand(rng, t.AWS_ID, 16)
    return Secret(value, (value,))


@family(
    "aws_other_key_id",
    TOKEN,
    "AWS_KEY_ID",
    r"(?:ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16}",
    "ABIA (STS bearer) / ACCA (context) / A3T. + 16 base32",
)
def _aws_other(rng):
    value = rng.choice(["ABIA", "ACCA", "A3T" + rng.choice(t.UPPER_ALNUM)]) + t.rand(rng, t.AWS_ID, 16)
    return Secret(value, (value,))


@family(
    "jwt", TOKEN, "ID_TOKEN", r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]{40,}", "base64url header . claims . signature"
)
def _jwt(rng):
    header, claims, signature = t.jwt(rng, rng.choice(["HS256", "RS256", "ES256"]))
    return Secret(f"{header}.{claims}.{signature}", (claims, signature))


@family(
    "jwt_base64",
    TOKEN,
    "ENCODED_TOKEN",
    r"ZXlK[A-Za-z0-9+/]{100,}={0,2}",
    "a JWT wrapped in base64 again (ZXlK…)",
)
def _jwt_base64(rng):
    header, claims, signature = t.jwt(rng)
    value = t.b64(f"{header}.{claims}.{signature}".encode())
    return Secret(value, (value[len(header) // 3 * 4 :],))  # the header's own encoding is public


@family(
    "openai_api_key",
    TOKEN,
    "OPENAI_API_KEY",
    r"sk-(?:proj-|svcacct-)?[\w-]{20,74}T3BlbkFJ[\w-]{20,74}",
    "sk-[proj-|svcacct-] + random + T3BlbkFJ + random",
)
def _openai(rng):
    size = rng.choice([20, 74])
    head, tail = (
        t.rand(rng, t.B64URL if size > 20 else t.ALNUM, size),
        t.rand(rng, t.B64URL if size > 20 else t.ALNUM, size),
    )
    prefix = "sk-" if size == 20 else rng.choice(["sk-proj-", "sk-svcacct-"])
    return Secret(f"{prefix}{head}T3BlbkFJ{tail}", (head, tail))


@family(
    "anthropic_api_key",
    TOKEN,
    "ANTHROPIC_API_KEY",
    r"sk-ant-(?:api03|admin01)-[\w-]{93}AA",
    "sk-ant-api03-/sk-ant-admin01- + 93 base64url + AA",
)
def _anthropic(rng):
    body = t.rand(rng, t.B64URL, 93)
    return Secret(f"sk-ant-{rng.choice(['api03', 'admin01'])}-{body}AA", (body,))


@family(
    "pypi_token",
    TOKEN,
    "PYPI_TOKEN",
    r"pypi-AgEIcHlwaS5vcmc[\w-]{100,180}",
    "pypi- + macaroon (AgEIcHlwaS5vcmc = 'pypi.org') in base64url",
)
def _pypi(rng):
    body = t.b64url(b"\x02\x24" + t.rand_uuid(rng).encode() + t.rand_bytes(rng, rng.randint(40, 90)))
    return Secret(f"pypi-AgEIcHlwaS5vcmc{body}", (body,))


@family(
    "fly_io_token",
    TOKEN,
    "FLY_API_TOKEN",
    r"fm2_[A-Za-z0-9+/=]{100,},fm2_[A-Za-z0-9+/=]{60,}",
    "fm2_ macaroons in base64, joined by commas",
)
def _fly(rng):
    first, second = (
        t.b64(t.rand_bytes(rng, rng.randint(180, 240))),
        t.b64(t.rand_bytes(rng, rng.randint(60, 90))),
    )
    return Secret(f"fm2_{first},fm2_{second}", (first, second))


@family(
    "onepassword_service_account",
    TOKEN,
    "OP_SERVICE_ACCOUNT_TOKEN",
    r"ops_eyJ[\w-]{200,}",
    "ops_ + base64url JSON (sign-in address, SRP x, key material)",
)
def _onepassword(rng):
    claims = {
        "signInAddress": "my.1password.com",
        "email": f"{t.rand(rng, 'abcdefghijklmnopqrstuvwxyz', 12)}@1passwordserviceaccounts.com",
        "srpX": t.rand(rng, t.HEX, 64),
        "muk": {"alg": "A256GCM", "k": t.rand(rng, t.B64URL, 43), "kty": "oct"},
        "secretKey": "A3-" + t.rand(rng, t.UPPER_ALNUM, 26),
    }
    body = t.b64url(json.dumps(claims, separators=(",", ":")).encode())
    return Secret(f"ops_{body}", (body,))


@family(
    "age_secret_key",
    TOKEN,
    "SOPS_AGE_KEY",
    r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
    "bech32 of 32 bytes with hrp age-secret-key-, upper case",
)
def _age(rng):
    value = t.bech32("age-secret-key-", t.rand_bytes(rng, 32)).upper()
    return Secret(value, (value[16:],))


@family(
    "atlassian_api_token",
    TOKEN,
    "JIRA_API_TOKEN",
    r"ATATT3xFfGF0[\w-]{150,200}=[0-9A-F]{8}",
    "ATATT3xFfGF0 + base64url + = + 8 hex CRC",
)
def _atlassian(rng):
    body = t.rand(rng, t.B64URL, rng.randint(150, 200))
    return Secret(f"ATATT3xFfGF0{body}={t.crc32_hex(body).upper()}", (body,))


@family(
    "dynatrace_token",
    TOKEN,
    "DT_API_TOKEN",
    r"dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}",
    "dt0c01. + 24 (public id) . 64 (secret)",
)
def _dynatrace(rng):
    head, body = t.rand(rng, t.UPPER_ALNUM, 24), t.rand(rng, t.UPPER_ALNUM, 64)
    return Secret(f"dt0c01.{head}.{body}", (body,))


@family(
    "postman_api_key", TOKEN, "POSTMAN_API_KEY", r"PMAK-[0-9a-f]{24}-[0-9a-f]{34}", "PMAK- + 24 hex - 34 hex"
)
def _postman(rng):
    head, body = t.rand(rng, t.HEX, 24), t.rand(rng, t.HEX, 34)
    return Secret(f"PMAK-{head}-{body}", (head, body))


@family(
    "cloudflare_origin_ca_key",
    TOKEN,
    "CF_ORIGIN_CA_KEY",
    r"v1\.0-[0-9a-f]{24}-[0-9a-f]{146}",
    "v1.0- + 24 hex - 146 hex",
)
def _cloudflare_ca(rng):
    head, body = t.rand(rng, t.HEX, 24), t.rand(rng, t.HEX, 146)
    return Secret(f"v1.0-{head}-{body}", (head, body))


@family("vault_batch_token", TOKEN, "VAULT_TOKEN", r"hvb\.AAAAAQ[\w-]{130,160}", "hvb. + AAAAAQ + base64url")
def _vault_batch(rng):
    body = t.rand(rng, t.B64URL, rng.randint(130, 160))
    return Secret(f"hvb.AAAAAQ{body}", (body,))


def _ids(rng: random.Random, count: int) -> str:
    return "-".join(str(rng.randint(10**9, 10**13 - 1)) for _ in range(count))


@family(
    "slack_bot_token",
    TOKEN,
    "SLACK_BOT_TOKEN",
    r"xoxb-\d{10,13}-\d{10,13}-[A-Za-z0-9]{24}",
    "xoxb- + team id - bot id - 24 alnum",
)
def _slack_bot(rng):
    body = t.rand(rng, t.ALNUM, 24)
    return Secret(f"xoxb-{_ids(rng, 2)}-{body}", (body,))


@family(
    "slack_user_token",
    TOKEN,
    "SLACK_USER_TOKEN",
    r"xoxp-\d{10,13}-\d{10,13}-\d{10,13}-[0-9a-f]{32}",
    "xoxp- + three ids - 32 hex",
)
def _slack_user(rng):
    body = t.rand(rng, t.HEX, 32)
    return Secret(f"xoxp-{_ids(rng, 3)}-{body}", (body,))


@family(
    "slack_app_token",
    TOKEN,
    "SLACK_APP_TOKEN",
    r"xapp-1-A[A-Z0-9]{10}-\d{13}-[0-9a-f]{64}",
    "xapp-1-A + 10 - 13 digits - 64 hex",
)
def _slack_app(rng):
    body = t.rand(rng, t.HEX, 64)
    return Secret(
        f"xapp-1-A{t.rand(rng, t.UPPER_ALNUM, 10)}-{rng.randint(10**12, 10**13 - 1)}-{body}", (body,)
    )
