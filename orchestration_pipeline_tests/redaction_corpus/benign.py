"""Benign texts and payloads: things that look like secrets (or talk about them) and are not.

Redaction must leave every one of them as it is. Random ids and digests come from the generator
passed in; the rest are fixed examples of what event payloads hold.
"""

from __future__ import annotations

import base64
import hashlib
import random

from orchestration_pipeline_tests.redaction_corpus import tokens as t

MAVEN = [
    "io.jsonwebtoken:jjwt-jackson:0.11.2",
    "io.jsonwebtoken:jjwt-jackson-0.11.2",
    "io.jsonwebtoken:jjwt-api:0.12.6",
    "org.springframework.security:spring-security-oauth2-jose:6.2.1",
    "com.auth0:java-jwt:4.4.0",
    "org.bouncycastle:bcpkix-jdk18on:1.78.1",
    "com.google.api-client:google-api-client:2.4.0",
    "software.amazon.awssdk:secretsmanager:2.25.6",
    "com.azure:azure-security-keyvault-secrets:4.8.0",
    "org.apache.httpcomponents.client5:httpclient5:5.3.1",
    "com.nimbusds:nimbus-jose-jwt:9.37.3",
    "io.vault:vault-java-driver:5.1.0",
]
PATHS = [
    "/home/ci/.ssh/known_hosts",
    "/etc/ssl/private/",
    "~/.aws/credentials",
    r"C:\Users\build\AppData\Roaming\npm\node_modules",
    "src/auth/token_service.py",
    "orchestration_pipeline/lib/redaction/__init__.py",
    "/var/run/secrets/kubernetes.io/serviceaccount/",
    "config/secrets.example.yaml",
    "tests/fixtures/password_reset.json",
    "/usr/lib/python3.11/site-packages/keyring/backends/SecretService.py",
    "docs/runbooks/rotate-api-keys.md",
    "build/libs/auth-server-2.3.1-all.jar",
]
VERSIONS = [
    "v1.13.27",
    "1.0.0-rc.1+build.5",
    "dagster==1.13.27",
    "psycopg[binary]>=3.2,<3.4",
    "node v20.11.1, npm 10.2.4",
    "Python 3.11.9 (main, Apr  2 2024, 08:25:04)",
    "go1.22.2 linux/amd64",
    "openssl 3.0.13 30 Jan 2024",
    "kernel 6.8.0-31-generic",
    "release-2024.05.17",
]
SENTENCES = [
    "password must be 8 characters",
    "Password must contain at least one digit and one symbol",
    "the API token expired; run `login` again",
    "Reset your password with the link we sent you",
    "secret rotation completed for 3 services",
    "token refresh failed after 3 attempts",
    "no password was provided",
    "invalid API key format",
    "using credentials from the environment",
    "authentication failed for user deploy",
    "private key permissions are too open (0644)",
    "the secret manager returned 404 for the key",
    "rotate keys every 90 days",
    "password reset requested for jane@example.com",
    "token usage: 1534 prompt + 210 completion",
    "set the password in the vault, not in the repository",
    "missing Authorization header",
    "the bearer token is sent in the Authorization header",
    "generated a new SSH key pair for the runner",
    "keyboard layout set to en-US",
    "the monkey patch was removed",
    "author: Jane Doe <jane@example.com>",
]
PLACEHOLDERS = [
    "${API_KEY}",
    "API_KEY=${API_KEY}",
    "export TOKEN=$TOKEN",
    "password: <password>",
    "password=changeme",
    "password: ***",
    "token=[REDACTED]",
    "Authorization: Bearer ${TOKEN}",
    "secret: {{ secrets.DEPLOY_KEY }}",
    "password: %(db_password)s",
    "api_key: <your-api-key>",
    "DB_PASSWORD=${DB_PASSWORD:-}",
    "password = os.environ['DB_PASSWORD']",
    "curl -H 'Authorization: Bearer $GITHUB_TOKEN' https://api.github.com",
    "password: ${link}",
    '"password": "[REDACTED]"',
    "token: $(CI_JOB_TOKEN)",
    "client_secret: {client_secret}",
]
HOSTS = [
    "db.internal:5432",
    "redis://cache.internal:6379/0",
    "https://example.com/api/v1/tokens?page=2",
    "postgresql://db.internal:5432/app",
    "listening on 0.0.0.0:8080",
    "connected to 10.0.3.17:9092",
    "https://login.example.com/oauth2/authorize?client_id=web&response_type=code",
    "ssh git@github.com",
    "amqp://rabbit.example.com:5672/",
    "[2001:db8::1]:443",
]
TEMPLATES = [
    "{{ user.name }}",
    "{% if token_expired %}renew{% endif %}",
    "%PATH%;C:\\tools",
    "Hello ${user}, your build #{build_number} finished",
    "{{ .Values.image.tag }}",
    "<%= ENV['RAILS_ENV'] %>",
    "${{ github.sha }}",
    "{password_hint}",
    "$(date +%Y-%m-%d)",
    "#{ENV.fetch('PORT', 3000)}",
]
IDENTIFIERS = [
    "token_count=1234",
    "tokens_used: 4096",
    "max_tokens=256",
    "TokenBucketRateLimiter refilled",
    "AuthorizationPolicy updated",
    "arn:aws:iam::123456789012:role/deploy",
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf",
    "api-server-7d9f8b6c5-x2k4z",
    "2024-05-17T08:25:04.123456+00:00",
    "jane.doe@example.com",
    "192.168.10.24",
    "task_id=T-123 session_id=s-1",
    "color #1f6feb",
    "region=eu-west-1 zone=eu-west-1a",
    "exit code 137 (OOMKilled)",
    "HTTP/1.1 401 Unauthorized",
    "passed: 412, failed: 0",
    "keyring==25.2.1",
    "pkg:npm/jsonwebtoken@9.0.2",
    "secretsmanager.eu-west-1.amazonaws.com",
]
BASE64_TEXTS = [
    "Hello, world!",
    "the quick brown fox jumps over the lazy dog",
    '{"level":"info","msg":"started"}',
    "build 1842 finished on runner ci-7",
    "user=jane; role=viewer",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit",
    "<html><body>ok</body></html>",
    "2024-05-17 deploy of api v2.3.1",
    "#!/bin/sh\necho done\n",
    "no secrets in here, just text",
]


def _generated(rng: random.Random) -> list[str]:
    texts = []
    for i in range(12):
        texts.append(
            rng.choice(["task {} finished in {} ms", "request {} took {} ms"]).format(t.rand_uuid(rng), i)
        )
    for _ in range(8):
        data = t.rand_bytes(rng, 64)
        texts.append(f"sha1 {hashlib.sha1(data).hexdigest()}")
        texts.append(f"{hashlib.sha256(data).hexdigest()}  dist/app-{rng.randint(1, 9)}.tar.gz")
    for _ in range(5):
        sha = hashlib.sha1(t.rand_bytes(rng, 20)).hexdigest()
        texts.append(f"commit {sha}")
        texts.append(f"HEAD is now at {sha[:7]} fix the parser")
    for _ in range(8):
        digest = hashlib.sha256(t.rand_bytes(rng, 32)).hexdigest()
        image = rng.choice(
            ["python", "ghcr.io/acme/api:1.4.2", "postgres:15-alpine", "docker.io/library/redis"]
        )
        texts.append(f"{image}@sha256:{digest}")
    for text in BASE64_TEXTS:
        texts.append(f"payload {base64.b64encode(text.encode()).decode()}")
    return texts


def benign_texts(rng: random.Random) -> list[str]:
    return [
        *_generated(rng),
        *MAVEN,
        *PATHS,
        *VERSIONS,
        *SENTENCES,
        *PLACEHOLDERS,
        *HOSTS,
        *TEMPLATES,
        *IDENTIFIERS,
    ]


def benign_payloads(rng: random.Random) -> list[dict]:
    """JSON payloads whose keys or values look secret-ish and hold nothing secret."""
    sha = hashlib.sha1(t.rand_bytes(rng, 20)).hexdigest()
    return [
        {"password": "${DB_PASSWORD}"},
        {"api_key": "<api-key>"},
        {"secret": "[REDACTED]"},
        {"token": "***"},
        {"password": "changeme"},
        {"token_count": 1234, "tokens_used": 4096},
        {"has_password": True, "password_set": False},
        {"password_policy": "at least 12 characters"},
        {"commit": sha, "author": "jane"},
        {"image": f"python@sha256:{hashlib.sha256(sha.encode()).hexdigest()}"},
        {"dependency": "io.jsonwebtoken:jjwt-jackson:0.11.2"},
        {"env": [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "REGION", "value": "eu-west-1"}]},
        {"argv": ["pytest", "-k", "test_token_refresh", "--maxfail=1"]},
        {"headers": {"Accept": "application/json", "User-Agent": "curl/8.5.0"}},
        {"request_id": t.rand_uuid(rng), "status": 200},
    ]
