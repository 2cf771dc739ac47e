"""Webhooks, connection strings, values known only by their name, private key blocks, and the
families that are a prefix and a random body."""

from __future__ import annotations

import string

from orchestration_pipeline_tests.redaction_corpus import tokens as t
from orchestration_pipeline_tests.redaction_corpus.model import BLOCK, COMPOUND, KEYED, Secret, family, simple

# -- webhooks and connection strings ------------------------------------------------------------


@family(
    "slack_webhook",
    COMPOUND,
    "SLACK_WEBHOOK_URL",
    r"https://hooks\.slack\.com/(?:services|workflows)/T[A-Z0-9]{8,10}/[AB][A-Z0-9]{8,10}/[A-Za-z0-9]{24}",
    "https://hooks.slack.com/services/T…/B…/ + 24 alnum",
)
def _slack_webhook(rng):
    secret = t.rand(rng, t.ALNUM, 24)
    team, channel = (
        t.rand(rng, t.UPPER_ALNUM, rng.randint(8, 10)),
        t.rand(rng, t.UPPER_ALNUM, rng.randint(8, 10)),
    )
    return Secret(f"https://hooks.slack.com/services/T{team}/B{channel}/{secret}", (secret,))


@family(
    "teams_webhook",
    COMPOUND,
    "TEAMS_WEBHOOK_URL",
    r"https://[a-z0-9]+\.webhook\.office\.com/webhookb2/[0-9a-f-]{36}@[0-9a-f-]{36}/IncomingWebhook/[0-9a-f]{32}/[0-9a-f-]{36}",
    "https://<tenant>.webhook.office.com/webhookb2/<group>@<tenant>/IncomingWebhook/<32 hex>/<id>",
)
def _teams_webhook(rng):
    secret = t.rand(rng, t.HEX, 32)
    tenant = t.rand(rng, "abcdefghijklmnopqrstuvwxyz", 7)
    path = f"{t.rand_uuid(rng)}@{t.rand_uuid(rng)}/IncomingWebhook/{secret}/{t.rand_uuid(rng)}"
    return Secret(f"https://{tenant}.webhook.office.com/webhookb2/{path}", (secret,))


@family(
    "discord_webhook",
    COMPOUND,
    "DISCORD_WEBHOOK_URL",
    r"https://(?:discord|discordapp)\.com/api/webhooks/\d{17,19}/[\w-]{68}",
    "https://discord.com/api/webhooks/<id>/ + 68 base64url",
)
def _discord_webhook(rng):
    secret = t.rand(rng, t.B64URL, 68)
    host = rng.choice(["discord.com", "discordapp.com"])
    return Secret(f"https://{host}/api/webhooks/{rng.randint(10**17, 10**19 - 1)}/{secret}", (secret,))


_DSN_FORMS = (
    "postgresql://{user}:{pw}@db.internal:5432/app",
    "mysql://{user}:{pw}@mysql.example.com:3306/shop?ssl-mode=REQUIRED",
    "mongodb+srv://{user}:{pw}@cluster0.ab1cd.mongodb.net/prod?retryWrites=true",
    "redis://:{pw}@cache.internal:6379/0",
    "amqps://{user}:{pw}@rabbit.example.com:5671/vhost",
    "jdbc:postgresql://db.example.com:5432/app?user={user}&password={pw}",
    "Server=tcp:sql-prod.database.windows.net,1433;Database=app;User ID={user};Password={pw};Encrypt=true;",
)


@family(
    "connection_string_password",
    COMPOUND,
    "DATABASE_URL",
    r"[a-z+]+://[\w.-]*:[\w.~!*-]+@\S+|jdbc:\S+&password=[\w.~!*-]+|Server=[^;]+;(?:[\w ]+=[^;]+;)+",
    "a password inside a database URL, JDBC URL or ADO.NET string",
)
def _dsn(rng):
    pw = t.password(rng, t.URL_SAFE_SYMBOLS)
    return Secret(rng.choice(_DSN_FORMS).format(user=rng.choice(["app", "svc_ci", "admin"]), pw=pw), (pw,))


@family(
    "azure_storage_connection",
    COMPOUND,
    "AZURE_STORAGE_CONNECTION_STRING",
    r"DefaultEndpointsProtocol=https;AccountName=\w+;AccountKey=[A-Za-z0-9+/]{86}==;EndpointSuffix=core\.windows\.net",
    "AccountKey= 88 base64 (64 bytes) inside the connection string",
)
def _azure_storage(rng):
    key = t.b64(t.rand_bytes(rng, 64))
    name = "st" + t.rand(rng, "abcdefghijklmnopqrstuvwxyz0123456789", 10)
    return Secret(
        f"DefaultEndpointsProtocol=https;AccountName={name};AccountKey={key};EndpointSuffix=core.windows.net",
        (key,),
    )


# -- values known only by their name --------------------------------------------------------------


@family(
    "generic_password", KEYED, "DB_PASSWORD", r"\S{14,24}", "a password with symbols (known only by its key)"
)
def _password(rng):
    value = t.password(rng)
    return Secret(value, (value,))


@family("aws_secret_access_key", KEYED, "AWS_SECRET_ACCESS_KEY", r"[A-Za-z0-9+/]{40}", "40 base64 characters")
def _aws_secret(rng):
    value = t.rand(rng, t.B64, 40)
    return Secret(value, (value,))


@family(
    "datadog_key", KEYED, "DD_API_KEY", r"[0-9a-f]{32}|[0-9a-f]{40}", "API key 32 hex, application key 40 hex"
)
def _datadog(rng):
    value = t.rand(rng, t.HEX, rng.choice([32, 40]))
    return Secret(value, (value,))


@family("heroku_api_key", KEYED, "HEROKU_API_KEY", r"[0-9a-f-]{36}", "a UUID")
def _heroku(rng):
    value = t.rand_uuid(rng)
    return Secret(value, (value,))


@family(
    "basic_auth_credentials",
    KEYED,
    "REGISTRY_AUTH",
    r"[A-Za-z0-9+/]+={0,2}",
    "base64 of user:password (docker config.json auth)",
)
def _basic(rng):
    value = t.b64(f"{rng.choice(['ci', 'deploy', 'robot$ci'])}:{t.password(rng)}".encode())
    return Secret(value, (value,))


@family("cloudflare_api_token", KEYED, "CLOUDFLARE_API_TOKEN", r"[\w-]{40}", "40 base64url characters")
def _cloudflare(rng):
    value = t.rand(rng, t.B64URL, 40)
    return Secret(value, (value,))


# -- private key blocks ---------------------------------------------------------------------------

_PEM_HEADERS = {  # label: (DER or binary prefix, random bytes after it, line width)
    "PRIVATE KEY": (
        bytes.fromhex("308204bd020100300d06092a864886f70d0101010500048204a7308204a30201000282010100"),
        1180,
        64,
    ),
    "RSA PRIVATE KEY": (bytes.fromhex("308204a40201000282010100"), 1180, 64),
    "EC PRIVATE KEY": (bytes.fromhex("30770201010420"), 114, 64),
    "ENCRYPTED PRIVATE KEY": (bytes.fromhex("3082051c304e06092a864886f70d01050d"), 1290, 64),
    "OPENSSH PRIVATE KEY": (b"openssh-key-v1\x00\x00\x00\x00\x04none\x00\x00\x00\x04none", 380, 70),
}


@family(
    "pem_private_key",
    BLOCK,
    "PRIVATE_KEY",
    r"-----BEGIN ([A-Z ]+)-----\n(?:[A-Za-z0-9+/=]{1,70}\n)+-----END \1-----",
    "PEM block: BEGIN line, base64 lines of 64 (OpenSSH 70), END line",
)
def _pem(rng):
    label = rng.choice(list(_PEM_HEADERS))
    prefix, size, width = _PEM_HEADERS[label]
    lines = t.wrap(t.b64(prefix + t.rand_bytes(rng, size)), width)
    return Secret(
        f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----", tuple(lines[1:])
    )


@family(
    "pgp_private_key",
    BLOCK,
    "GPG_PRIVATE_KEY",
    r"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n(?:[A-Za-z0-9+/=]{1,64}\n)+=[A-Za-z0-9+/]{4}\n-----END PGP PRIVATE KEY BLOCK-----",
    "OpenPGP armor: header, blank line, base64 lines, =CRC24, footer",
)
def _pgp(rng):
    packet = bytes([0x95, 0x03, 0x98, 0x04]) + t.rand_bytes(rng, 4 + 916)
    lines = t.wrap(t.b64(packet), 64)
    checksum = "=" + t.b64(t.crc24(packet).to_bytes(3, "big"))
    armored = "\n".join(
        ["-----BEGIN PGP PRIVATE KEY BLOCK-----", "", *lines, checksum, "-----END PGP PRIVATE KEY BLOCK-----"]
    )
    return Secret(armored, tuple(lines[1:]))


# -- prefix + random body --------------------------------------------------------------------------

SIMPLE = [
    simple("gitlab_pat", "GITLAB_TOKEN", ["glpat-"], t.B64URL, 20, "glpat- + 20 base64url"),
    simple("gitlab_deploy_token", "GITLAB_DEPLOY_TOKEN", ["gldt-"], t.B64URL, 20, "gldt- + 20"),
    simple("gitlab_runner_token", "CI_RUNNER_TOKEN", ["glrt-"], t.B64URL, 20, "glrt- + 20"),
    simple("gitlab_trigger_token", "GITLAB_TRIGGER_TOKEN", ["glptt-"], t.HEX, 40, "glptt- + 40 hex"),
    simple("gitlab_scim_oauth_token", "GITLAB_SCIM_TOKEN", ["glsoat-"], t.B64URL, 20, "glsoat- + 20"),
    simple(
        "gitlab_other_tokens",
        "GITLAB_TOKEN",
        ["glcbt-", "glimt-", "glffct-", "glagent-"],
        t.B64URL,
        (20, 50),
        "glcbt-/glimt-/glffct-/glagent- + 20-50",
    ),
    simple("gitlab_oauth_secret", "GITLAB_OAUTH_SECRET", ["gloas-"], t.HEX, 64, "gloas- + 64 hex"),
    simple(
        "vault_service_token", "VAULT_TOKEN", ["hvs."], t.ALNUM, (24, 95), "hvs. + 24 base62 (or CAES… 90+)"
    ),
    simple("huggingface_token", "HF_TOKEN", ["hf_"], string.ascii_letters, 34, "hf_ + 34 letters"),
    simple(
        "huggingface_org_token",
        "HF_ORG_TOKEN",
        ["api_org_"],
        string.ascii_letters,
        34,
        "api_org_ + 34 letters",
    ),
    simple(
        "digitalocean_token",
        "DIGITALOCEAN_TOKEN",
        ["dop_v1_", "doo_v1_", "dor_v1_"],
        t.HEX,
        64,
        "dop_v1_/doo_v1_/dor_v1_ + 64 hex",
    ),
    simple(
        "shopify_access_token",
        "SHOPIFY_ACCESS_TOKEN",
        ["shpat_", "shpca_", "shppa_"],
        t.HEX,
        32,
        "shpat_/shpca_/shppa_ + 32 hex",
    ),
    simple("shopify_shared_secret", "SHOPIFY_API_SECRET", ["shpss_"], t.HEX, 32, "shpss_ + 32 hex"),
    simple("sentry_user_token", "SENTRY_TOKEN", ["sntryu_"], t.HEX, 64, "sntryu_ + 64 hex"),
    simple("databricks_token", "DATABRICKS_TOKEN", ["dapi"], t.HEX, 32, "dapi + 32 hex"),
    simple(
        "stripe_secret_key", "STRIPE_SECRET_KEY", ["sk_live_"], t.ALNUM, (24, 99), "sk_live_ + 24-99 base62"
    ),
    simple(
        "stripe_restricted_key",
        "STRIPE_RESTRICTED_KEY",
        ["rk_live_", "rk_prod_"],
        t.ALNUM,
        (24, 99),
        "rk_live_/rk_prod_ + 24-99",
    ),
    simple("stripe_webhook_secret", "STRIPE_WEBHOOK_SECRET", ["whsec_"], t.ALNUM, 32, "whsec_ + 32 base62"),
    simple("google_api_key", "GOOGLE_API_KEY", ["AIza"], t.B64URL, 35, "AIza + 35 base64url"),
    simple("google_oauth_client_secret", "GOOGLE_CLIENT_SECRET", ["GOCSPX-"], t.B64URL, 28, "GOCSPX- + 28"),
    simple("twilio_api_key", "TWILIO_API_KEY", ["SK"], t.HEX, 32, "SK + 32 hex"),
    simple("mailgun_api_key", "MAILGUN_API_KEY", ["key-"], t.HEX, 32, "key- + 32 hex"),
    simple("linear_api_key", "LINEAR_API_KEY", ["lin_api_"], t.ALNUM, 40, "lin_api_ + 40 alnum"),
    simple(
        "doppler_token",
        "DOPPLER_TOKEN",
        ["dp.pt.", "dp.st.", "dp.sa."],
        t.ALNUM,
        43,
        "dp.pt./dp.st./dp.sa. + 43",
    ),
    simple("pulumi_access_token", "PULUMI_ACCESS_TOKEN", ["pul-"], t.HEX, 40, "pul- + 40 hex"),
    simple("new_relic_user_key", "NEW_RELIC_API_KEY", ["NRAK-"], t.UPPER_ALNUM, 27, "NRAK- + 27 upper alnum"),
    simple("square_access_token", "SQUARE_ACCESS_TOKEN", ["EAAA"], t.B64URL, 60, "EAAA + 60 base64url"),
    simple("alibaba_access_key_id", "ALIBABA_ACCESS_KEY_ID", ["LTAI"], t.ALNUM, 20, "LTAI + 20 alnum"),
]
