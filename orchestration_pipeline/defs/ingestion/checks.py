"""Asset checks on ``raw_events``: thin calls into lib.event_checks."""

from datetime import timedelta

import dagster as dg

from orchestration_pipeline.defs.checks_support import pipeline_check, verdict_of
from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.resources import IngestionSettings, OrchestrationDatabase
from orchestration_pipeline.lib.ingestion import checks as event_checks
from orchestration_pipeline.lib.ingestion import health


@pipeline_check(raw_events, "ingestion.md", blocking=True)
def events_accounted_for(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """Every file balances: lines = accepted + quarantined + duplicates + collapsed."""
    return verdict_of(orchestration_db, event_checks.events_accounted_for)


@pipeline_check(raw_events, "ingestion.md")
def core_event_coverage(
    orchestration_db: OrchestrationDatabase, ingestion_settings: IngestionSettings
) -> dg.AssetCheckResult:
    """No session outside the grace window has a task/command start without its end."""
    return verdict_of(
        orchestration_db,
        event_checks.core_event_coverage,
        grace=timedelta(minutes=ingestion_settings.coverage_grace_minutes),
        lookback=timedelta(days=ingestion_settings.coverage_lookback_days),
        max_sessions_with_gaps=ingestion_settings.max_sessions_with_gaps,
    )


@pipeline_check(raw_events, "ingestion.md")
def policy_violations_complete(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """No policy_violation event has a null file, policy or rule."""
    return verdict_of(orchestration_db, event_checks.policy_violations_complete)


@pipeline_check(raw_events, "ingestion.md", severity="WARN")
def provider_metric_present(
    orchestration_db: OrchestrationDatabase, ingestion_settings: IngestionSettings
) -> dg.AssetCheckResult:
    """Sessions that selected a provider have provider_type and provider_cache_hit metrics."""
    return verdict_of(
        orchestration_db,
        event_checks.provider_metric_present,
        lookback=timedelta(days=ingestion_settings.coverage_lookback_days),
    )


@pipeline_check(raw_events, "ingestion.md")
def no_emitter_drops(
    orchestration_db: OrchestrationDatabase, ingestion_settings: IngestionSettings
) -> dg.AssetCheckResult:
    """No producer reported events dropped by its emitter (the SDK's drop notice) in the lookback window."""
    return verdict_of(
        orchestration_db,
        event_checks.no_emitter_drops,
        lookback=timedelta(hours=ingestion_settings.emitter_drops_lookback_hours),
    )


@pipeline_check(raw_events, "ingestion.md", severity="WARN")
def ingest_kpis_within_targets(
    orchestration_db: OrchestrationDatabase, ingestion_settings: IngestionSettings
) -> dg.AssetCheckResult:
    """The latest ingestion run met the KPI targets (ParseDuration p95 and per-file max,
    DatabaseWriteLatency p95); reports the SkippedDuplicate ratio with re-dropped files counted."""
    return verdict_of(
        orchestration_db,
        health.ingest_kpis_within_targets,
        targets=health.KpiTargets(
            parse_p95_ms=ingestion_settings.kpi_parse_p95_ms,
            parse_max_ms=ingestion_settings.kpi_parse_max_ms,
            write_p95_ms=ingestion_settings.kpi_write_p95_ms,
        ),
        runs=ingestion_settings.kpi_runs,
    )


@pipeline_check(raw_events, "ingestion.md", severity="WARN")
def quarantine_backlog(
    orchestration_db: OrchestrationDatabase, ingestion_settings: IngestionSettings
) -> dg.AssetCheckResult:
    """No quarantined line has been pending (neither replayed nor discarded) longer than the maximum age."""
    return verdict_of(
        orchestration_db,
        health.quarantine_backlog,
        max_age=timedelta(hours=ingestion_settings.quarantine_max_age_hours),
    )
