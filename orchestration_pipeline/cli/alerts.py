"""``alerts list|show|ack|scan|deliver``: thin calls into lib.alerting (and, for ``scan``, the sensors)."""

from __future__ import annotations

import json
import os
import sys

import click

from orchestration_pipeline.cli._common import identity_options, orchestration_dsn, pipeline_settings, who
from orchestration_pipeline.lib.wording import plural

_ROW = "{:>5}  {:<16}  {:<12}  {:<8}  {}"


@click.group()
def alerts() -> None:
    """Alerts on failed asset checks, stale assets and failed runs: list, inspect, acknowledge.

    The Dagster sensors asset_check_alert_sensor, asset_freshness_alert_sensor and
    run_failure_alert_sensor raise one alert per failure streak, resolve it when the source passes
    again, and send both to ORCH_ALERT_WEBHOOK_URL (Slack-compatible JSON) and stderr. See
    docs/runbooks/alerting.md.
    """


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


@alerts.command("list")
@click.option(
    "--open", "open_only", is_flag=True, help="Only open alerts: neither acknowledged nor resolved."
)
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="At most this many."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def alerts_list(open_only: bool, limit: int, as_json: bool) -> None:
    """Alerts, newest first: status, severity, source and the one line that explains each."""
    from orchestration_pipeline.lib.alerting.store import list_alerts
    from orchestration_pipeline.lib.db import connection

    with connection(orchestration_dsn()) as conn:
        rows = list_alerts(conn, open_only=open_only, limit=limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    if not rows:
        click.echo("no open alerts" if open_only else "no alerts")
        return
    click.echo(_ROW.format("ID", "RAISED (UTC)", "STATUS", "SEVERITY", "SOURCE / MESSAGE"))
    for r in rows:
        repeats = f" (failed {r['occurrences']} times)" if r["occurrences"] > 1 else ""
        click.echo(_ROW.format(r["alert_id"], _when(r["raised_at"]), r["status"], r["severity"], r["source"]))
        click.echo(f"{'':>5}  {r['message']}{repeats}")
        if r["runbook"] or r["link_path"]:
            click.echo(f"{'':>5}  runbook {r['runbook'] or '-'}  ·  Dagster UI {r['link_path'] or '-'}")


@alerts.command("show")
@click.argument("alert_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def alerts_show(alert_id: int, as_json: bool) -> None:
    """One alert in full: its details (the check's metadata), notices and every webhook attempt."""
    from orchestration_pipeline.lib.alerting.store import get_alert
    from orchestration_pipeline.lib.db import connection

    with connection(orchestration_dsn()) as conn:
        alert = get_alert(conn, alert_id)
    if as_json:
        click.echo(json.dumps(alert, default=str))
        return
    for key in ("alert_id", "status", "severity", "source", "message", "raised_at", "failed_at", "last_failed_at",
                "occurrences", "resolved_at", "resolution", "acknowledged_at", "acknowledged_by", "ack_reason",
                "run_id", "link_path", "runbook"):  # fmt: skip
        if alert[key] is not None:
            click.echo(f"{key:<16} {alert[key]}")
    click.echo(f"{'details':<16} {json.dumps(alert['details'], default=str, sort_keys=True)}")
    for notice in alert["notices"]:
        click.echo(f"notice {notice['notice_id']}: {notice['kind']} -> {notice['state']}")
    for a in alert["attempts"]:
        status = a["http_status"] if a["http_status"] is not None else "-"
        click.echo(
            f"  attempt {a['attempt']} of notice {a['notice_id']} at {_when(a['attempted_at'])}: {a['outcome']} "
            f"(HTTP {status}, {a['duration_ms']} ms, {a['target']}){': ' + a['error'] if a['error'] else ''}"
        )


@alerts.command("ack")
@click.argument("alert_id", type=int)
@click.option(
    "--reason", required=True, help="What you are doing about it (kept with the alert and audited)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@identity_options
def alerts_ack(alert_id: int, reason: str, as_json: bool, actor: str | None, request_id: str | None) -> None:
    """Acknowledge an alert: record who is on it and why (audited). It stays until it resolves."""
    from orchestration_pipeline.lib.alerting.store import acknowledge
    from orchestration_pipeline.lib.db import connection

    actor, request_id = who(actor, request_id)
    with connection(orchestration_dsn()) as conn:
        done = acknowledge(conn, alert_id, reason=reason, actor=actor, request_id=request_id)
    if as_json:
        click.echo(json.dumps(done, default=str))
        return
    click.echo(
        f"alert {alert_id} acknowledged by {done['acknowledged_by']} at {_when(done['acknowledged_at'])} UTC"
    )


@alerts.command("scan")
@click.option(
    "--lookback-hours",
    default=24.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Read the check evaluations, freshness changes and run failures of this many past hours.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def alerts_scan(lookback_hours: float, as_json: bool) -> None:
    """Run the alerting sensors once, now, against the Dagster instance under $ORCH_HOME/dagster.

    What the daemon of 'orchestration-pipeline dev' does every 30 s, for when it is not running (a
    run that materialized and stopped, cron). Reading an event again changes nothing, so scanning
    never raises an alert twice.
    """
    import dagster as dg

    from orchestration_pipeline.definitions import defs
    from orchestration_pipeline.defs.alerting.resources import AlertSettings
    from orchestration_pipeline.defs.alerting.sensors import scan_once
    from orchestration_pipeline.defs.resources import OrchestrationDatabase
    from orchestration_pipeline.lib.services import bring_up, pipeline_environment, prepare_dagster_home

    settings = pipeline_settings()
    services = bring_up(settings, apply_migrations=False)
    prepare_dagster_home(settings)
    os.environ.update(pipeline_environment(services))  # dagster.yaml reads its storage URL from here
    database = OrchestrationDatabase(dsn=services.urls.orchestration)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        summaries = scan_once(
            instance, defs(), database, AlertSettings(initial_lookback_hours=lookback_hours)
        )
    if as_json:
        click.echo(json.dumps(summaries))
        return
    for name, summary in summaries.items():
        click.echo(f"{name}: {summary}")


@alerts.command("deliver")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="First put failed notices back for a new round (after fixing the webhook).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def alerts_deliver(retry_failed: bool, as_json: bool) -> None:
    """Deliver the pending notices now, to ORCH_ALERT_WEBHOOK_URL and stderr (the sensors do this
    every tick). Exits 1 when a notice could not be delivered."""
    from orchestration_pipeline.lib.alerting import delivery
    from orchestration_pipeline.lib.db import connection

    settings = pipeline_settings()
    webhook = delivery.WebhookConfig(settings.alert_webhook_url) if settings.alert_webhook_url else None
    with connection(orchestration_dsn()) as conn:
        requeued = delivery.retry_failed(conn) if retry_failed else 0
        report = delivery.deliver_pending(conn, webhook, deadline_s=300.0)
    body = {"requeued": requeued, **report.__dict__}
    if as_json:
        click.echo(json.dumps(body))
    else:
        if retry_failed:
            click.echo(f"{plural(requeued, 'failed notice')} put back for delivery")
        click.echo(f"notices: {report.summary()}")
        for error in report.errors[-5:]:
            click.echo(f"  {error}", err=True)
    if report.failed or report.left_pending:
        sys.exit(1)
