"""``landing_zone_sensor``: request an ingestion run (ingest, then project) when new files land;
``nightly_ingest_catch_up`` runs it every night whatever the sensor saw."""

import json

import dagster as dg

from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.projection.assets import task_projection
from orchestration_pipeline.defs.resources import PipelineHome
from orchestration_pipeline.lib.ingestion.landing import UnreadableCursor, load_cursor, scan_landing

# The projection is folded in by the same run, right after the files commit, so a task event
# reaches task_projection on ingest (not when the lag sensor or the nightly run next comes by).
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(raw_events, task_projection),
    description="Ingest new landing files, then fold their task events into task_projection.",
)

# The sensor reacts within a minute; this catch-up makes sure nothing waits if the sensor was off.
nightly_ingest_catch_up = dg.ScheduleDefinition(
    name="nightly_ingest_catch_up",
    job=ingest_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Ingest whatever waits in the landing directory every night at 02:00 UTC (the sensor's backstop).",
)


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_zone_sensor(
    context: dg.SensorEvaluationContext, pipeline_home: PipelineHome
) -> dg.SensorResult | dg.SkipReason:
    """Cursor: the newest change time seen and the files at that instant (renames set ctime).

    An unreadable cursor (garbage, an older format) is logged and treated as none: a full rescan
    is safe because ingestion deduplicates by file hash and event id.
    """
    landing = pipeline_home.landing_dir
    try:
        cursor = load_cursor(context.cursor)
        reset = False
    except UnreadableCursor as exc:
        context.log.warning(
            f"landing_zone_sensor: cursor reset, rescanning {landing} from scratch: unreadable cursor "
            f"{context.cursor[:200]!r}: {exc}"
        )
        cursor, reset = None, True
    scan = scan_landing(landing, cursor)
    if not scan.new_files:
        skip = f"no new files in {landing}"
        # store the reset cursor, or the warning would repeat on every tick
        return (
            dg.SensorResult(skip_reason=skip, cursor=json.dumps(scan.cursor))
            if reset
            else dg.SkipReason(skip)
        )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=scan.run_key, tags={"landing_files": str(len(scan.new_files))})],
        cursor=json.dumps(scan.cursor),
    )
