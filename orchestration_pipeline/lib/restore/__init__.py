"""Backups of the orchestration DB and restore drills that prove them.

``backup.py`` dumps the database with a manifest taken from the same snapshot (``manifest.py``);
``drill.py`` restores a backup into a scratch database (``scratch.py``), verifies the copy against
the manifest (``verify.py``) and records a verdict with the measured RTO; ``checks.py`` turns the
recorded drills into the verdicts of the asset checks. ``tools.py`` picks pg_dump and pg_restore.
No Dagster here: ``defs/restore/`` wires these into the ``restore_drill`` asset.
"""
