"""orchestration-pipeline: event logs of orchestration platforms turned into durable, verified state."""

__version__ = "0.1.0"
