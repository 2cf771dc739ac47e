from orchestration_pipeline_tests.restore._support import scratch_janitor  # noqa: F401 - autouse fixture
