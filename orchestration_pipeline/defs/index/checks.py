"""Asset checks on the vector index: thin calls into lib.index.checks."""

import dagster as dg

from orchestration_pipeline.defs.checks_support import pipeline_check, to_check_result, verdict_of
from orchestration_pipeline.defs.index.assets import decision_index_sync, qdrant_index_state
from orchestration_pipeline.defs.resources import IndexSettings, OrchestrationDatabase, VectorIndexResource
from orchestration_pipeline.lib.index import checks as index_checks


@pipeline_check(qdrant_index_state, "index.md")
def index_drift_zero(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """The latest reconciliation left zero drift between the decisions and the index."""
    return verdict_of(orchestration_db, index_checks.index_drift_zero)


@pipeline_check(decision_index_sync, "index.md")
def no_dead_letters(orchestration_db: OrchestrationDatabase) -> dg.AssetCheckResult:
    """No outbox item has spent its retries (no dead letter waits for a replay)."""
    return verdict_of(orchestration_db, index_checks.no_dead_letters)


@pipeline_check(decision_index_sync, "index.md")
def outbox_freshness(
    orchestration_db: OrchestrationDatabase, index_settings: IndexSettings
) -> dg.AssetCheckResult:
    """At least 95% of the window's outbox items were searchable within 30 s of their commit."""
    return verdict_of(
        orchestration_db,
        index_checks.outbox_freshness,
        window_hours=index_settings.freshness_window_hours,
        within_s=index_settings.freshness_within_s,
        min_share=index_settings.freshness_min_share,
    )


@pipeline_check(qdrant_index_state, "index.md")
def payload_indexes_present(vector_index: VectorIndexResource) -> dg.AssetCheckResult:
    """Every field a search filters on has a payload index of its type."""
    with vector_index.runtime().open() as (index, _embedder):
        return to_check_result(index_checks.payload_indexes_present(index))


@pipeline_check(qdrant_index_state, "index.md")
def search_slo(
    orchestration_db: OrchestrationDatabase, vector_index: VectorIndexResource, index_settings: IndexSettings
) -> dg.AssetCheckResult:
    """A live probe: p95 of whole searches and recall@10 against exact search are within the SLO."""
    with orchestration_db.connection() as conn, vector_index.runtime().open() as (index, embedder):
        verdict = index_checks.search_slo(
            conn,
            index,
            embedder,
            probes=index_settings.slo_probes,
            p95_ms=index_settings.slo_p95_ms,
            min_recall=index_settings.slo_min_recall,
        )
    return to_check_result(verdict)
