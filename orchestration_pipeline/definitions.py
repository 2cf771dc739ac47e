"""Assembles the Definitions of the orchestration-pipeline code location; nothing else.

A new domain is a new folder under ``defs/``: Dagster loads every asset, check, job, sensor and
schedule defined there, so nothing here changes when one is added.
"""

import importlib
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
from orchestration_pipeline.errors import ConfigError

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


#: ORCH_EXECUTOR: where steps run. The executor's own settings (broker, image, namespace) come from
#: the run config (``execution: config: ...``) or a job's launchpad, so moving needs no code change.
EXECUTORS = {
    "multiprocess": ("dagster", "multiprocess_executor", None),
    "in_process": ("dagster", "in_process_executor", None),
    "celery": ("dagster_celery", "celery_executor", "pip install dagster-celery==0.29.27"),
    "docker": ("dagster_docker", "docker_executor", "pip install dagster-docker==0.29.27"),
    "k8s": ("dagster_k8s", "k8s_job_executor", "pip install dagster-k8s==0.29.27"),
}


def select_executor(name: str | None) -> dg.ExecutorDefinition:
    """The executor ``ORCH_EXECUTOR`` names (default: the forkserver multiprocess executor)."""
    if not name or name == "multiprocess":
        return EXECUTOR
    if name not in EXECUTORS:
        raise ConfigError(f"ORCH_EXECUTOR must be one of {', '.join(EXECUTORS)}, not {name!r}")
    module_name, attribute, install = EXECUTORS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(
            f"ORCH_EXECUTOR={name} needs {module_name} — {install} (the release that pairs with dagster 1.13.27), "
            "or unset ORCH_EXECUTOR for the multiprocess executor"
        ) from None
    return getattr(module, attribute)


@dg.definitions
def defs() -> dg.Definitions:
    """Everything under ``defs/`` (one folder per domain, found by Dagster), plus the shared resources."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=DEFS_FOLDER),
        dg.Definitions(
            resources=build_resources(), executor=select_executor(os.environ.get("ORCH_EXECUTOR", "").strip())
        ),
    )
