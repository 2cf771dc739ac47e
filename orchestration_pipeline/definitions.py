"""Assembles the Definitions of the orchestration-pipeline code location; nothing else.

A new domain is a new folder under ``defs/``: Dagster loads every asset, check, job, sensor and
schedule defined there, so nothing here changes when one is added.
"""

import os
from pathlib import Path

import dagster as dg

from orchestration_pipeline.defs.resources import (
    IndexSettings,
    IngestionSettings,
    OrchestrationDatabase,
    PipelineHome,
    ProjectionSettings,
    TasksDatabase,
    VectorIndexResource,
)

DEFS_FOLDER = Path(__file__).parent / "defs"


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
            embedder=_optional_env("ORCH_EMBEDDER"),
        ),
        "index_settings": IndexSettings(),
    }


#: Each step runs in a process forked from a server that has already imported the code location,
#: instead of a fresh interpreter importing Dagster and the pipeline again for every step.
EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["orchestration_pipeline.definitions"]}}},
    name="forkserver_multiprocess",
)


@dg.definitions
def defs() -> dg.Definitions:
    """Everything under ``defs/`` (one folder per domain, found by Dagster), plus the shared resources."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=DEFS_FOLDER),
        dg.Definitions(resources=build_resources(), executor=EXECUTOR),
    )
