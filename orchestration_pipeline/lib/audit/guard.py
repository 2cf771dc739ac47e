"""The ledger's guard: what makes it append-only, checked rule by rule against the catalog.

Each rule of :data:`GUARD_RULES` is a named check that returns the problems it finds, each one a
sentence naming the statement that fixes it; :func:`guard_problems` runs them all, and
``audit_guard_present`` (:func:`guard_verdict`) reports them. The setup they check is made by
``sql/orchestration/0004_audit_ledger.sql``, ``0006``, ``0010`` and ``0016``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import psycopg

from orchestration_pipeline.lib.audit.ledger import AUDIT_TABLES, CONTENT_COLUMNS, OWNER_ROLE, WRITER_ROLE
from orchestration_pipeline.lib.db import Trigger, end_read, table_triggers
from orchestration_pipeline.lib.verdict import Verdict

# Run as the ledger's owner, so each must be owned by it with search_path pinned to pg_catalog.
_CHECKPOINT_FUNCTION = "audit_checkpoint(integer,integer)"
_DEFINER_FUNCTIONS = ("audit_ledger_chain()", _CHECKPOINT_FUNCTION)
# The latest definition of both functions; reapplying an older file (0010) would bring back an
# older one.
_REAPPLY_FUNCTIONS = "reapply sql/orchestration/0016_audit_database_clock.sql (psql -1 -f)"
# How each function stamps its time: the moment the database writes the row, never the start of
# the writer's transaction (now()), which the writer chooses by when it begins.
_CLOCK_STAMPS = (
    (
        "audit_ledger_chain()",
        "an entry's occurred_at",
        re.compile(r"NEW\.occurred_at\s*:=\s*clock_timestamp\(\)"),
    ),
    (
        _CHECKPOINT_FUNCTION,
        "a checkpoint's created_at",
        re.compile(r"created_at\)\s*VALUES\s*\([^;]*\bclock_timestamp\(\)\)", re.S),
    ),
)

# What the writer role may do to each table (True: must be granted; False: must not be).
_TABLE_PRIVILEGES = {
    ("audit_ledger", "INSERT"): False,  # table-wide; the content columns are granted one by one
    ("audit_ledger", "SELECT"): True,
    ("audit_ledger", "UPDATE"): False,
    ("audit_ledger", "DELETE"): False,
    ("audit_ledger", "TRUNCATE"): False,
    ("audit_ledger", "TRIGGER"): False,
    ("audit_chain_heads", "INSERT"): False,
    ("audit_chain_heads", "UPDATE"): False,
    ("audit_chain_heads", "DELETE"): False,
    ("audit_chain_heads", "TRUNCATE"): False,
    ("audit_checkpoints", "SELECT"): True,
    ("audit_checkpoints", "INSERT"): False,  # only through audit_checkpoint(), which decides what to seal
    ("audit_checkpoints", "UPDATE"): False,
    ("audit_checkpoints", "DELETE"): False,
    ("audit_checkpoints", "TRUNCATE"): False,
}

# (table, trigger function, event bits, row level, label) of every trigger the guard needs
_WANTED_TRIGGERS = (
    ("audit_ledger", "audit_ledger_chain", "INSERT", True, "BEFORE INSERT hash-chain trigger"),
    *(
        (table, "audit_ledger_refuse_change", operation, row_level, label)
        for table in ("audit_ledger", "audit_checkpoints")
        for operation, row_level, label in (
            ("UPDATE", True, "row-level BEFORE UPDATE guard"),
            ("DELETE", True, "row-level BEFORE DELETE guard"),
            ("TRUNCATE", False, "statement-level BEFORE TRUNCATE guard"),
        )
    ),
)

Rule = Callable[[psycopg.Connection], list[str]]


def _problem_if(conn: psycopg.Connection, query: str, params: tuple, problem: str) -> list[str]:
    """``[problem]`` when ``query`` (one boolean) answers true, else no problem."""
    return [problem] if conn.execute(query, params).fetchone()[0] else []


def _triggers(conn: psycopg.Connection) -> list[Trigger]:
    return table_triggers(conn, ("audit_ledger", "audit_checkpoints"))


def triggers_fire_for_every_row(conn: psycopg.Connection) -> list[str]:
    """No guard trigger is disabled, or fires only for some rows (a WHEN condition or UPDATE OF columns)."""
    problems = []
    for trigger in _triggers(conn):
        table, name, enabled, partial = trigger.table, trigger.name, trigger.enabled, trigger.partial
        if enabled not in ("O", "A"):
            problems.append(
                f"trigger {name} is disabled (tgenabled={enabled}) — ALTER TABLE {table} ENABLE TRIGGER {name}"
            )
        elif partial:
            problems.append(
                f"trigger {name} on {table} fires only for some rows (a WHEN condition or UPDATE OF "
                "columns) — reapply the migration that creates it (0004, 0010), then 0016"
            )
    return problems


def guard_triggers_present(conn: psycopg.Connection) -> list[str]:
    """The hash-chain trigger and the UPDATE, DELETE and TRUNCATE guards exist on both tables and fire."""
    live = [trigger for trigger in _triggers(conn) if trigger.fires]
    return [
        f"{label} missing on {table} — reapply sql/orchestration/0004_audit_ledger.sql, then 0006, "
        "0010 and 0016 (psql -1 -f each)"
        for table, function, operation, row_level, label in _WANTED_TRIGGERS
        if not any(
            t.table == table and t.function == function and t.serves(operation, row_level=row_level)
            for t in live
        )
    ]


def chain_position_unique(conn: psycopg.Connection) -> list[str]:
    """The unique chain position is what makes a fork impossible, whatever a writer sends."""
    unique = conn.execute(
        """SELECT count(*) FROM pg_constraint WHERE conrelid = 'audit_ledger'::regclass AND contype = 'u'
             AND conname = 'audit_ledger_chain_position'"""
    ).fetchone()[0]
    if unique:
        return []
    return [
        "unique constraint audit_ledger_chain_position (chain_id, chain_seq) missing — reapply "
        "sql/orchestration/0004_audit_ledger.sql"
    ]


def roles_not_superusers(conn: psycopg.Connection) -> list[str]:
    """Neither the owner nor the writer role is a superuser (a superuser bypasses every grant)."""
    rows = conn.execute(
        "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) AND rolsuper", ([OWNER_ROLE, WRITER_ROLE],)
    ).fetchall()
    return [f"role {role} is a superuser — ALTER ROLE {role} NOSUPERUSER" for (role,) in rows]


def tables_owned_by_owner(conn: psycopg.Connection) -> list[str]:
    """The ledger's tables belong to the owner role, and PUBLIC has no privilege on them."""
    problems = []
    owners = conn.execute(
        """SELECT c.relname, pg_get_userbyid(c.relowner),
                  (SELECT count(*) FROM aclexplode(coalesce(c.relacl, '{}'::aclitem[])) a WHERE a.grantee = 0)
           FROM pg_class c WHERE c.oid IN ('audit_ledger'::regclass, 'audit_chain_heads'::regclass,
                                          'audit_checkpoints'::regclass)"""
    ).fetchall()
    for table, owner, public_grants in owners:
        if owner != OWNER_ROLE:
            problems.append(f"{table} is owned by {owner} — ALTER TABLE {table} OWNER TO {OWNER_ROLE}")
        if public_grants:
            problems.append(f"PUBLIC has privileges on {table} — REVOKE ALL ON {table} FROM PUBLIC")
    return problems


def definer_functions_owned(conn: psycopg.Connection) -> list[str]:
    """The trigger and checkpoint functions run as the owner (SECURITY DEFINER, owned by it)."""
    problems = []
    for signature in _DEFINER_FUNCTIONS:
        fn_owner = conn.execute(
            "SELECT pg_get_userbyid(proowner), prosecdef FROM pg_proc WHERE oid = to_regprocedure(%s)",
            (signature,),
        ).fetchone()
        if fn_owner is None or fn_owner[0] != OWNER_ROLE or not fn_owner[1]:
            problems.append(
                f"{signature} must be SECURITY DEFINER owned by {OWNER_ROLE} — {_REAPPLY_FUNCTIONS}"
            )
    return problems


def writer_not_owner_member(conn: psycopg.Connection) -> list[str]:
    """The writer role does not inherit the owner's rights."""
    return _problem_if(
        conn,
        "SELECT pg_has_role(%s, %s, 'MEMBER')",
        (WRITER_ROLE, OWNER_ROLE),
        f"{WRITER_ROLE} is a member of {OWNER_ROLE} — REVOKE {OWNER_ROLE} FROM {WRITER_ROLE}",
    )


def writer_cannot_setval(conn: psycopg.Connection) -> list[str]:
    """setval() could move the ledger's ids back: new entries would collide with stored ones or fill
    sealed ranges. (An identity column needs no privilege on its sequence to insert.)"""
    return _problem_if(
        conn,
        "SELECT has_sequence_privilege(%s, pg_get_serial_sequence('audit_ledger', 'audit_id'), 'UPDATE')",
        (WRITER_ROLE,),
        f"{WRITER_ROLE} may setval() the ledger's id sequence — REVOKE UPDATE ON SEQUENCE "
        f"audit_ledger_audit_id_seq FROM {WRITER_ROLE}",
    )


def writer_table_privileges(conn: psycopg.Connection) -> list[str]:
    """The writer role may SELECT the ledger and its checkpoints, and change nothing table-wide."""
    problems = []
    for (table, privilege), wanted in _TABLE_PRIVILEGES.items():
        has = conn.execute(
            "SELECT has_table_privilege(%s, %s, %s)", (WRITER_ROLE, table, privilege)
        ).fetchone()[0]
        if has and not wanted:
            problems.append(
                f"{WRITER_ROLE} may {privilege} {table} — REVOKE {privilege} ON {table} FROM {WRITER_ROLE}"
            )
        elif wanted and not has:
            problems.append(
                f"{WRITER_ROLE} cannot {privilege} {table} — GRANT {privilege} ON {table} TO {WRITER_ROLE}"
            )
    return problems


def writer_inserts_content_only(conn: psycopg.Connection) -> list[str]:
    """The writer role may insert an entry's content columns, never its id, time or chain position."""
    problems = []
    columns = conn.execute(
        """SELECT a.attname, has_column_privilege(%s, 'audit_ledger', a.attname, 'INSERT')
           FROM pg_attribute a WHERE a.attrelid = 'audit_ledger'::regclass AND a.attnum > 0
             AND NOT a.attisdropped ORDER BY a.attname""",
        (WRITER_ROLE,),
    ).fetchall()
    for column, may_insert in columns:
        if may_insert and column not in CONTENT_COLUMNS:
            problems.append(
                f"{WRITER_ROLE} may set audit_ledger.{column} — REVOKE INSERT ON audit_ledger FROM {WRITER_ROLE}, "
                "then reapply the column grant at the end of sql/orchestration/0006_audit_chain_fast.sql "
                "(psql -1 -f)"
            )
        elif column in CONTENT_COLUMNS and not may_insert:
            problems.append(
                f"{WRITER_ROLE} cannot insert audit_ledger.{column} — GRANT INSERT ({column}) ON audit_ledger "
                f"TO {WRITER_ROLE}"
            )
    return problems


def definer_search_path_pinned(conn: psycopg.Connection) -> list[str]:
    """Functions that run as the owner see only pg_catalog, so nothing a caller creates runs inside them."""
    pinned = conn.execute(
        """SELECT p.oid::regprocedure::text, coalesce('search_path=pg_catalog, pg_temp' = ANY(p.proconfig), false)
           FROM pg_proc p WHERE p.oid IN (SELECT to_regprocedure(f) FROM unnest(%s::text[]) AS f)""",
        (list(_DEFINER_FUNCTIONS),),
    ).fetchall()
    return [
        f"{proc} runs as its owner without search_path pinned to pg_catalog — {_REAPPLY_FUNCTIONS}"
        for proc, ok in pinned
        if not ok
    ]


def times_stamped_by_database(conn: psycopg.Connection) -> list[str]:
    """An entry's and a checkpoint's time are the moment the database writes them
    (``clock_timestamp()``), so no writer can back-date one by holding its transaction open."""
    problems = []
    for signature, what, stamp in _CLOCK_STAMPS:
        row = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(%s)", (signature,)
        ).fetchone()
        if row is not None and not stamp.search(row[0]):
            problems.append(
                f"{signature} does not stamp {what} with clock_timestamp() (an older definition: the "
                f"writer's transaction start would be used) — {_REAPPLY_FUNCTIONS}"
            )
    return problems


def writer_may_checkpoint(conn: psycopg.Connection) -> list[str]:
    """The writer role can run audit_checkpoint() (the only way to write a checkpoint)."""
    return _problem_if(
        conn,
        "SELECT NOT has_function_privilege(%s, %s, 'EXECUTE')",
        (WRITER_ROLE, _CHECKPOINT_FUNCTION),
        f"{WRITER_ROLE} cannot run audit_checkpoint() — GRANT EXECUTE ON FUNCTION "
        f"audit_checkpoint(integer, integer) TO {WRITER_ROLE}",
    )


def ids_drawn_in_order(conn: psycopg.Connection) -> list[str]:
    """With cached or cycling ids an entry could land in a range a checkpoint already sealed."""
    sequence = conn.execute(
        """SELECT s.seqcache, s.seqcycle FROM pg_sequence s
           WHERE s.seqrelid = pg_get_serial_sequence('audit_ledger', 'audit_id')::regclass"""
    ).fetchone()
    if sequence is not None and sequence[0] == 1 and not sequence[1]:
        return []
    return [
        "audit_ledger.audit_id must draw ids one at a time, in order — ALTER TABLE audit_ledger "
        "ALTER COLUMN audit_id SET CACHE 1 SET NO CYCLE"
    ]


#: Rules that need only the tables.
TABLE_RULES: tuple[tuple[str, Rule], ...] = (
    ("triggers_fire_for_every_row", triggers_fire_for_every_row),
    ("guard_triggers_present", guard_triggers_present),
    ("chain_position_unique", chain_position_unique),
    ("roles_not_superusers", roles_not_superusers),
    ("times_stamped_by_database", times_stamped_by_database),
)
#: Rules that also need both roles to exist.
ROLE_RULES: tuple[tuple[str, Rule], ...] = (
    ("tables_owned_by_owner", tables_owned_by_owner),
    ("definer_functions_owned", definer_functions_owned),
    ("writer_not_owner_member", writer_not_owner_member),
    ("writer_cannot_setval", writer_cannot_setval),
    ("writer_table_privileges", writer_table_privileges),
    ("writer_inserts_content_only", writer_inserts_content_only),
    ("definer_search_path_pinned", definer_search_path_pinned),
    ("writer_may_checkpoint", writer_may_checkpoint),
    ("ids_drawn_in_order", ids_drawn_in_order),
)
GUARD_RULES = TABLE_RULES + ROLE_RULES


def guard_problems(conn: psycopg.Connection) -> list[str]:
    """What is missing from the ledger's immutability setup (empty when all is in place)."""
    exists = conn.execute(
        "SELECT to_regclass(t) IS NOT NULL FROM unnest(%s::text[]) AS t", (list(AUDIT_TABLES),)
    ).fetchall()
    if not all(e for (e,) in exists):
        end_read(conn)
        return ["audit_ledger tables missing — run 'orchestration-pipeline db migrate'"]
    problems = [p for _name, rule in TABLE_RULES for p in rule(conn)]
    present = {
        r
        for (r,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", ([OWNER_ROLE, WRITER_ROLE],)
        )
    }
    missing_roles = [r for r in (OWNER_ROLE, WRITER_ROLE) if r not in present]
    problems += [
        f"role {role} missing — reapply sql/orchestration/0004_audit_ledger.sql" for role in missing_roles
    ]
    if not missing_roles:  # the privilege rules need both roles
        problems += [p for _name, rule in ROLE_RULES for p in rule(conn)]
    end_read(conn)
    return problems


def guard_verdict(conn: psycopg.Connection) -> Verdict:
    """``audit_guard_present``: triggers enabled, owner separate, writer limited to content INSERT and SELECT."""
    problems = guard_problems(conn)
    who = conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    end_read(conn)
    metadata = {"problems": problems[:10], "connected_as": who[0], "connected_as_superuser": bool(who[1])}
    if not problems:
        return Verdict(
            True,
            "append-only triggers enabled; ledger owned by orch_audit_owner; writer may only SELECT and insert content",
            metadata,
        )
    return Verdict(False, f"{len(problems)} problem(s): {problems[0]}", metadata)
