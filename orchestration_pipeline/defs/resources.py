"""Dagster resources. Values arrive through ``dg.EnvVar``; nothing reads the environment at import."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import PrivateAttr

from orchestration_pipeline.errors import DatabaseUnavailable
from orchestration_pipeline.lib.db import redact_dsn
from orchestration_pipeline.lib.index.location import VectorIndexLocation
from orchestration_pipeline.lib.index.outbox import RetryPolicy
from orchestration_pipeline.lib.index.runtime import IndexRuntime
from orchestration_pipeline.lib.index.sync import SyncSettings
from orchestration_pipeline.lib.projection.checks import (
    DRIFT_REPORT_MAX_AGE_HOURS,
    UNPROJECTED_MAX_AGE_MINUTES,
)


class _PooledDatabase(dg.ConfigurableResource):
    dsn: str
    pool_min_size: int = 1
    pool_max_size: int = 4
    connect_timeout_s: float = 10.0

    _pool: ConnectionPool | None = PrivateAttr(default=None)

    def _configure(self, conn: psycopg.Connection) -> None:
        """Hook for per-connection settings."""

    def _get_pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = ConnectionPool(
                self.dsn,
                min_size=self.pool_min_size,
                max_size=self.pool_max_size,
                configure=self._configure,
                open=False,
                name=type(self).__name__,
            )
            self._pool.open(wait=False)
        return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """Borrow a pooled connection; a refused connection becomes an error naming the fix."""
        try:
            with self._get_pool().connection(timeout=self.connect_timeout_s) as conn:
                yield conn
        except PoolTimeout:
            raise DatabaseUnavailable(
                f"no connection to {redact_dsn(self.dsn)} within {self.connect_timeout_s:.0f}s — is the server "
                "running? ('orchestration-pipeline up' starts the embedded one)"
            ) from None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class OrchestrationDatabase(_PooledDatabase):
    """The orchestration DB (source of truth for events), as a pool of psycopg 3 connections."""


class TasksDatabase(_PooledDatabase):
    """The authoritative Tasks DB. Read-only unless ``read_only`` is turned off for decision effects."""

    read_only: bool = True

    def _configure(self, conn: psycopg.Connection) -> None:
        if self.read_only:
            conn.execute("SET default_transaction_read_only = on")
            conn.commit()


class PipelineHome(dg.ConfigurableResource):
    """Paths under ORCH_HOME (landing dir, archives, ...)."""

    orch_home: str

    @property
    def landing_dir(self) -> Path:
        return Path(self.orch_home) / "landing"


class IngestionSettings(dg.ConfigurableResource):
    """Thresholds of the raw_events checks; override in the launchpad or Definitions."""

    coverage_grace_minutes: int = 15
    coverage_lookback_days: int = 7
    max_sessions_with_gaps: int = 2
    batch_rows: int = 10_000
    # no_emitter_drops: a drop notice from a producer's emitter this recent fails the check
    emitter_drops_lookback_hours: float = 24.0
    # ingest_kpis_within_targets: the latest kpi_runs runs against the ingestion KPI targets (ms)
    kpi_runs: int = 1
    kpi_parse_p95_ms: float = 3_000.0
    kpi_parse_max_ms: float = 10_000.0  # every file must take less
    kpi_write_p95_ms: float = 200.0
    # quarantine_backlog: a line pending (not replayed, not discarded) longer than this warns
    quarantine_max_age_hours: float = 24.0


class VectorIndexResource(dg.ConfigurableResource):
    """Where the vector index lives: qdrant-edge under ORCH_HOME/qdrant, or a Qdrant server."""

    orch_home: str
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    embedder: str | None = None  # minilm | hashing; None: MiniLM when installed
    quantization: bool = True

    def location(self) -> VectorIndexLocation:
        return VectorIndexLocation.from_settings(
            self.qdrant_url, self.qdrant_api_key, str(Path(self.orch_home) / "qdrant")
        )

    def runtime(self) -> IndexRuntime:
        return IndexRuntime(self.location(), self.embedder, self.quantization)


class IndexSettings(dg.ConfigurableResource):
    """Knobs of the index sync, its reconciliation and their checks."""

    batch_size: int = 100
    max_attempts: int = 6
    base_delay_s: float = 2.0
    outbox_retention_days: float = 7.0  # done outbox rows older than this are pruned
    # outbox_freshness: share of the window's items searchable within within_s of their commit
    freshness_window_hours: float = 24.0
    freshness_within_s: float = 30.0
    freshness_min_share: float = 0.95
    # search_slo: a live probe of whole searches (embedding included) and recall against exact search
    slo_probes: int = 20
    slo_p95_ms: float = 150.0
    slo_min_recall: float = 0.98
    sync_sensor_min_pending: int = 1

    def sync_settings(self) -> SyncSettings:
        retry = RetryPolicy(max_attempts=self.max_attempts, base_delay_s=self.base_delay_s)
        return SyncSettings(batch_size=self.batch_size, retry=retry)


class ProjectionSettings(dg.ConfigurableResource):
    """Knobs of the task projector, the reconciliation and their checks and sensor."""

    batch_events: int = 50_000
    grace_minutes: int = 15
    repair_max_rows: int = 10_000
    min_tasks_ratio: float = 0.5
    sync_latency_p95_warn_ms: float = 300_000.0
    lag_threshold_events: int = 1_000
    # projection_caught_up: a task event ingested longer ago than this and still unprojected fails it
    unprojected_max_age_minutes: float = UNPROJECTED_MAX_AGE_MINUTES
    # drift_report_fresh: the newest drift report may be this old (nightly, plus slack)
    drift_report_max_age_hours: float = DRIFT_REPORT_MAX_AGE_HOURS
