"""``emit`` and ``events schema``: write one event from a shell; print the envelope's schema."""

from __future__ import annotations

import json
from pathlib import Path

import click

from orchestration_pipeline.cli._common import pipeline_settings


@click.group()
def events() -> None:
    """The event envelope."""


@events.command("schema")
def events_schema() -> None:
    """Print the JSON Schema of the event envelope (one branch per event_type)."""
    from orchestration_pipeline.lib.ingestion.envelope import envelope_json_schema

    click.echo(json.dumps(envelope_json_schema(), indent=2))


def _cli_event_types() -> dict[str, str]:
    from orchestration_pipeline.emit import EVENT_TYPES

    names = {t: t for t in EVENT_TYPES}
    names.update({t.replace("_", "-").replace(".", "-"): t for t in EVENT_TYPES})
    names["artifact"] = "artifact_emit"
    return names


def _field_value(text: str):
    try:
        return json.loads(text)  # numbers, true/false, null, objects
    except ValueError:
        return text


# The option that supplies a required field on this command line; other payload fields come from -f.
_FIELD_FLAGS = {
    "stage": "--stage NAME",
    "payload.duration_ms": "--duration-ms N",
    "payload.success": "-f success=true (or -f success=false)",
}


def _naming_the_flag(message: str) -> str:
    """The SDK's "TYPE: FIELD is required ..." message, with the flag that supplies FIELD."""
    field, required, _ = message.partition(": ")[2].partition(" is required")
    if not required:
        return message
    flag = _FIELD_FLAGS.get(field)
    if flag is None and field.startswith("payload."):
        flag = f"-f {field.removeprefix('payload.')}=VALUE"
    if flag is None:
        return message
    return f"{message}{'; ' if ' — ' in message else ' — '}pass {flag}"


@click.command(context_settings={"show_default": True})
@click.argument("event_type", metavar="TYPE")
@click.argument("artifact_path", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--session-id", required=True, envvar="ORCH_SESSION_ID", help="Run/session id (or ORCH_SESSION_ID)."
)
@click.option(
    "--source", required=True, envvar="ORCH_SOURCE", help="Producer name, e.g. deploy.ps1 (or ORCH_SOURCE)."
)
@click.option("--task-id", help="Task the event belongs to.")
@click.option("--stage", help="Pipeline stage (required for error).")
@click.option(
    "--severity",
    help="Your own word, e.g. info, Warning, ERROR (at most 64 characters); agent-* types take one of "
    "info, success, warning, error or critical.",
)
@click.option(
    "--status",
    help="Your own word, e.g. ok, SUCCESS, failure (at most 64 characters; see the README's synonym map); "
    "agent-* types take one of started, in_progress, completed, paused, failed or conflict.",
)
@click.option(
    "--duration-ms", type=click.IntRange(min=0), help="Duration (task-end and command-end need it)."
)
@click.option(
    "-f",
    "--field",
    "fields",
    multiple=True,
    metavar="KEY=VALUE",
    help="A payload field; VALUE is JSON when it parses (5, true, null), else text. Repeatable.",
)
@click.option(
    "--landing-dir", type=click.Path(file_okay=False, path_type=Path), help="Default: $ORCH_HOME/landing."
)
@click.option(
    "--redact",
    is_flag=True,
    help="Redact secrets (passwords, tokens, keys) in the payload and text fields before the file is "
    "written, with the same engine ingestion uses.",
)
def emit(
    event_type: str,
    artifact_path: Path | None,
    session_id: str,
    source: str,
    task_id: str | None,
    stage: str | None,
    severity: str | None,
    status: str | None,
    duration_ms: int | None,
    fields: tuple[str, ...],
    landing_dir: Path | None,
    redact: bool,
) -> None:
    """Write one event into the landing directory, atomically (for bash and PowerShell harnesses).

    TYPE is an event type: task-start, task-end, command-start, command-end, decision, artifact,
    error, metric, policy-violation, agent-started, agent-progress, agent-completed,
    agent-conflict-detected, agent-paused or agent-error. Examples:

    \b
      orchestration-pipeline emit task-start --session-id S1 --source build.sh --task-id T1
      orchestration-pipeline emit task-end --session-id S1 --source build.sh --task-id T1 \\
          --duration-ms 1200 -f success=true
      orchestration-pipeline emit metric --session-id S1 --source build.sh -f name=rows -f value=42
      orchestration-pipeline emit artifact out/report.xml --session-id S1 --source build.sh

    Prints the path of the file written (readable by its owner only). A missing or mistyped field
    exits 2 naming the field. --redact keeps secrets out of the landing file itself.
    """
    types = _cli_event_types()
    resolved = types.get(event_type)
    if resolved is None:
        raise click.BadParameter(
            f"unknown type {event_type!r}; use one of {', '.join(sorted(k for k in types if '_' not in k and '.' not in k))}",
            param_hint="TYPE",
        )
    payload = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--field")
        payload[key] = _field_value(value)
    target = landing_dir or pipeline_settings().landing_dir
    try:
        if resolved == "artifact_emit" and artifact_path is not None:
            from orchestration_pipeline.emit import EventWriter

            with EventWriter(target, source=source, session_id=session_id, redact=redact) as writer:
                writer.artifact(artifact_path, task_id=task_id, stage=stage, **payload)
            click.echo(f"artifact_emit for {artifact_path} written to {target}")
            return
        if artifact_path is not None:
            raise click.BadParameter("a path argument is only for the artifact type", param_hint="TYPE")
        from orchestration_pipeline.emit import emit_one

        written = emit_one(
            target,
            resolved,
            source=source,
            session_id=session_id,
            task_id=task_id,
            stage=stage,
            severity=severity,
            status=status,
            duration_ms=duration_ms,
            payload=payload,
            redact=redact,
        )
    except (ValueError, TypeError) as exc:
        raise click.UsageError(_naming_the_flag(str(exc))) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot write to {target}: {exc.strerror or exc} — check the landing directory"
        ) from None
    click.echo(str(written))
