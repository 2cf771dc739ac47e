"""Asset checks on ``raw_events``: thin calls into lib.event_checks."""

from datetime import timedelta

import dagster as dg

from orchestration_pipeline.defs.checks_support import check_metadata, to_check_result
from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.resources import IngestionSettings, OrchestrationDatabase
from orchestration_pipeline.lib.ingestion import checks as event_checks


@dg.asset_check(
    asset=raw_events,
    blocking=True,
    description="Every file balances: lines = accepted + quarantined + duplicates + collapsed.",
    metadata=check_metadata("ERROR", "docs/runbooks/ingestion.md#events_accounted_for"),
)
def events_accounted_for(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    with orchestration_db.connection() as conn:
        return to_check_result(event_checks.events_accounted_for(conn))


@dg.asset_check(
    asset=raw_events,
    description="No session outside the grace window has a task/command start without its end.",
    metadata=check_metadata("ERROR", "docs/runbooks/ingestion.md#core_event_coverage"),
)
def core_event_coverage(
    orchestration_db: OrchestrationDatabase, ingestion_settings: IngestionSettings
) -> dg.AssetCheckResult:
    with orchestration_db.connection() as conn:
        verdict = event_checks.core_event_coverage(
            conn,
            grace=timedelta(minutes=ingestion_settings.coverage_grace_minutes),
            lookback=timedelta(days=ingestion_settings.coverage_lookback_days),
            max_sessions_with_gaps=ingestion_settings.max_sessions_with_gaps,
        )
    return to_check_result(verdict)


@dg.asset_check(
    asset=raw_events,
    description="No policy_violation event has a null file, policy or rule.",
    metadata=check_metadata("ERROR", "docs/runbooks/ingestion.md#policy_violations_complete"),
)
def policy_violations_complete(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    with orchestration_db.connection() as conn:
        return to_check_result(event_checks.policy_violations_complete(conn))


@dg.asset_check(
    asset=raw_events,
    description="Sessions that selected a provider have provider_type and provider_cache_hit metrics.",
    metadata=check_metadata("WARN", "docs/runbooks/ingestion.md#provider_metric_present"),
)
def provider_metric_present(
    orchestration_db: OrchestrationDatabase, ingestion_settings: IngestionSettings
) -> dg.AssetCheckResult:
    with orchestration_db.connection() as conn:
        verdict = event_checks.provider_metric_present(
            conn, lookback=timedelta(days=ingestion_settings.coverage_lookback_days)
        )
    return to_check_result(verdict)
