"""``decision_index_sync`` and ``qdrant_index_state``: thin wrappers over lib.index."""

from datetime import timedelta

import dagster as dg

from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.resources import IndexSettings, OrchestrationDatabase, VectorIndexResource
from orchestration_pipeline.lib.index.outbox import prune
from orchestration_pipeline.lib.index.reconcile import reconcile_index
from orchestration_pipeline.lib.index.sync import sync_outbox


@dg.asset(
    group_name="vector_index",
    kinds={"postgres", "qdrant"},
    deps=[raw_events],
    description="The search outbox carried into the vector index: pending decision changes claimed "
    "under a lease, embedded in batches, written to Qdrant, then marked done; failures retried with "
    "backoff, then dead-lettered. Done rows past the retention window are pruned.",
)
def decision_index_sync(
    context: dg.AssetExecutionContext,
    orchestration_db: OrchestrationDatabase,
    vector_index: VectorIndexResource,
    index_settings: IndexSettings,
) -> dg.MaterializeResult:
    with orchestration_db.connection() as conn, vector_index.runtime().open() as (index, embedder):
        report = sync_outbox(
            conn,
            index,
            embedder,
            index_settings.sync_settings(),
            progress=lambda r: context.log.info(f"synced {r.claimed:,} outbox rows ({r.indexed:,} indexed)"),
        )
        pruned = prune(conn, timedelta(days=index_settings.outbox_retention_days))
    body = report.as_dict()
    context.log.info(
        f"{report.claimed} rows: {report.indexed} indexed, {report.deleted} deleted, "
        f"{report.retrying} to retry, {report.dead_lettered} dead-lettered (embedder {embedder.name})"
    )
    return dg.MaterializeResult(
        metadata={
            **{k: body[k] for k in ("claimed", "indexed", "deleted", "superseded", "stale", "retrying")},
            "dead_lettered": body["dead_lettered"],
            "items_per_s": dg.MetadataValue.float(float(body["items_per_s"])),
            "freshness_p95_s": dg.MetadataValue.float(float(body["freshness_p95_s"])),
            "backlog_pending": body.get("backlog_pending", 0),
            "backlog_oldest_age_s": dg.MetadataValue.float(float(body.get("backlog_oldest_age_s", 0.0))),
            "pruned": pruned,
            "embedder": embedder.name,
        }
    )


@dg.asset(
    group_name="vector_index",
    kinds={"postgres", "qdrant"},
    deps=[decision_index_sync],
    description="The vector index reconciled against the decisions in Postgres: missing_in_index, "
    "stale_version and orphan_in_index found, repaired through the outbox, and compared again.",
)
def qdrant_index_state(
    context: dg.AssetExecutionContext,
    orchestration_db: OrchestrationDatabase,
    vector_index: VectorIndexResource,
    index_settings: IndexSettings,
) -> dg.MaterializeResult:
    with orchestration_db.connection() as conn, vector_index.runtime().open() as (index, embedder):
        result = reconcile_index(conn, index, embedder, index_settings.sync_settings())
    body = result.as_dict()
    context.log.info(
        f"drift {body['drift']} found, {body['repairs_enqueued']} repairs, {body['remaining_drift']} remaining"
    )
    return dg.MaterializeResult(
        metadata={
            "run_id": body["run_id"],
            "decisions": body["expected"],
            "points": body["indexed"],
            "missing_in_index": body["missing_in_index"],
            "stale_version": body["stale_version"],
            "orphan_in_index": body["orphan_in_index"],
            "in_flight": body["in_flight"],
            "repairs_enqueued": body["repairs_enqueued"],
            "remaining_drift": body["remaining_drift"],
            "samples": dg.MetadataValue.json(body["samples"]),
            "compare_s": dg.MetadataValue.float(float(body["compare_s"])),
        }
    )
