"""The fixed replay dataset of the search benchmark: decisions and the questions asked about them.

Everything here is a pure function of (size, seed): the same arguments give the same decisions
and queries on every machine, so runs compare, and document embeddings can be cached by a hash
of the texts (:func:`texts_digest`).

A decision's rationale is composed from one of many templates (retries, skipped checks,
approvals, rollbacks, escalations, cost and latency trade-offs, security denials, data-quality
holds, ...) filled from slot vocabularies (services, tools, error codes, numbers, file paths,
teams), the way an orchestrator or an agent explains what it did. Each category owns a few
policies, so a filter on a policy also narrows the topic, as it does in real logs. Statuses are
skewed (executed is common, rolled_back rare), orgs uniform, created_at spread over 90 days.

Queries are questions phrased unlike the templates ("why did we roll back the payments deploy"):
half without a filter, a quarter with a broad filter (~10% of the points) and a quarter with a
narrow one (~1%); :func:`selectivity` measures what each filter actually keeps.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

DAY = 86_400.0
SPAN_DAYS = 90
# A fixed end, not "now": the same seed gives the same timestamps on every run.
END_EPOCH = datetime(2025, 6, 1, tzinfo=UTC).timestamp()
START_EPOCH = END_EPOCH - SPAN_DAYS * DAY

ORGS = tuple(f"org-{i:02d}" for i in range(20))
# (status, weight): a rarer status is a broad filter of about 10%, approved about 20%.
STATUSES = (
    ("executed", 0.30),
    ("approved", 0.20),
    ("rejected", 0.15),
    ("pending", 0.15),
    ("rolled_back", 0.10),
    ("escalated", 0.10),
)

# Slot vocabularies, kept compact: one value per line would make this file twice as long.
# fmt: off
SERVICES = (
    "payments", "checkout", "billing", "ledger", "auth", "identity", "search", "recommendations",
    "inventory", "shipping", "notifications", "email-gateway", "sms-gateway", "user-profile", "catalog",
    "pricing", "fraud-detection", "analytics-ingest", "reporting", "feature-store", "model-serving",
    "image-resizer", "cdn-edge", "api-gateway", "graphql-router", "session-store", "rate-limiter",
    "audit-log", "webhooks", "scheduler", "etl-nightly", "warehouse-loader", "kafka-connect",
    "vector-index", "chat-backend", "mobile-bff", "admin-console", "tax-engine", "refunds", "subscriptions",
)
ENVS = (
    "production", "staging", "canary", "eu-west-1", "us-east-1", "ap-south-1", "preview",
)
TEAMS = (
    "platform", "sre", "payments-core", "growth", "data-eng", "ml-infra", "security", "mobile",
    "web-frontend", "identity", "finops", "compliance", "search-relevance", "developer-experience",
)
TOOLS = (
    "terraform", "helm", "kubectl", "argo-rollouts", "pytest", "ruff", "mypy", "eslint", "cargo test",
    "go vet", "trivy", "semgrep", "dbt", "great_expectations", "alembic", "flyway", "docker buildx",
    "bazel", "gradle", "npm audit", "snyk", "checkov", "spark-submit", "airflow", "pip-compile",
)
STEPS = (
    "deploy", "build", "integration tests", "unit tests", "lint", "migration", "canary analysis",
    "image push", "schema check", "backfill", "smoke test", "load test", "release tagging",
    "artifact signing", "dependency resolution", "cache warmup", "index rebuild",
)
ERRORS = (
    "HTTP 503", "HTTP 502", "HTTP 429", "HTTP 500", "HTTP 504 gateway timeout", "ECONNRESET", "ETIMEDOUT",
    "OOMKilled", "exit code 137", "exit code 1", "DNS resolution failure", "TLS handshake timeout",
    "deadlock detected", "lock wait timeout", "disk quota exceeded", "ImagePullBackOff", "CrashLoopBackOff",
    "connection refused", "SIGSEGV", "checksum mismatch", "403 Forbidden", "401 Unauthorized",
    "too many open files", "read-only file system",
)
UPSTREAMS = (
    "the container registry", "the package mirror", "the artifact store", "the secrets manager",
    "the primary database", "the read replica", "the object store", "the feature flag service",
    "the identity provider", "the LLM provider", "the payment processor", "the message broker",
    "the search cluster", "the metrics backend", "the git host",
)
PATHS = (
    "gen/proto/{svc}/v1/*.pb.go", "src/{svc}/generated/api_pb2.py", "vendor/{svc}/",
    "migrations/{n}_add_index.sql", "charts/{svc}/values-prod.yaml", "infra/terraform/{svc}/main.tf",
    "docs/{svc}/CHANGELOG.md", "web/{svc}/dist/bundle.min.js", "tests/fixtures/{svc}/snapshot_{n}.json",
    "deploy/{svc}/kustomization.yaml", "notebooks/{svc}_exploration.ipynb", "schemas/{svc}/events.avsc",
    "third_party/{svc}/LICENSE",
)
DATASETS = (
    "orders", "events_raw", "user_sessions", "invoices", "clickstream", "payouts", "shipments",
    "ad_impressions", "support_tickets", "ledger_entries", "inventory_snapshots", "model_features",
)
CHECKS = (
    "null rate on customer_id", "row count drift", "duplicate primary keys", "late-arriving partitions",
    "schema drift on the amount column", "negative totals", "freshness SLA", "referential integrity",
    "currency code outside ISO 4217", "timestamp skew", "distribution shift in the label column",
)
MODELS = (
    "gpt-4o", "claude-sonnet", "llama-70b", "mistral-large", "a distilled 8B model", "the in-house ranker",
)
SECRETS = (
    "an AWS access key", "a GitHub token", "a database password", "a Stripe secret key",
    "a private SSH key", "a Slack webhook URL", "a JWT signing secret", "a GCP service account key",
)
REVIEWERS = (
    "the on-call SRE", "the security reviewer", "the service owner", "the change advisory board",
    "the data steward", "the team lead", "the release manager", "the finance approver",
)
# fmt: on


@dataclass(frozen=True)
class Category:
    """A kind of decision: its templates, its policies, and the questions asked about it."""

    name: str
    templates: tuple[str, ...]
    questions: tuple[str, ...]


# Slots: {svc} {svc2} {env} {team} {tool} {step} {err} {up} {path} {n} {k} {pct} {sec} {mins} {cost}
# {ds} {check} {model} {secret} {rev} {ver} {pr} {ms} {ms2}
CATEGORIES: tuple[Category, ...] = (
    Category(
        "retry",
        (
            "Retried the {step} step for {svc} because {up} returned {err} {k} times; backoff {sec}s keeps us under the rate limit.",
            "{step} of {svc} in {env} failed with {err}; retrying with exponential backoff (attempt {k} of {n}) since the failure looks transient.",
            "Re-ran {tool} on {svc} after {err} from {up}; the previous {k} attempts failed within {sec}s, which matches the known flake.",
            "Scheduled a retry of the {svc} {step} in {mins} minutes: {up} is degraded ({err}) and the status page promises recovery.",
            "Retry budget for {svc} is {n} attempts; attempt {k} hit {err}, so waiting {sec}s with jitter before the next one.",
            "Did not give up on the {step}: {err} from {up} is retryable per the runbook, so retried {k} times with {sec}s spacing.",
        ),
        (
            "why did the {step} for {svc} get retried",
            "what made the agent retry after {up} kept failing",
            "retries caused by transient {err} errors",
            "how many times did we retry the {svc} {step} and why",
        ),
    ),
    Category(
        "skip",
        (
            "Skipped {tool} on generated files under {path}; they are regenerated on every build and never edited by hand.",
            "Skipping the {step} for {svc}: only {path} changed, which no test covers and which ships unchanged.",
            "Bypassed {tool} for this {svc} change because the diff touches documentation only ({path}).",
            "Did not run {step} on {svc} in {env}; the same commit passed it {mins} minutes ago and the cache key matches.",
            "Excluded {path} from {tool}: vendored third-party code, {n} findings there are upstream's to fix.",
            "Left {step} out of the {svc} pipeline for {team}: it takes {mins} minutes and the change is a config flip behind a flag.",
        ),
        (
            "why was linting skipped for generated code",
            "which checks did we bypass on {svc} and for what reason",
            "did the agent skip {tool} on vendored files",
            "reasons for not running tests on documentation-only changes",
        ),
    ),
    Category(
        "approval",
        (
            "Approved the {svc} release {ver} to {env}: all {n} checks green, canary error rate {pct}% below the {k}% budget.",
            "{rev} approved the schema migration for {svc} after confirming it is backward compatible and runs in {mins} minutes.",
            "Auto-approved PR #{pr} on {svc}: change is within the low-risk policy (under {n} lines, tests added, owner {team}).",
            "Granted {team} temporary write access to {svc} in {env} for {mins} minutes to finish the {step}; access expires automatically.",
            "Approved scaling {svc} from {k} to {n} replicas in {env}; projected load for the campaign needs the headroom.",
            "Signed off on the {svc} {step}: {rev} reviewed the plan, blast radius is one region ({env}).",
        ),
        (
            "who approved the {svc} release and on what grounds",
            "which migrations were signed off as backward compatible",
            "auto approvals of small pull requests",
            "why was {team} given temporary access",
        ),
    ),
    Category(
        "rollback",
        (
            "Rolled back {svc} {ver} in {env}: p99 latency rose from {ms}ms to {ms2}ms within {mins} minutes of the deploy.",
            "Reverted the {svc} deploy after error rate hit {pct}% ({err}); previous version restored, incident opened for {team}.",
            "Rollback of {svc} triggered automatically by {tool}: canary analysis failed {k} of {n} health checks.",
            "Undid the config change on {svc}: {up} started returning {err} for {pct}% of requests right after it landed.",
            "Rolled the {svc} migration back; it held a lock for {sec}s and requests queued behind it in {env}.",
            "Restored {svc} to the last good build because memory grew {pct}% per hour and pods were {err}.",
        ),
        (
            "why did we roll back the {svc} deploy",
            "rollbacks caused by latency regressions",
            "which releases were reverted because of error spikes",
            "what triggered the automatic rollback in {env}",
        ),
    ),
    Category(
        "escalation",
        (
            "Escalated to {rev}: {svc} in {env} has been failing with {err} for {mins} minutes and the runbook is exhausted.",
            "Paged {team} on-call; {svc} error budget burned {pct}% in the last hour, beyond what automation may handle.",
            "Handed the {svc} incident to a human: the fix needs a change to {path}, which agents may not modify.",
            "Escalating the {step} for {svc}: {k} automated remediations failed and {up} support ticket is open.",
            "Raised severity to SEV{k} for {svc}: customer-facing checkout errors at {pct}% across {env}.",
            "Asked {rev} to decide: the agent's confidence ({pct}%) is below the threshold for an unattended {step}.",
        ),
        (
            "when did the agent hand incidents to a human",
            "who was paged about {svc} failures",
            "escalations after automated remediation failed",
            "why was the severity raised for {svc}",
        ),
    ),
    Category(
        "cost",
        (
            "Chose {model} over a larger model for {svc}: {pct}% cheaper per request and quality within {k}% on the eval set.",
            "Moved the {svc} batch job to spot instances; saves about ${cost} a month, retries cover the {pct}% preemption rate.",
            "Downsized {svc} in {env} from {n} to {k} nodes; utilisation was under {pct}% for two weeks.",
            "Kept {svc} on reserved capacity: spot would save ${cost} but the {step} cannot tolerate interruption.",
            "Cached {up} responses for {sec}s in {svc}; cuts calls by {pct}% and ${cost} a month at current traffic.",
            "Turned off verbose tracing on {svc}; ingest cost was ${cost} a month for data nobody queried in {n} days.",
        ),
        (
            "how did we cut the cloud bill for {svc}",
            "why did the agent pick a cheaper model",
            "decisions to move workloads to spot instances",
            "cost savings from caching or downsizing",
        ),
    ),
    Category(
        "latency",
        (
            "Routed {svc} reads to the replica: primary p95 was {ms}ms, replica lag under {sec}s is acceptable for this view.",
            "Raised the {svc} timeout to {ms2}ms toward {up}; its p99 is {ms}ms and shorter timeouts caused {err}.",
            "Served stale results from cache for {svc} while {up} recovers; freshness drops to {mins} minutes, latency stays under {ms}ms.",
            "Batched {svc} writes in groups of {n}; throughput up {pct}%, added latency {ms}ms, within the SLO.",
            "Traded recall for speed in {svc}: lowered the search beam to {k}, p95 from {ms2}ms to {ms}ms.",
            "Prewarmed {svc} connections in {env} before the traffic peak; cold starts were adding {ms}ms to p99.",
        ),
        (
            "why did we accept stale data to keep latency low",
            "timeout changes for calls to {up}",
            "latency versus freshness trade-offs in {svc}",
            "what was done about slow p99 in {env}",
        ),
    ),
    Category(
        "security",
        (
            "Denied the request: {svc} tried to read {secret} outside its namespace, which policy forbids.",
            "Blocked the merge of PR #{pr}: {tool} found {secret} committed in {path}.",
            "Refused to open port {n} on {svc} in {env}; public ingress needs {rev} approval and a threat model.",
            "Rejected the dependency upgrade for {svc}: {tool} reports a critical CVE with no patched release.",
            "Denied the agent shell access to {env} hosts; the task can be done through the {tool} API with read-only scope.",
            "Quarantined the {svc} image {ver}: signature verification failed ({err}) and provenance is unknown.",
        ),
        (
            "security policy denials involving secrets",
            "why was the pull request blocked by a scanner",
            "requests refused because they needed public network access",
            "which images were quarantined and why",
        ),
    ),
    Category(
        "data_quality",
        (
            "Held the {ds} load into the warehouse: {check} failed ({pct}% of {n} rows) in {tool}.",
            "Paused the {svc} backfill of {ds}: {check} after partition {k}; downstream dashboards would be wrong.",
            "Quarantined {n} rows of {ds} that failed {check}; the rest of the batch was published.",
            "Did not publish {ds} for {team}: {check} exceeded the {pct}% tolerance set by {rev}.",
            "Reprocessed {ds} from {up} because {check} showed {n} missing records since {mins} minutes past midnight.",
            "Blocked the {ds} model retrain: {check} means the training data is not representative.",
        ),
        (
            "data quality holds on warehouse loads",
            "why was the {ds} dataset not published",
            "which batches were quarantined for bad rows",
            "backfills paused by failed checks",
        ),
    ),
    Category(
        "scheduling",
        (
            "Deferred the {svc} {step} to the {k}:00 UTC maintenance window; {team} has a launch until then.",
            "Queued the {ds} job behind the {svc} backfill; both need the warehouse and running together doubles cost.",
            "Moved the {step} for {svc} ahead of {svc2}: {svc2} depends on its new schema.",
            "Postponed the {svc} deploy: change freeze in {env} for the next {n} hours.",
            "Ran the {svc} {step} in {env} first, then the rest; staging soaks for {mins} minutes before promotion.",
            "Split the {ds} backfill into {n} chunks of {k} days so each finishes within the {mins}-minute window.",
        ),
        (
            "why was the deploy postponed",
            "jobs delayed to a maintenance window",
            "ordering between {svc} and its dependencies",
            "change freeze decisions",
        ),
    ),
    Category(
        "tooling",
        (
            "Used {tool} instead of a hand-written script for {svc}: it already handles {err} and idempotent reruns.",
            "Pinned {tool} to version {ver} in the {svc} pipeline; the latest release breaks the {step}.",
            "Switched the {svc} {step} from {tool} to a native implementation; cold start fell from {sec}s to under a second.",
            "Picked {model} to draft the {svc} migration plan; a human reviews it before the {step}.",
            "Split the {svc} monorepo job into {n} shards; the {step} now takes {mins} minutes instead of {k} times that.",
            "Enabled the remote build cache for {svc}; {pct}% of {tool} actions are now cache hits.",
        ),
        (
            "why did we pin a tool version",
            "which build speedups were made for {svc}",
            "tool choices for migrations and scripts",
            "why was a language model used to draft plans",
        ),
    ),
    Category(
        "capacity",
        (
            "Scaled {svc} out to {n} pods in {env}; queue depth passed {k} thousand and consumers lagged {mins} minutes.",
            "Throttled {svc} to {n} requests per second per tenant: one org sent {pct}% of traffic and starved the rest.",
            "Shed low-priority traffic on {svc} for {mins} minutes; CPU at {pct}% and {up} was {err}.",
            "Added a read replica for {svc}; the primary was at {pct}% CPU during the nightly {step}.",
            "Raised the {svc} connection pool from {k} to {n}; requests waited {ms}ms for a connection at peak.",
            "Rebalanced {svc} partitions across {n} brokers; one held {pct}% of the messages.",
        ),
        (
            "why was traffic throttled for one tenant",
            "scaling out because of queue backlog",
            "load shedding during CPU saturation",
            "connection pool changes for {svc}",
        ),
    ),
)
# 50 policies, spread over the categories: a policy belongs to one category.
POLICIES: dict[str, tuple[str, ...]] = {}
for _i in range(50):
    _cat = CATEGORIES[_i % len(CATEGORIES)].name
    POLICIES[_cat] = (*POLICIES.get(_cat, ()), f"pol-{_cat}-{_i:02d}")


@dataclass(frozen=True)
class Decision:
    decision_id: str
    text: str
    org_id: str
    policy_id: str
    status: str
    created_at: float


@dataclass(frozen=True)
class Query:
    """A question, and the filter it is asked with: kind is "none", "broad" or "narrow"."""

    text: str
    kind: str
    org_id: str | None = None
    policy_id: str | None = None
    status: str | None = None
    created_from: float | None = None
    created_to: float | None = None


def _slots(rng: random.Random) -> dict[str, str]:
    """One random value for every slot a template may use."""
    svc, svc2 = rng.sample(SERVICES, 2)
    ms = rng.choice((40, 80, 120, 180, 250, 320, 450, 600, 900))
    return {
        "svc": svc,
        "svc2": svc2,
        "env": rng.choice(ENVS),
        "team": rng.choice(TEAMS),
        "tool": rng.choice(TOOLS),
        "step": rng.choice(STEPS),
        "err": rng.choice(ERRORS),
        "up": rng.choice(UPSTREAMS),
        "path": rng.choice(PATHS).format(svc=svc, n=rng.randint(1, 400)),
        "n": str(rng.randint(10, 64)),
        "k": str(rng.randint(2, 9)),
        "pct": str(rng.choice((0.5, 1, 2, 3, 5, 8, 12, 15, 20, 25, 35, 40, 60, 85, 92))),
        "sec": str(rng.choice((5, 10, 15, 30, 45, 60, 90, 120, 300))),
        "mins": str(rng.randint(2, 90)),
        "cost": f"{rng.randint(2, 400) * 50:,}",
        "ds": rng.choice(DATASETS),
        "check": rng.choice(CHECKS),
        "model": rng.choice(MODELS),
        "secret": rng.choice(SECRETS),
        "rev": rng.choice(REVIEWERS),
        "ver": f"v{rng.randint(1, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 20)}",
        "pr": str(rng.randint(1000, 99999)),
        "ms": str(ms),
        "ms2": str(ms * rng.choice((2, 3, 4, 5))),
    }


def _render(template: str, rng: random.Random) -> str:
    text = template.format(**_slots(rng))
    return text[0].upper() + text[1:]


def decisions(n: int, seed: int) -> list[Decision]:
    """``n`` decisions, a pure function of (n, seed); a text already drawn is drawn again (at most
    20 times), so nearly all texts are distinct, as real rationales are."""
    rng = random.Random(seed)
    statuses = [s for s, _ in STATUSES]
    weights = [w for _, w in STATUSES]
    seen: set[str] = set()
    out: list[Decision] = []
    for i in range(n):
        category = rng.choice(CATEGORIES)
        for _ in range(20):
            text = _render(rng.choice(category.templates), rng)
            if text not in seen:
                break
        seen.add(text)
        out.append(
            Decision(
                decision_id=f"dec-{seed}-{i:07d}",
                text=text,
                org_id=rng.choice(ORGS),
                policy_id=rng.choice(POLICIES[category.name]),
                status=rng.choices(statuses, weights)[0],
                created_at=round(START_EPOCH + rng.random() * SPAN_DAYS * DAY, 3),
            )
        )
    return out


def _window(rng: random.Random, days: int) -> tuple[float, float]:
    start = START_EPOCH + rng.randint(0, SPAN_DAYS - days) * DAY
    return start, start + days * DAY


def _broad(rng: random.Random, text: str) -> Query:
    """About 10% of the points: a rare status, or 9 of the 90 days."""
    if rng.random() < 0.5:
        return Query(text, "broad", status=rng.choice(("rolled_back", "escalated")))
    lo, hi = _window(rng, 9)
    return Query(text, "broad", created_from=lo, created_to=hi)


def _narrow(rng: random.Random, text: str) -> Query:
    """About 1% of the points: one org (5%) and approved (20%), or one org and 18 of the 90 days."""
    org = rng.choice(ORGS)
    if rng.random() < 0.5:
        return Query(text, "narrow", org_id=org, status="approved")
    lo, hi = _window(rng, 18)
    return Query(text, "narrow", org_id=org, created_from=lo, created_to=hi)


def queries(n: int, seed: int) -> list[Query]:
    """``n`` questions: even positions unfiltered, odd ones alternately broad and narrow."""
    rng = random.Random(seed * 7919 + 1)
    out: list[Query] = []
    for i in range(n):
        category = CATEGORIES[(i // 4) % len(CATEGORIES)]  # each category in every filter kind
        text = rng.choice(category.questions).format(**_slots(rng))
        if i % 2 == 0:
            out.append(Query(text, "none"))
        elif i % 4 == 1:
            out.append(_broad(rng, text))
        else:
            out.append(_narrow(rng, text))
    return out


@dataclass(frozen=True)
class PayloadColumns:
    """The filterable fields of every decision as arrays, for exact filtering and selectivity."""

    org_id: np.ndarray
    policy_id: np.ndarray
    status: np.ndarray
    created_at: np.ndarray

    @classmethod
    def of(cls, items: Sequence[Decision]) -> PayloadColumns:
        return cls(
            org_id=np.array([d.org_id for d in items]),
            policy_id=np.array([d.policy_id for d in items]),
            status=np.array([d.status for d in items]),
            created_at=np.array([d.created_at for d in items], dtype=np.float64),
        )

    def mask(self, q: Query) -> np.ndarray:
        """The points a query's filter keeps (all of them for an unfiltered query)."""
        keep = np.ones(len(self.created_at), dtype=bool)
        for name in ("org_id", "policy_id", "status"):
            value = getattr(q, name)
            if value is not None:
                keep &= getattr(self, name) == value
        if q.created_from is not None:
            keep &= self.created_at >= q.created_from
        if q.created_to is not None:
            keep &= self.created_at <= q.created_to
        return keep


def selectivity(columns: PayloadColumns, qs: Sequence[Query]) -> dict[str, dict[str, float]]:
    """For each filter kind, the share of points its filters keep: mean, min and max."""
    out: dict[str, dict[str, float]] = {}
    for kind in ("broad", "narrow"):
        shares = [float(columns.mask(q).mean()) for q in qs if q.kind == kind]
        if shares:
            out[kind] = {
                "mean": round(float(np.mean(shares)), 4),
                "min": round(min(shares), 4),
                "max": round(max(shares), 4),
            }
    return out


def texts_digest(texts: Sequence[str]) -> str:
    """A short hash of the texts themselves: a cache keyed by it can never serve stale vectors."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def summarize(items: Sequence[Decision]) -> dict[str, float]:
    """How diverse the texts are: distinct count and share, mean length in words."""
    distinct = len({d.text for d in items})
    return {
        "decisions": len(items),
        "distinct_texts": distinct,
        "distinct_share": round(distinct / max(len(items), 1), 4),
        "mean_words": round(float(np.mean([len(d.text.split()) for d in items])), 1),
    }
