"""``landing_zone_sensor``: request an ingestion run when new files land."""

import json

import dagster as dg

from orchestration_pipeline.defs.ingestion.assets import raw_events
from orchestration_pipeline.defs.resources import PipelineHome
from orchestration_pipeline.lib.landing import scan_landing

ingest_job = dg.define_asset_job(
    "ingest_job", selection=dg.AssetSelection.assets(raw_events), description="Ingest new landing files."
)


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_zone_sensor(
    context: dg.SensorEvaluationContext, pipeline_home: PipelineHome
) -> dg.SensorResult | dg.SkipReason:
    """Cursor: the newest change time seen and the files at that instant (renames set ctime)."""
    landing = pipeline_home.landing_dir
    cursor = json.loads(context.cursor) if context.cursor else None
    scan = scan_landing(landing, cursor)
    if not scan.new_files:
        return dg.SkipReason(f"no new files in {landing}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=scan.run_key, tags={"landing_files": str(len(scan.new_files))})],
        cursor=json.dumps(scan.cursor),
    )
