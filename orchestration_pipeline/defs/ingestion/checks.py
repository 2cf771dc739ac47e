"""Asset checks on ``raw_events``: thin calls into lib.event_checks."""

from datetime import timedelta

import dagster as dg

from orchestration_pipeline.defs.checks_support import pipeline_check, verdict_of
from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.resources import IngestionSettings, OrchestrationDatabase
from orchestration_pipeline.lib.ingestion import checks as event_checks


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
