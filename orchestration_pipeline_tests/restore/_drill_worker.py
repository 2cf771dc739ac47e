"""A drill in its own process, for the fault tests: ``python -m orchestration_pipeline_tests.restore._drill_worker``.

``ORCH_DSN TASKS_DSN BACKUP_DIR ORIGIN`` runs one drill that, once the backup is restored into its
scratch database, prints ``RESTORED <scratch database>`` and waits (to be killed halfway).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from orchestration_pipeline.lib.restore.drill import DrillOptions, run_drill


def _wait_forever(scratch_dsn: str) -> None:
    print(f"RESTORED {conninfo_to_dict(scratch_dsn)['dbname']}", flush=True)
    while True:
        time.sleep(60)


def main(orch_dsn: str, tasks_dsn: str, backup_dir: str, origin: str) -> None:
    opts = DrillOptions(
        source_dsn=orch_dsn, tasks_dsn=tasks_dsn, backup_dir=Path(backup_dir), tool_origin=origin,
        created_by="fault-test", before_verify=_wait_forever,
    )  # fmt: skip
    run_drill(opts)


if __name__ == "__main__":
    main(*sys.argv[1:])
