"""The audit ledger: entries written in the mutation's transaction, chains, checkpoints, verification.

``record_audit`` and ``audited`` are the entry points other domains and user code call.
"""

from orchestration_pipeline.lib.audit.ledger import OPERATIONS, audited, record_audit

__all__ = ["OPERATIONS", "audited", "record_audit"]
