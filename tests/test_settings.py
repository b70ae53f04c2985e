"""Settings: typed defaults, .env files, and one clear line for a bad value."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from background_tasks.settings import PROJECT_ROOT, QUEUES, VARIABLES, Settings, SettingsError, load_settings


def test_defaults_match_the_documented_values(tmp_path: Path) -> None:
    s = load_settings({}, env_file=tmp_path / "none")
    assert s.redis_host == "localhost"
    assert s.redis_port == 6379
    assert s.redis_db == 0
    assert s.data_dir == PROJECT_ROOT / "data"
    # (The default data dir may hold the password a `make run` generated: look at an empty one.)
    assert load_settings({"MIDAS_DATA_DIR": str(tmp_path)}, env_file=tmp_path / "none").broker_url == (
        "redis://localhost:6379/0"
    )
    assert s.log_dir == PROJECT_ROOT / "logs"
    assert s.flower_port == 5555
    assert s.streamlit_port == 8501
    assert s.chunk_size == 1000 and s.chunk_overlap == 200
    assert s.max_file_mb == 100
    assert s.result_backend_url.startswith("db+sqlite:///") and s.result_backend_url.endswith(".sqlite3")
    assert s.database_url_resolved.startswith("sqlite:///")
    assert s.worker_groups == (QUEUES,)
    assert s.task_soft_time_limit < s.task_time_limit < s.visibility_timeout
    assert s.concurrency >= 1


def test_postgres_is_used_when_configured(tmp_path: Path) -> None:
    s = load_settings(
        {"POSTGRES_HOST": "db.local", "POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p@ss", "POSTGRES_DB": "m"},
        env_file=tmp_path / "none",
    )
    assert s.uses_postgres
    assert s.database_url_resolved == "postgresql+psycopg://u:p%40ss@db.local:5432/m"
    assert s.result_backend_url == "db+postgresql+psycopg://u:p%40ss@db.local:5432/m"
    explicit = load_settings({"MIDAS_DATABASE_URL": "sqlite:////tmp/x.db"}, env_file=tmp_path / "none")
    assert explicit.database_url_resolved == "sqlite:////tmp/x.db"


def test_redis_password_is_quoted_into_the_url(tmp_path: Path) -> None:
    s = load_settings({"REDIS_PASSWORD": "a/b:c", "REDIS_DB": "3"}, env_file=tmp_path / "none")
    assert s.broker_url == "redis://:a%2Fb%3Ac@localhost:6379/3"


def test_the_launchers_generated_redis_password_is_used_unless_one_is_given(tmp_path: Path) -> None:
    env = {"MIDAS_DATA_DIR": str(tmp_path)}
    assert load_settings(env, env_file=tmp_path / "none").redis_password is None
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "password").write_text("generated-pw\n")
    s = load_settings(env, env_file=tmp_path / "none")
    assert s.redis_password == "generated-pw" and s.redis_password_generated
    assert s.broker_url == "redis://:generated-pw@localhost:6379/0"
    assert "REDIS_PASSWORD" not in s.as_env(), "children read it from its private file"
    given = load_settings({**env, "REDIS_PASSWORD": "mine"}, env_file=tmp_path / "none")
    assert given.redis_password == "mine" and not given.redis_password_generated


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("REDIS_PORT", "abc", "REDIS_PORT='abc' is invalid"),
        ("REDIS_PORT", "70000", "REDIS_PORT='70000' is invalid"),
        ("FLOWER_PORT", "-1", "FLOWER_PORT"),
        ("MIDAS_WORKER_POOL", "fibers", "MIDAS_WORKER_POOL"),
        ("MIDAS_CHUNK_SIZE", "0", "MIDAS_CHUNK_SIZE"),
        ("MIDAS_ALLOWED_ROOTS", "/definitely/not/here", "MIDAS_ALLOWED_ROOTS"),
        ("FLOWER_BASIC_AUTH", "nopassword", "FLOWER_BASIC_AUTH"),
        ("MIDAS_WORKER_GROUPS", "documents;bogus", "unknown queue 'bogus'"),
        ("MIDAS_DATABASE_URL", "not a url", "MIDAS_DATABASE_URL"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({name: value}, env_file=tmp_path / "none")
    assert fragment in str(info.value)


def test_time_limits_must_nest(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="MIDAS_VISIBILITY_TIMEOUT"):
        load_settings({"MIDAS_TASK_TIME_LIMIT": "700", "MIDAS_VISIBILITY_TIMEOUT": "600"}, env_file=tmp_path / "none")
    with pytest.raises(SettingsError, match="MIDAS_TASK_SOFT_TIME_LIMIT"):
        load_settings({"MIDAS_TASK_SOFT_TIME_LIMIT": "700"}, env_file=tmp_path / "none")


def test_extraction_must_end_before_the_soft_time_limit(tmp_path: Path) -> None:
    """Otherwise a parser child still runs when Celery stops its task (issue 12)."""
    with pytest.raises(SettingsError) as info:
        load_settings({"MIDAS_TASK_SOFT_TIME_LIMIT": "60", "MIDAS_TASK_TIME_LIMIT": "90"}, env_file=tmp_path / "none")
    assert str(info.value) == (
        "MIDAS_EXTRACT_TIMEOUT=300 must be below MIDAS_TASK_SOFT_TIME_LIMIT=60, "
        "or a parser still runs when its task is stopped"
    )
    with pytest.raises(SettingsError, match="MIDAS_EXTRACT_TIMEOUT=600 must be below"):
        load_settings({"MIDAS_EXTRACT_TIMEOUT": "600"}, env_file=tmp_path / "none")
    ok = load_settings({"MIDAS_EXTRACT_TIMEOUT": "599.5"}, env_file=tmp_path / "none")
    assert ok.extract_timeout < ok.task_soft_time_limit


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nREDIS_PORT=6390\nexport REDIS_HOST='redis.example'\nFLOWER_PORT=\"5600\"\n")
    s = load_settings({"FLOWER_PORT": "5700"}, env_file=env_file)
    assert (s.redis_port, s.redis_host, s.flower_port) == (6390, "redis.example", 5700)


def test_as_env_round_trips(tmp_path: Path) -> None:
    original = load_settings(
        {"MIDAS_WORKER_GROUPS": "documents,analysis;default,monitoring", "REDIS_PORT": "7000"},
        env_file=tmp_path / "none",
    )
    again = load_settings(original.as_env(), env_file=tmp_path / "none")
    assert again == original


def test_every_variable_is_one_typed_attribute_and_every_attribute_a_variable() -> None:
    hints = typing.get_type_hints(Settings)
    declared = {var.attr for var in VARIABLES}
    assert len(declared) == len(VARIABLES), "two variables share an attribute"
    assert len({var.env for var in VARIABLES}) == len(VARIABLES), "a variable is declared twice"
    attributes = {f.name for f in dataclasses.fields(Settings)} - {"redis_password_generated", "launch_file", "sources"}
    assert attributes == declared
    for var in VARIABLES:
        parsed = typing.get_type_hints(var.parse)["return"]
        assert hints[var.attr] == parsed, f"{var.attr} is {hints[var.attr]}, its parser gives {parsed}"


def test_settings_are_typed_frozen_and_have_no_catch_all(tmp_path: Path) -> None:
    def has_any(hint: object) -> bool:
        return hint is typing.Any or any(has_any(arg) for arg in typing.get_args(hint))

    assert not [name for name, hint in typing.get_type_hints(Settings).items() if has_any(hint)]
    assert "__getattr__" not in vars(Settings)
    s = load_settings({"MIDAS_MAX_FILE_MB": "1.5", "MIDAS_DATA_DIR": str(tmp_path)}, env_file=tmp_path / "none")
    with pytest.raises(AttributeError):
        s.no_such_setting  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_file_mb = 2  # type: ignore[misc]
    assert s.max_file_bytes == 1_572_864 and s.max_file_bytes is s.max_file_bytes
    assert s.broker_url is s.broker_url, "derived values are computed once"
    assert s.replace(redis_port=7000).broker_url == "redis://localhost:7000/0"


def test_generated_config_docs_are_up_to_date() -> None:
    """``python scripts/gen_config_docs.py`` would change nothing."""
    spec = importlib.util.spec_from_file_location("gen_config_docs", PROJECT_ROOT / "scripts" / "gen_config_docs.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (PROJECT_ROOT / ".env.example").read_text() == gen.env_example()
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert f"{gen.BEGIN}\n{gen.table()}\n{gen.END}" in readme


def test_env_example_and_readme_list_every_variable() -> None:
    example = (PROJECT_ROOT / ".env.example").read_text()
    readme = (PROJECT_ROOT / "README.md").read_text()
    for var in VARIABLES:
        assert f"{var.env}=" in example, f"{var.env} missing from .env.example"
        assert f"`{var.env}`" in readme, f"{var.env} missing from the README configuration table"
        default = var.default if var.default else ""
        if default:
            assert f"{var.env}={default}" in example, f".env.example shows a wrong default for {var.env}"


def test_a_bad_value_stops_the_worker_with_one_clear_line() -> None:
    env = {**os.environ, "REDIS_PORT": "abc"}
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "celery_config", "worker"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "MIDAS configuration error: REDIS_PORT='abc' is invalid" in proc.stderr
    assert "Traceback" not in proc.stderr
