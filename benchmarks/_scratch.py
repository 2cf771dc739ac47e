"""Scratch databases for the benchmarks: on the server given by --dsn, or on a temporary embedded one.

    scratch = Scratch.open(args.dsn, "orchestration", "tasks")
    try:
        ... scratch.dsns["orchestration"], scratch.work ...
    finally:
        scratch.close()

Each database gets a fresh random name and is dropped at the end; an embedded server started
here is stopped, and the working directory (data files, the embedded server's data) removed.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.embedded import ensure_postgres, stop_postgres, with_database


@dataclass
class Scratch:
    work: Path
    admin: str
    names: dict[str, str]
    embedded_home: Path | None

    @property
    def dsns(self) -> dict[str, str]:
        return {target: with_database(self.admin, name) for target, name in self.names.items()}

    @classmethod
    def open(cls, admin_dsn: str | None, *targets: str) -> Scratch:
        work = Path(tempfile.mkdtemp(prefix="orch-bench-"))
        home = None if admin_dsn else work / "home"
        try:
            admin = admin_dsn or ensure_postgres(home).admin_dsn
        except BaseException:
            if home is not None:
                stop_postgres(home)  # started, then failed: not left running
            shutil.rmtree(work, ignore_errors=True)
            raise
        names = {target: f"bench_{target}_{uuid.uuid4().hex[:8]}" for target in targets}
        scratch = cls(work, admin, names, home)
        try:
            with connection(admin, autocommit=True) as conn:
                for name in names.values():
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except BaseException:
            scratch.close()
            raise
        return scratch

    def close(self) -> None:
        try:
            with connection(self.admin, autocommit=True) as conn:
                for name in self.names.values():
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                    )
        finally:
            if self.embedded_home is not None:
                stop_postgres(self.embedded_home)
            shutil.rmtree(self.work, ignore_errors=True)
