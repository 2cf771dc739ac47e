"""The ``orchestration-pipeline`` console script: one module per command group, each a thin call into lib/."""

from __future__ import annotations

import click

from orchestration_pipeline.cli import (
    alerts,
    audit,
    db,
    decisions,
    demo,
    emit,
    index,
    ingest,
    projection,
    quarantine,
    restore,
    retention,
    run,
    serve,
    services,
)
from orchestration_pipeline.cli._common import ErrorReportingGroup


@click.group(
    cls=ErrorReportingGroup,
    # up to 120 columns on a wide terminal; narrower ones wrap (ErrorReportingGroup never cuts a summary)
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)
@click.version_option(package_name="orchestration-pipeline")
def main() -> None:
    """Turn orchestration and agent event logs into durable, verified state.

    With no database settings, everything runs on an embedded PostgreSQL under
    $ORCH_HOME (default ./.orch). Set ORCH_DATABASE_URL and TASKS_DATABASE_URL to use servers.
    """


for _command in (
    services.up,
    services.down,
    services.dev,
    run.run,
    db.db,
    ingest.ingest,
    projection.projection,
    quarantine.quarantine,
    audit.audit,
    decisions.policy,
    decisions.decisions,
    index.index,
    index.search,
    retention.retention,
    retention.archive,
    serve.serve,
    alerts.alerts,
    restore.backup,
    restore.drill,
    emit.events,
    emit.emit,
    demo.demo,
):
    main.add_command(_command)


if __name__ == "__main__":
    main()
