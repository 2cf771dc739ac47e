"""Assembles the Definitions of the orchestration-pipeline code location; nothing else."""

import os

import dagster as dg

from orchestration_pipeline.defs.audit.assets import audit_ledger_integrity, decision_execution_summary
from orchestration_pipeline.defs.audit.checks import (
    audit_chain_intact,
    audit_guard_present,
    no_stale_pending_executions,
)
from orchestration_pipeline.defs.audit.jobs import audit_job, hourly_audit
from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.ingestion.checks import (
    core_event_coverage,
    events_accounted_for,
    policy_violations_complete,
    provider_metric_present,
)
from orchestration_pipeline.defs.ingestion.sensors import ingest_job, landing_zone_sensor
from orchestration_pipeline.defs.projection.assets import projection_drift_report, task_projection
from orchestration_pipeline.defs.projection.checks import (
    drift_not_persistent,
    projection_columns_present,
    projection_sync_latency,
    zero_drift_after_reconcile,
)
from orchestration_pipeline.defs.projection.sensors import (
    nightly_reconciliation,
    projection_lag_sensor,
    reconciliation_job,
)
from orchestration_pipeline.defs.resources import (
    IngestionSettings,
    OrchestrationDatabase,
    PipelineHome,
    ProjectionSettings,
    TasksDatabase,
    VectorIndexResource,
)
from orchestration_pipeline.defs.schema.assets import orchestration_schema
from orchestration_pipeline.defs.schema.checks import schema_migrations_current


def _optional_env(name: str) -> dg.EnvVar | None:
    # Evaluated when the code location loads, not at import: optional settings stay None when unset.
    return dg.EnvVar(name) if os.environ.get(name) else None


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources every asset may ask for, configured from the environment at run time."""
    return {
        "orchestration_db": OrchestrationDatabase(dsn=dg.EnvVar("ORCH_DATABASE_URL")),
        "tasks_db": TasksDatabase(dsn=dg.EnvVar("TASKS_DATABASE_URL")),
        "pipeline_home": PipelineHome(orch_home=dg.EnvVar("ORCH_HOME")),
        "ingestion_settings": IngestionSettings(),
        "projection_settings": ProjectionSettings(),
        "vector_index": VectorIndexResource(
            orch_home=dg.EnvVar("ORCH_HOME"),
            qdrant_url=_optional_env("QDRANT_URL"),
            qdrant_api_key=_optional_env("QDRANT_API_KEY"),
        ),
    }


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[
            orchestration_schema,
            raw_events,
            task_projection,
            projection_drift_report,
            audit_ledger_integrity,
            decision_execution_summary,
        ],
        asset_checks=[
            schema_migrations_current,
            events_accounted_for,
            core_event_coverage,
            policy_violations_complete,
            provider_metric_present,
            projection_columns_present,
            projection_sync_latency,
            zero_drift_after_reconcile,
            drift_not_persistent,
            audit_chain_intact,
            audit_guard_present,
            no_stale_pending_executions,
        ],
        jobs=[ingest_job, reconciliation_job, audit_job],
        schedules=[nightly_reconciliation, hourly_audit],
        sensors=[landing_zone_sensor, projection_lag_sensor],
        resources=build_resources(),
    )
