"""What every command module shares: settings, database URLs, the audit identity options, error handling."""

from __future__ import annotations

import os
import re

import click
import psycopg

from orchestration_pipeline.errors import OrchError, SchemaNotReady


def _missing_table(exc: psycopg.errors.UndefinedTable) -> str:
    """The table an UndefinedTable error names (``relation "x" does not exist``)."""
    found = re.search(r'relation "([^"]+)" does not exist', exc.diag.message_primary or str(exc))
    return found[1] if found else "(unknown)"


def first_line(exc: Exception) -> str:
    """The first line of an error's message (a driver's error can run to several), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ErrorReportingGroup(click.Group):
    """Turns known errors into one line on stderr and a non-zero exit; lists whole command summaries."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command's whole first sentence, wrapped to the terminal rather than cut off with "..."."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except OrchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except psycopg.errors.UndefinedTable as exc:
            # A safety net: commands check the schema up front (require_schema); a table a
            # command reaches without that check still ends in the same one-line message.
            click.echo(f"error: {SchemaNotReady([_missing_table(exc)])}", err=True)
            ctx.exit(1)
        except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction) as exc:
            # tables there, a later migration's column or function not: code newer than the schema
            detail = (exc.diag.message_primary or str(exc)).strip()
            click.echo(
                f"error: the database schema is older than this version ({detail}) — run "
                "'orchestration-pipeline db migrate'",
                err=True,
            )
            ctx.exit(1)
        except psycopg.OperationalError as exc:
            click.echo(f"error: database unavailable: {first_line(exc)} — {what_to_check()}", err=True)
            ctx.exit(1)


def pipeline_settings():
    from orchestration_pipeline.settings import load_settings

    return load_settings()


#: The settings naming a server, in the order a message lists them.
URL_SETTINGS = (
    ("ORCH_DATABASE_URL", "database_url"),
    ("TASKS_DATABASE_URL", "tasks_database_url"),
    ("DAGSTER_DATABASE_URL", "dagster_database_url"),
)


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def what_to_check(variables: tuple[str, ...] = tuple(name for name, _ in URL_SETTINGS)) -> str:
    """What to look at when a database stops answering, naming what is in use: the embedded
    server under ``$ORCH_HOME/pg``, or the server settings among ``variables`` that are set.

    A URL naming the embedded server's own socket (as ``eval "$(orchestration-pipeline up --env)"``
    exports) still means the embedded server.
    """
    try:
        settings = pipeline_settings()
    except OrchError:  # read once already by the command; should it fail now, claim nothing
        return "check the database server and the *_DATABASE_URL settings"
    restart = "start it with 'orchestration-pipeline up', or restart it with 'orchestration-pipeline down' then 'up'"
    if settings.embedded_postgres:
        return f"the embedded PostgreSQL under {settings.pg_dir} is in use: {restart}"
    in_use = [(name, getattr(settings, field)) for name, field in URL_SETTINGS if name in variables]
    servers = [name for name, url in in_use if url and not settings.points_at_embedded(url)]
    embedded = [name for name, url in in_use if url and settings.points_at_embedded(url)]
    hints = []
    if servers:
        hints.append(
            f"check {_listed(servers)} and the server{'s they name' if len(servers) > 1 else ' it names'}"
        )
    if embedded:
        hints.append(
            f"{_listed(embedded)} name{'' if len(embedded) > 1 else 's'} the embedded PostgreSQL under "
            f"{settings.pg_dir}: {restart}"
        )
    return "; ".join(hints) or "check the database server and the *_DATABASE_URL settings"


def orchestration_dsn() -> str:
    return database_urls().orchestration


def _default_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"cli:uid{os.getuid()}"


def identity_options(func):
    """--actor and --request-id: who asked for an audited change, and which request it was."""
    func = click.option(
        "--request-id",
        envvar="ORCH_REQUEST_ID",
        help="Correlates the audit entries of one request (or ORCH_REQUEST_ID). Default: a new UUID.",
    )(func)
    return click.option(
        "--actor",
        envvar="ORCH_ACTOR",
        help="Who is acting, as recorded in the audit ledger (or ORCH_ACTOR). Default: cli:<login user>.",
    )(func)


def who(actor: str | None, request_id: str | None) -> tuple[str, str]:
    import uuid

    return actor or _default_actor(), request_id or f"cli-{uuid.uuid4()}"


def database_urls():
    from orchestration_pipeline.lib.embedded import resolve_database_urls

    return resolve_database_urls(pipeline_settings(), start=True)
