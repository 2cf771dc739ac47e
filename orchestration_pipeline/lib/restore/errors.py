"""Errors of backups and restore drills; each message is one line and names the fix."""

from __future__ import annotations

from orchestration_pipeline.errors import OrchError


class RestoreError(OrchError):
    """A backup could not be taken, or a drill could not run (the drill exits 2)."""


class ToolMismatch(RestoreError):
    """pg_dump or pg_restore is missing, or its major version cannot serve this server."""


class BackupNotFound(RestoreError):
    """No backup has that id, or no dump file or manifest is where it should be."""


class NotScratch(RestoreError):
    """A restore or a drop was aimed at a database the drill did not create and mark as scratch."""
