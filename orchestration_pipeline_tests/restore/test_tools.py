"""Which pg_dump/pg_restore may serve which server: the rules, and the real binaries refused."""

from __future__ import annotations

import pytest

from orchestration_pipeline.lib.db import connection
from orchestration_pipeline.lib.restore.errors import ToolMismatch
from orchestration_pipeline.lib.restore.tools import (
    EMBEDDED,
    PATH,
    PgTool,
    PgTools,
    dump_problem,
    find_tools,
    libpq_target,
    parse_version,
    require_backup_tools,
    restore_problem,
    server_version,
    tool_origin_for,
)


def tool(name: str, major: int) -> PgTool:
    return PgTool(name, f"/opt/pg{major}/bin/{name}", f"{major}.2", major)


def test_versions_are_read_from_what_the_binaries_print():
    assert parse_version("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n") == ("15.20", 15)
    assert parse_version("pg_restore (PostgreSQL) 18.6") == ("18.6", 18)
    assert parse_version("pg_dump (PostgreSQL) 19devel") == ("19", 19)
    with pytest.raises(ToolMismatch, match="cannot read a PostgreSQL version"):
        parse_version("mysqldump  Ver 10.19")


def test_pg_dump_must_be_the_servers_major_version():
    assert dump_problem(tool("pg_dump", 15), 15) is None
    older = dump_problem(tool("pg_dump", 15), 18)
    assert (
        "cannot dump a PostgreSQL 18 server" in older
        and "postgresql-client-18" in older
        and "--pg-bin" in older
    )
    newer = dump_problem(tool("pg_dump", 18), 15)
    assert "not guaranteed to load" in newer and "could not be restored into the server it came from" in newer


def test_pg_restore_reads_the_dump_and_speaks_the_servers_version():
    assert restore_problem(tool("pg_restore", 15), 15, 15) is None
    assert restore_problem(tool("pg_restore", 16), 15, 16) is None  # an older dump into a newer server
    assert "cannot read a dump written by pg_dump 16" in restore_problem(tool("pg_restore", 15), 16, 16)
    assert "transaction_timeout" in restore_problem(tool("pg_restore", 18), 15, 15)
    assert "not guaranteed to load it" in restore_problem(tool("pg_restore", 18), 18, 15)


def test_a_backup_is_refused_when_its_dump_could_not_be_restored_here():
    with pytest.raises(ToolMismatch, match="sends settings PostgreSQL 15 does not know"):
        require_backup_tools(PgTools(tool("pg_dump", 15), tool("pg_restore", 18), "mixed"), 15)
    require_backup_tools(PgTools(tool("pg_dump", 15), tool("pg_restore", 15), PATH), 15)


def test_a_missing_directory_or_binary_names_the_fix(tmp_path):
    with pytest.raises(ToolMismatch, match=f"pg_dump is not in {tmp_path}"):
        find_tools(PATH, tmp_path)


def test_the_password_travels_in_the_environment_not_on_the_command_line():
    conninfo, env = libpq_target("postgresql://app:s3cret@db.internal:5433/orch?sslmode=require")
    assert "s3cret" not in conninfo and "dbname=orch" in conninfo and "port=5433" in conninfo
    assert env is not None and env["PGPASSWORD"] == "s3cret"
    assert libpq_target("postgresql://app@db.internal/orch")[1] is None


@pytest.mark.db
def test_the_embedded_server_is_recognised_by_its_socket_in_its_data_directory(pg_admin_dsn, server_mode):
    expected = PATH if server_mode else EMBEDDED
    assert tool_origin_for(pg_admin_dsn, embedded=False) == expected
    assert tool_origin_for(pg_admin_dsn, embedded=True) == EMBEDDED  # the settings name it: trusted
    assert tool_origin_for("postgresql://app@db.internal/orch", embedded=False) == PATH


@pytest.mark.db
def test_the_real_binaries_of_the_other_version_are_refused(pg_admin_dsn, server_mode):
    """The machine's server is PostgreSQL 15 with pg_dump 15 on PATH; the embedded one is 18 with
    its own binaries. Each server refuses the other's binaries, and accepts its own."""
    with connection(pg_admin_dsn) as conn:
        _, major = server_version(conn)
    own, other = (PATH, EMBEDDED) if server_mode else (EMBEDDED, PATH)
    require_backup_tools(find_tools(own), major)
    mismatched = find_tools(other)
    if mismatched.pg_dump.major == major:
        pytest.skip(f"the {other} binaries are PostgreSQL {major} too: nothing to refuse")
    with pytest.raises(ToolMismatch, match=f"PostgreSQL {major}"):
        require_backup_tools(mismatched, major)
