"""A second shell talks to the MIDAS the first one started (issue 18, item 2).

``REDIS_PORT=6390 make run`` in one shell, then ``midas search`` in another without
the exports, used to reach another Redis and another data dir. ``start`` now writes
the launch file; every MIDAS command of the checkout reads it under its own
environment and over ``.env``, and ``status`` says where its settings came from.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from background_tasks.launcher.launch_file import describe_sources, remove_launch_file, write_launch_file
from background_tasks.settings import DEFAULT_LAUNCH_FILE, ENVIRONMENT, PROJECT_ROOT, SettingsError, load_settings
from tests.support import launcher, launcher_env, stop_stack

#: the variables a shell that did not start MIDAS lacks
STACK_PREFIXES = ("MIDAS_", "REDIS_", "POSTGRES_", "FLOWER_", "STREAMLIT_")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_launch_file_sits_between_the_environment_and_env_file(tmp_path: Path) -> None:
    launch, env_file = tmp_path / "launched.env", tmp_path / ".env"
    launch.write_text('REDIS_PORT="6390"\nFLOWER_PORT="5590"\n')
    env_file.write_text("REDIS_PORT=6400\nFLOWER_PORT=5600\nSTREAMLIT_PORT=8600\n")
    s = load_settings({"FLOWER_PORT": "5700"}, env_file=env_file, launch_file=launch)
    assert (s.flower_port, s.redis_port, s.streamlit_port, s.redis_db) == (5700, 6390, 8600, 0)
    assert dict(s.sources) == {"FLOWER_PORT": ENVIRONMENT, "REDIS_PORT": str(launch), "STREAMLIT_PORT": str(env_file)}
    line = describe_sources(s)
    assert line.startswith(f"settings from the environment (FLOWER_PORT); the launch file {launch} (REDIS_PORT); ")
    assert f"{env_file} (STREAMLIT_PORT); defaults for the rest; data dir {PROJECT_ROOT / 'data'}" in line

    launch.write_text('REDIS_PORT="not a port"\n')
    with pytest.raises(SettingsError, match=f"REDIS_PORT='not a port' is invalid: not a number \\(in {launch}\\)"):
        load_settings({}, env_file=env_file, launch_file=launch)


def test_where_the_launch_file_is_looked_for(tmp_path: Path) -> None:
    none = tmp_path / "none"
    # A command of the checkout: .midas/launched.env, unless MIDAS_LAUNCH_FILE names another or /dev/null.
    assert load_settings({"MIDAS_ENV_FILE": str(none)}).launch_file == DEFAULT_LAUNCH_FILE
    assert DEFAULT_LAUNCH_FILE == PROJECT_ROOT / ".midas" / "launched.env"
    assert ".midas/" in (PROJECT_ROOT / ".gitignore").read_text()
    named = load_settings({"MIDAS_LAUNCH_FILE": str(tmp_path / "l.env"), "MIDAS_ENV_FILE": str(none)})
    assert named.launch_file == tmp_path / "l.env"
    assert load_settings({"MIDAS_LAUNCH_FILE": os.devnull, "MIDAS_ENV_FILE": str(none)}).launch_file is None
    # A caller that names its .env file chose its files: no launch file unless it names one too.
    assert load_settings({}, env_file=none).launch_file is None
    # The test session itself never reads the checkout's launch file.
    assert os.environ["MIDAS_LAUNCH_FILE"] == os.devnull


def test_start_writes_what_its_shell_exported_never_secrets_nor_env_file_values(tmp_path: Path) -> None:
    launch, env_file = tmp_path / "run" / "launched.env", tmp_path / ".env"
    env_file.write_text("MIDAS_MAX_FILE_MB=12\nMIDAS_SMTP_PASSWORD=from-env-file\n")
    exported = {
        "REDIS_PORT": "6390",
        "MIDAS_DATA_DIR": str(tmp_path / "data"),
        "MIDAS_WORKER_GROUPS": "documents,analysis;default,monitoring",
        "REDIS_PASSWORD": "redis-secret-1",
        "FLOWER_BASIC_AUTH": "admin:flower-secret-2",
        "MIDAS_DASHBOARD_PASSWORD": "dashboard-secret-3",
        "MIDAS_DATABASE_URL": f"sqlite:///{tmp_path / 'db-secret-4.sqlite3'}",
        "MIDAS_ALERT_WEBHOOK_URL": "https://hooks.example/secret-5",
    }
    settings = load_settings(exported, env_file=env_file, launch_file=launch)
    done = write_launch_file(settings)
    assert done is not None
    path, written = done
    assert path == launch and written == ["REDIS_PORT", "MIDAS_DATA_DIR", "MIDAS_WORKER_GROUPS"]
    text = launch.read_text()
    for secret in ("secret-1", "secret-2", "secret-3", "secret-4", "secret-5", "from-env-file"):
        assert secret not in text
    assert "MIDAS_MAX_FILE_MB" not in text, ".env is read by every command itself"
    assert "Not written (secrets; put them in .env for every shell): REDIS_PASSWORD, " in text
    if os.name == "posix":
        assert (mode(launch), mode(launch.parent)) == (0o600, 0o700)

    # Another shell: none of the exports, the same stack (secrets from its own .env or environment).
    other = load_settings({}, env_file=tmp_path / "none", launch_file=launch)
    assert (other.redis_port, other.data_dir, other.worker_groups) == (
        settings.redis_port,
        settings.data_dir,
        settings.worker_groups,
    )
    assert other.redis_password is None and other.flower_basic_auth is None

    # stop removes it only when it describes the stack being stopped.
    elsewhere = load_settings(
        {"MIDAS_DATA_DIR": str(tmp_path / "other")}, env_file=tmp_path / "none", launch_file=launch
    )
    assert remove_launch_file(elsewhere) is None and launch.is_file()
    assert remove_launch_file(other) == launch and not launch.exists()


CLIENT = """
import json
from background_tasks.settings import get_settings
from background_tasks.system_tasks import ping
s = get_settings()
reply = ping.delay("from the other shell").get(timeout=60)
print(json.dumps({"port": s.redis_port, "data_dir": str(s.data_dir), "generated": s.redis_password_generated,
                  "message": reply["message"]}))
"""


@pytest.mark.integration
def test_a_shell_without_the_exports_talks_to_the_midas_that_was_started(tmp_path: Path) -> None:
    env = launcher_env(tmp_path, MIDAS_WORKER_GROUPS="default,monitoring", MIDAS_DASHBOARD_PASSWORD="gate-secret-42")
    launch = Path(env["MIDAS_LAUNCH_FILE"])
    # The other shell: none of the first shell's MIDAS variables; only where this checkout's launch
    # file is (the tests must not write the real one) and no .env.
    other = {k: v for k, v in os.environ.items() if not k.startswith(STACK_PREFIXES)}
    other.update({"MIDAS_LAUNCH_FILE": str(launch), "MIDAS_ENV_FILE": os.devnull})
    try:
        started = launcher(env, "start", "redis", "worker")
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"written to {launch}: every MIDAS command here uses them" in started.stdout
        assert f"MIDAS_DASHBOARD_PASSWORD not written to {launch} (a secret)" in started.stdout
        assert "gate-secret-42" not in launch.read_text() + started.stdout

        # A client there reaches the same Redis and, through the result backend, the same data dir.
        client = subprocess.run(
            [sys.executable, "-c", CLIENT], cwd=PROJECT_ROOT, env=other, capture_output=True, text=True, timeout=120
        )
        assert client.returncode == 0, client.stderr
        seen = json.loads(client.stdout.strip().splitlines()[-1])
        assert seen == {
            "port": int(env["REDIS_PORT"]),
            "data_dir": env["MIDAS_DATA_DIR"],
            "generated": True,  # the password the launcher generated, found in that data dir
            "message": "from the other shell",
        }

        # start there finds the same services running, and says whose values it used.
        again = launcher(other, "start", "redis", "worker")
        assert again.returncode == 0 and again.stdout.count("already running") == 2, again.stdout + again.stderr
        assert f"came from {launch} (an earlier start)" in again.stdout
        assert "REDIS_PORT" in launch.read_text() and "gate-secret-42" not in launch.read_text()

        # status there: the running services, and where its settings came from.
        status = launcher(other, "status")
        assert status.returncode == 0, status.stderr
        first = status.stdout.splitlines()[0]
        assert first.startswith(f"settings from the launch file {launch} (REDIS_HOST, REDIS_PORT, "), first
        assert first.endswith(f"; defaults for the rest; data dir {env['MIDAS_DATA_DIR']}"), first
        rows = {row["service"]: row for row in json.loads(launcher(other, "status", "--json").stdout)}
        assert (rows["redis"]["state"], rows["worker-1"]["state"]) == ("up", "up")

        # stop there stops that stack and removes the file: plain commands are back on the defaults.
        stopped = launcher(other, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"removed {launch}" in stopped.stdout and not launch.exists()
        rows = {row["service"]: row for row in json.loads(launcher(env, "status", "--json").stdout)}
        assert (rows["redis"]["state"], rows["worker-1"]["state"]) == ("down", "down")
        assert load_settings(other).redis_port == 6379
    finally:
        stop_stack(env, tmp_path)
