"""The service launcher, run as users run it: ``python -m background_tasks.services``.

Everything runs on private ports with a throwaway data and log dir, so the user's
Redis (6379) and services are never touched. The lifecycle test starts real
redis-server, Celery worker, Beat and Flower processes and checks that ``stop``
leaves none of them behind.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from background_tasks.launcher.services import (
    PROJECT_ROOT,
    Launcher,
    Service,
    child_environment,
    http_status,
    install_autostart,
    pid_path,
    read_record,
    systemd_unit_text,
    uninstall_autostart,
)
from background_tasks.settings import load_settings
from tests.support import launcher, launcher_env, processes_mentioning, recorded_processes, stop_stack

#: real launcher stacks, workers or servers: deselected by -m "not integration"
pytestmark = pytest.mark.integration

FLOWER_AUTH = "midas:s3cret-pw"
REDIS_PASSWORD = 'redis pw "with" quotes'


def make_env(tmp: Path, **overrides: str) -> dict[str, str]:
    """A complete environment for the launcher: private ports, dirs under ``tmp``."""
    env = launcher_env(tmp, **overrides)
    assert env["REDIS_PORT"] != "6379"
    return env


def status_rows(env: dict[str, str]) -> dict[str, dict]:
    done = launcher(env, "status", "--json")
    assert done.returncode == 0, done.stderr
    return {row["service"]: row for row in json.loads(done.stdout)}


@pytest.fixture
def lifecycle_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = make_env(
        tmp_path,
        FLOWER_BASIC_AUTH=FLOWER_AUTH,
        REDIS_PASSWORD=REDIS_PASSWORD,
        MIDAS_WORKER_GROUPS="default,monitoring;documents,analysis",
    )
    yield env
    stop_stack(env, tmp_path)


def test_start_status_ping_no_duplicates_and_stop_leaves_nothing(lifecycle_env: dict[str, str], tmp_path: Path):
    env = lifecycle_env
    run_dir = tmp_path / "data" / "run"
    wanted = ["redis", "worker-1", "worker-2", "beat", "flower"]

    started = launcher(env, "start", "redis", "worker", "beat", "flower")
    assert started.returncode == 0, started.stdout + started.stderr
    for name in wanted:
        assert f"{name}" in started.stdout and "started (pid" in started.stdout

    # status: all up with PIDs and URLs; the table for people, JSON for this check.
    rows = status_rows(env)
    for name in wanted:
        assert rows[name]["state"] == "up", rows[name]
        assert psutil.pid_exists(rows[name]["pid"])
    assert rows["redis"]["url"] == f"redis://127.0.0.1:{env['REDIS_PORT']}"
    assert rows["flower"]["url"] == f"http://localhost:{env['FLOWER_PORT']}/flower/"
    assert rows["worker-1"]["note"] == "queues default,monitoring"
    table = launcher(env, "status")
    assert table.returncode == 0
    assert "SERVICE" in table.stdout and f"{rows['beat']['pid']}" in table.stdout

    # The PID file records what stop needs to recognise the process.
    record = read_record(run_dir / "worker-2.pid")
    assert record is not None
    assert psutil.Process(record["pid"]).create_time() == pytest.approx(record["create_time"], abs=0.01)
    command = record["command"]
    args = command[command.index("worker") + 1 :]
    options = dict(zip(args[::2], args[1::2], strict=True))
    expected = {"-Q": "documents,analysis", "-c": "1", "-P": "prefork", "-n": "worker-2@%h", "--loglevel": "INFO"}
    assert options == expected
    assert record["started_at"] and record["log"].endswith("worker-2.log")

    # Redis as specified: loopback only, data in the data dir, append-only.
    redis_proc = psutil.Process(rows["redis"]["pid"])
    assert {c.laddr.ip for c in redis_proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN} == {
        "127.0.0.1"
    }
    assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()

    # A real task through broker, worker and result backend.
    import celery_config

    app = celery_config.create_app(load_settings(env))
    try:
        result = app.send_task("background_tasks.system_tasks.ping", kwargs={"message": "launcher"}, queue="default")
        assert result.get(timeout=30)["message"] == "launcher"
    finally:
        app.close()

    # Flower behind basic auth: its pages, and its metrics and health check too.
    flower = f"http://127.0.0.1:{env['FLOWER_PORT']}/flower/"
    for url in (flower, flower + "metrics", flower + "healthcheck"):
        assert http_status(url) == 401, url
        assert http_status(url, "midas:wrong") == 401, url
        assert http_status(url, FLOWER_AUTH) == 200, url
    # No secret on a command line, where any local user can read it.
    for name in wanted:
        cmdline = " ".join(psutil.Process(rows[name]["pid"]).cmdline())
        assert FLOWER_AUTH not in cmdline and REDIS_PASSWORD not in cmdline
    import redis

    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=int(env["REDIS_PORT"]), socket_timeout=5).ping()

    # Logs: one file per service, through the pump.
    logs = tmp_path / "logs"
    assert "ready" in (logs / "worker-1.log").read_text()
    assert "Ready to accept connections" in (logs / "redis.log").read_text()

    # Starting again starts nothing new.
    pumps_before = {p.pid for p in processes_mentioning(str(logs))}
    again = launcher(env, "start", "redis", "worker", "beat", "flower")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already running") == len(wanted)
    assert {n: r["pid"] for n, r in status_rows(env).items() if n in wanted} == {n: rows[n]["pid"] for n in wanted}
    assert {p.pid for p in processes_mentioning(str(logs))} == pumps_before
    assert len(pumps_before) == len(wanted)

    # Stop: everything recorded, children included, is gone.
    assert all(read_record(p) is not None for p in run_dir.glob("*.pid")), "every PID file is readable"
    procs = recorded_processes(run_dir)
    assert len(procs) >= 2 * len(wanted) + 2  # services, pumps, and each prefork worker's pool child
    stopped = launcher(env, "stop")
    assert stopped.returncode == 0, stopped.stderr
    order = [line.split()[0] for line in stopped.stdout.splitlines() if line.strip()]
    assert order.index("flower") < order.index("beat") < order.index("worker-1") < order.index("redis")
    still = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not still, f"left running: {still}"
    leftovers = processes_mentioning(str(tmp_path), f"127.0.0.1:{env['REDIS_PORT']}", f"--port={env['FLOWER_PORT']}")
    assert not leftovers, leftovers
    assert not list(run_dir.glob("*.pid"))
    assert {r["state"] for n, r in status_rows(env).items() if n in wanted} == {"down"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_own_redis_gets_a_generated_password_and_every_file_is_private(tmp_path: Path):
    env = make_env(tmp_path, MIDAS_WORKER_GROUPS="default")
    data, logs = tmp_path / "data", tmp_path / "logs"
    # Left by an older version: a world-readable data folder and log.
    data.mkdir(mode=0o755)
    logs.mkdir(mode=0o755)
    (logs / "redis.log").write_text("old line\n")
    os.chmod(data, 0o755)
    os.chmod(logs / "redis.log", 0o644)
    try:
        started = launcher(env, "start", "redis", "worker")
        assert started.returncode == 0, started.stdout + started.stderr
        password_file = data / "redis" / "password"
        password = password_file.read_text().strip()
        assert len(password) >= 32

        # Any local user without the password is refused by the launched Redis.
        import redis

        anonymous = redis.Redis(host="127.0.0.1", port=int(env["REDIS_PORT"]), socket_timeout=5)
        with pytest.raises(redis.AuthenticationError):
            anonymous.lpush("default", "a task message from someone else")
        done = subprocess.run(
            ["redis-cli", "-p", env["REDIS_PORT"], "PING"], capture_output=True, text=True, timeout=10, check=False
        )
        assert "NOAUTH" in done.stdout + done.stderr

        # Every MIDAS client of this checkout finds it: settings, celery_config, the worker.
        settings = load_settings(env)
        assert settings.redis_password == password and settings.redis_password_generated
        import celery_config

        app = celery_config.create_app(settings)
        try:
            result = app.send_task("background_tasks.system_tasks.ping", kwargs={"message": "private"})
            assert result.get(timeout=30)["message"] == "private"
        finally:
            app.close()

        # Folders 0700, files 0600: data, run, Redis data and append-only file, logs, PID files.
        folders = [data, data / "run", data / "redis", data / "redis" / "appendonlydir", logs]
        assert {str(p): oct(mode(p)) for p in folders} == {str(p): "0o700" for p in folders}
        files = [
            password_file,
            data / "run" / "redis.conf",
            data / "run" / "redis.pid",
            data / "run" / "worker-1.pid",
            data / "run" / "launcher.lock",
            logs / "redis.log",
            logs / "worker-1.log",
            *(data / "redis" / "appendonlydir").iterdir(),
        ]
        assert {str(p): oct(mode(p)) for p in files} == {str(p): "0o600" for p in files}

        # The password is never logged or shown.
        status = launcher(env, "status")
        assert password not in status.stdout + started.stdout + started.stderr
        for log in logs.iterdir():
            assert password not in log.read_text(errors="replace"), log
        assert not any(password in " ".join(p.cmdline()) for p in recorded_processes(data / "run"))
    finally:
        stop_stack(env, tmp_path)


def test_stop_never_touches_a_process_it_did_not_start(tmp_path: Path):
    env = make_env(tmp_path)
    run_dir = tmp_path / "data" / "run"
    run_dir.mkdir(parents=True)
    stranger = subprocess.Popen(["sleep", "100"])
    try:
        # The PID is alive but belongs to another program (its start time differs), as after PID reuse.
        reused = {"pid": stranger.pid, "create_time": psutil.Process(stranger.pid).create_time() - 1000.0}
        (run_dir / "beat.pid").write_text(json.dumps(reused))
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        (run_dir / "flower.pid").write_text(json.dumps({"pid": gone.pid, "create_time": time.time()}))
        (run_dir / "worker-1.pid").write_text("{not json")

        rows = status_rows(env)
        assert rows["beat"]["state"] == "down" and "stale" in rows["beat"]["note"]

        done = launcher(env, "stop", "beat", "flower", "worker")
        assert done.returncode == 0, done.stderr
        assert "not touched" in done.stdout
        assert stranger.poll() is None, "the stranger process was signalled"
        assert psutil.Process(stranger.pid).status() != psutil.STATUS_ZOMBIE
        assert not list(run_dir.glob("*.pid")), "stale PID files are removed"
    finally:
        stranger.kill()
        stranger.wait()


def test_missing_redis_server_prints_how_to_install(tmp_path: Path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = make_env(tmp_path, PATH=str(empty_bin))
    done = launcher(env, "start", "redis")
    assert done.returncode != 0
    assert "redis-server is not installed" in done.stderr
    for hint in ("sudo apt-get install redis-server", "brew install redis", "Setup-Redis-Windows.ps1"):
        assert hint in done.stderr
    assert status_rows(env)["redis"]["state"] == "not installed"


def test_external_redis_is_used_and_never_stopped(redis_server, tmp_path: Path):
    env = make_env(tmp_path, REDIS_PORT=str(redis_server.port))
    done = launcher(env, "start", "redis")
    assert done.returncode == 0, done.stderr
    assert "external" in done.stdout
    assert not (tmp_path / "data" / "run" / "redis.pid").exists()
    assert not (tmp_path / "data" / "redis" / "password").exists(), "a Redis the user runs gets no password"
    assert status_rows(env)["redis"]["state"] == "external"
    stopped = launcher(env, "stop", "redis")
    assert stopped.returncode == 0 and "left alone" in stopped.stdout
    assert redis_server.client().ping()


def test_worker_without_redis_fails_with_reason(tmp_path: Path):
    env = make_env(tmp_path)
    done = launcher(env, "start", "worker")
    assert done.returncode == 1
    assert "Redis does not answer" in done.stderr and "worker-1.log" in done.stderr


def test_worker_that_dies_at_start_fails_with_its_log(redis_server, tmp_path: Path):
    env = make_env(tmp_path, REDIS_PORT=str(redis_server.port), MIDAS_WORKER_POOL="eventlet")
    done = launcher(env, "start", "worker", "--timeout", "30")
    assert done.returncode == 1
    assert "worker-1" in done.stderr and "FAILED" in done.stderr
    assert str(tmp_path / "logs" / "worker-1.log") in done.stderr
    assert "eventlet" in done.stderr  # the tail of the log says why
    assert not (tmp_path / "data" / "run" / "worker-1.pid").exists()
    assert not processes_mentioning(str(tmp_path / "logs"))


def test_unknown_service_is_a_usage_error(tmp_path: Path):
    done = launcher(make_env(tmp_path), "start", "postgres")
    assert done.returncode == 2
    assert "unknown service 'postgres'" in done.stderr


def test_services_whose_files_are_absent_are_skipped(tmp_path: Path):
    settings = load_settings(make_env(tmp_path))
    absent = Service("watcher", "watcher", (sys.executable, "-c", "pass"), requires=PROJECT_ROOT / "no_such_file.py")
    runner = Launcher(settings)
    outcome = runner.start_one(absent, {})
    assert outcome.ok and outcome.message.startswith("skipped")
    assert runner.status_one(absent)["state"] == "not installed"
    assert not (tmp_path / "data" / "run" / "watcher.pid").exists()


STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'\n"
    "subprocess.Popen([sys.executable, '-c', child])\n"
    "print('stubborn service up', flush=True)\n"
    "time.sleep(60)\n"
)


def test_stop_forces_a_service_that_ignores_sigterm(tmp_path: Path):
    settings = load_settings(make_env(tmp_path, MIDAS_SERVICE_STOP_TIMEOUT="1"))
    service = Service("watcher", "watcher", (sys.executable, "-c", STUBBORN))
    runner = Launcher(settings, timeout=20)
    started = runner.start_one(service, child_environment(settings))
    assert started.ok, started.message
    record = read_record(pid_path(settings, "watcher"))
    assert record is not None
    main = psutil.Process(record["pid"])
    procs = [main, *main.children(recursive=True), psutil.Process(record["pump_pid"])]
    assert len(procs) == 3

    stopped = runner.stop_one(service)
    assert stopped.ok and "forced" in stopped.message
    assert not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not pid_path(settings, "watcher").exists()
    assert "stubborn service up" in (tmp_path / "logs" / "watcher.log").read_text()


def test_logpump_rotates(tmp_path: Path):
    logfile = tmp_path / "svc.log"
    lines = [f"line {i:05d} " + "x" * 90 for i in range(400)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "background_tasks.launcher.logpump",
            str(logfile),
            "--max-bytes",
            "5000",
            "--backups",
            "2",
        ],
        input="\n".join(lines).encode() + b"\n",
        cwd=PROJECT_ROOT,
        check=True,
        timeout=30,
    )
    assert logfile.exists() and (tmp_path / "svc.log.1").exists() and (tmp_path / "svc.log.2").exists()
    assert not (tmp_path / "svc.log.3").exists()
    assert all(p.stat().st_size <= 5000 for p in tmp_path.glob("svc.log*"))
    assert logfile.read_text().splitlines()[-1] == lines[-1]


def test_systemd_unit_text(tmp_path: Path):
    root = tmp_path / "my project 100%"
    python = root / ".venv" / "bin" / "python"
    text = systemd_unit_text(python, root, stop_timeout=30, services=6)
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # keys are case-sensitive
    unit.read_string(text)
    service = unit["Service"]
    assert service["Type"] == "oneshot"
    assert service["RemainAfterExit"] == "yes"
    assert service["WorkingDirectory"] == str(root).replace("%", "%%")
    assert service["EnvironmentFile"] == "-" + str(root / ".env").replace("%", "%%")
    quoted = '"' + str(python).replace("%", "%%") + '"'
    assert service["ExecStart"] == f"{quoted} -m background_tasks.services start"
    assert service["ExecStop"] == f"{quoted} -m background_tasks.services stop"
    assert int(service["TimeoutStopSec"]) > 30 * 6
    assert unit["Install"]["WantedBy"] == "default.target"

    # systemd itself reads it back to the real paths (where systemd is installed, as on Debian CI).
    if shutil.which("systemd-analyze"):
        python.parent.mkdir(parents=True)
        python.symlink_to(sys.executable)
        unit_file = tmp_path / "midas.service"
        unit_file.write_text(text)
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True, timeout=60, check=False
        )
        assert verify.returncode == 0, verify.stderr


def test_install_and_uninstall_autostart_write_the_unit(tmp_path: Path):
    settings = load_settings(make_env(tmp_path))
    unit_dir = tmp_path / "systemd" / "user"
    assert install_autostart(settings, unit_dir=unit_dir, use_systemctl=False) == 0
    unit = unit_dir / "midas.service"
    assert f"WorkingDirectory={PROJECT_ROOT}" in unit.read_text()
    assert f"ExecStart={sys.executable} -m background_tasks.services start" in unit.read_text()
    assert uninstall_autostart(unit_dir=unit_dir, use_systemctl=False) == 0
    assert not unit.exists()
