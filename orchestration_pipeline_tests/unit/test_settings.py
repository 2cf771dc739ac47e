from pathlib import Path

import pytest

from orchestration_pipeline.errors import ConfigError
from orchestration_pipeline.lib.db import redact_dsn
from orchestration_pipeline.settings import load_settings


def test_defaults_use_embedded_services(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings({})
    assert s.orch_home == (tmp_path / ".orch").resolve()
    assert s.embedded_postgres and s.embedded_qdrant
    assert s.pg_dir == s.orch_home / "pg"
    assert s.qdrant_path == s.orch_home / "qdrant"


def test_server_settings_are_read(tmp_path):
    s = load_settings(
        {
            "ORCH_HOME": str(tmp_path),
            "ORCH_DATABASE_URL": "postgresql://u:p@db:5432/orch",
            "TASKS_DATABASE_URL": "postgresql://u:p@db:5432/tasks",
            "QDRANT_URL": "http://qdrant:6333",
            "QDRANT_API_KEY": "k",
        }
    )
    assert not s.embedded_postgres and not s.embedded_qdrant
    assert s.tasks_database_url.endswith("/tasks")
    assert s.qdrant_api_key == "k"


def test_empty_values_count_as_unset(tmp_path):
    s = load_settings({"ORCH_HOME": str(tmp_path), "ORCH_DATABASE_URL": "  ", "QDRANT_URL": ""})
    assert s.embedded_postgres and s.embedded_qdrant


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"ORCH_DATABASE_URL": "postgresql://x/y"}, "TASKS_DATABASE_URL"),
        ({"TASKS_DATABASE_URL": "postgresql://x/y"}, "ORCH_DATABASE_URL"),
        ({"ORCH_DATABASE_URL": "mysql://x/y", "TASKS_DATABASE_URL": "postgresql://x/t"}, "ORCH_DATABASE_URL"),
    ],
)
def test_half_or_wrong_configuration_names_the_fix(env, fragment, tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings({"ORCH_HOME": str(tmp_path), **env})
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_settings_module_reads_nothing_at_import():
    source = Path("orchestration_pipeline/settings.py").read_text()
    module_level = [line for line in source.splitlines() if line.startswith(("os.environ", "os.getenv"))]
    assert module_level == []


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://svc:TopS3cret@db:5432/x",
        "postgresql://svc:p@TopS3cret@db/x",  # an @ inside the password
        "postgresql://svc:p?TopS3cret#@db/x",  # "?" and "#" too
        "postgresql://svc@db:5499/x?password=TopS3cret",
        "postgresql://db/x?sslmode=require&password=TopS3cret&application_name=a",
        "host=db port=5499 user=svc password=TopS3cret dbname=x",
        "host=db password='Top S3cret' dbname=x",
    ],
)
def test_messages_never_show_a_database_password(dsn):
    shown = redact_dsn(dsn)
    assert "TopS3cret" not in shown and "Top S3cret" not in shown
    assert "db" in shown  # the rest stays, to say which server


def test_a_key_value_connection_string_is_refused_without_echoing_it(tmp_path):
    env = {
        "ORCH_HOME": str(tmp_path),
        "ORCH_DATABASE_URL": "host=db user=svc password=TopS3cret dbname=x",
        "TASKS_DATABASE_URL": "postgresql://db/tasks",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert "TopS3cret" not in str(info.value)
    assert "postgresql://user:password@host:port/dbname" in str(info.value)
