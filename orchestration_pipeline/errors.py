"""Errors that reach a user: each message is one line and names the fix."""


class OrchError(Exception):
    """Base class for errors the CLI prints as one line and exits non-zero on."""


class ConfigError(OrchError):
    """The environment is misconfigured."""


class DatabaseUnavailable(OrchError):
    """A database did not answer."""


class MigrationError(OrchError):
    """A migration could not be applied or was changed after being applied."""


class SchemaNotReady(OrchError):
    """Required tables are missing; the fix is always to run the migrations."""

    def __init__(self, missing: list[str]):
        self.missing = sorted(missing)
        super().__init__(
            f"schema not ready: missing tables {', '.join(self.missing)} — run 'orchestration-pipeline db migrate'"
        )


class AuditError(OrchError):
    """An audit entry was refused (missing actor or request id, unknown operation, no transaction)."""


class ExecutionError(OrchError):
    """A decision execution was refused before its effect ran (unknown policy or effect, bad payload)."""


class CanonicalJsonError(ExecutionError):
    """A value cannot be written as RFC 8785 canonical JSON."""


class ActionHashConflict(ExecutionError):
    """An action_hash already belongs to an execution with different parameters."""
