"""``python -m orchestration_pipeline.cli COMMAND ...``: the console script, without its wrapper."""

from orchestration_pipeline.cli import main

main(prog_name="orchestration-pipeline")
