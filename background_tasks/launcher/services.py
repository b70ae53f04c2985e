"""Start, stop and inspect the MIDAS services on Linux, macOS and Windows.

``python -m background_tasks.services start|stop|status|restart [service ...]``

Services, in start order: ``redis`` (only when nothing answers at the
configured local port), one Celery ``worker-N`` per worker group, ``beat``,
``flower``, ``watcher`` and ``dashboard`` (the last two only once their files
exist). Each service runs detached from the launcher, writes through a
``logpump`` into ``<log_dir>/<name>.log`` (rotated), and is recorded in
``<run_dir>/<name>.pid`` as JSON with its process creation time, so ``stop``
only ever signals a process this launcher started: a PID file whose process
is gone or whose PID now belongs to another program is removed untouched.

``install-autostart`` / ``uninstall-autostart`` register a systemd user unit
(Linux) or a Task Scheduler logon task (Windows) that runs ``start``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from background_tasks.launcher.private_files import (
    append_private_text,
    open_private,
    private_dir,
    service_spawn_kwargs,
    write_private_text,
)
from background_tasks.launcher.redis_service import (
    REDIS_INSTALL_HINT,
    find_redis_server,
    password_origin,
    redis_command,
    redis_probe,
    redis_url,
    with_redis_password,
    write_redis_conf,
)
from background_tasks.ops.dashboard_gate import sign_in
from background_tasks.settings import PROJECT_ROOT, Settings, settings_or_exit

log = logging.getLogger(__name__)

IS_WINDOWS = platform.system() == "Windows"

KINDS = ("redis", "worker", "beat", "flower", "watcher", "dashboard")
WATCHER_FILE = PROJECT_ROOT / "background_tasks" / "file_watcher.py"
DASHBOARD_FILE = PROJECT_ROOT / "Streamlit_Task_Monitoring.py"
CELERY_CONFIG_FILE = PROJECT_ROOT / "celery_config.py"

#: Seconds a service without a readiness probe (beat, watcher) must stay alive to count as started.
GRACE_SECONDS = 3.0
DEFAULT_START_TIMEOUT = 60.0
PUMP_EXIT_TIMEOUT = 5.0

UNIT_NAME = "midas.service"
WINDOWS_TASK_NAME = "MIDAS Services"


class LauncherError(Exception):
    """A request the launcher cannot carry out; the message is the one line shown to the user."""


# --------------------------------------------------------------------------
# Service definitions
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    """One service: its name (also the log and PID file stem), kind and command line."""

    name: str
    kind: str
    command: tuple[str, ...]
    url: str | None = None
    requires: Path | None = None
    node: str | None = None  # Celery node name template for workers, e.g. worker-1@%h
    queues: tuple[str, ...] = ()


def build_services(settings: Settings, python: str | None = None) -> list[Service]:
    """Every service in start order, with the exact command each one runs."""
    py = python or sys.executable
    celery = (py, "-m", "celery", "-A", "celery_config")
    services = [Service("redis", "redis", redis_command(settings), url=redis_url(settings))]
    for index, queues in enumerate(settings.worker_groups, 1):
        name = f"worker-{index}"
        node = f"{name}@%h"
        services.append(
            Service(
                name,
                "worker",
                (
                    *celery,
                    "worker",
                    "-Q",
                    ",".join(queues),
                    "-c",
                    str(settings.concurrency),
                    "-P",
                    settings.pool,
                    "-n",
                    node,
                    "--loglevel",
                    "INFO",
                ),
                node=node,
                queues=tuple(queues),
            )
        )
    services.append(
        Service(
            "beat",
            "beat",
            (
                *celery,
                "beat",
                "--schedule",
                str(settings.run_dir / "celerybeat-schedule"),
                "--pidfile=",
                "--loglevel",
                "INFO",
            ),
        )
    )
    # Flower's basic auth goes in the environment (FLOWER_BASIC_AUTH, which Flower reads
    # itself), not on the command line, where every local user could read it with ps.
    # background_tasks.flower_app is Celery's flower command with /metrics and /healthcheck
    # behind that auth too.
    services.append(
        Service(
            "flower",
            "flower",
            (py, "-m", "background_tasks.flower_app", "--address=127.0.0.1", f"--port={settings.flower_port}"),
            url=f"http://localhost:{settings.flower_port}/flower",
        )
    )
    services.append(Service("watcher", "watcher", (py, "-m", "background_tasks.file_watcher"), requires=WATCHER_FILE))
    services.append(
        Service(
            "dashboard",
            "dashboard",
            # Streamlit behind the password gate, on 127.0.0.1:STREAMLIT_PORT with the upload cap.
            (py, "-m", "background_tasks.dashboard_app"),
            url=f"http://localhost:{settings.streamlit_port}",
            requires=DASHBOARD_FILE,
        )
    )
    return services


def select_services(services: Sequence[Service], names: Sequence[str]) -> list[Service]:
    """The services named (by name such as ``worker-2`` or kind such as ``worker``), in start order."""
    if not names:
        return list(services)
    wanted: set[str] = set()
    for name in names:
        matches = [s.name for s in services if name in (s.name, s.kind)]
        if not matches:
            known = ", ".join(dict.fromkeys([*KINDS, *(s.name for s in services)]))
            raise LauncherError(f"unknown service {name!r} (known: {known})")
        wanted.update(matches)
    return [s for s in services if s.name in wanted]


# --------------------------------------------------------------------------
# PID files
# --------------------------------------------------------------------------


def pid_path(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def log_path(settings: Settings, name: str) -> Path:
    return settings.log_dir / f"{name}.log"


def read_record(path: Path) -> dict[str, Any] | None:
    """The JSON record of a PID file; None when missing. A corrupt file counts as stale."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": None, "corrupt": True}
    return data if isinstance(data, dict) else {"pid": None, "corrupt": True}


def write_record(path: Path, record: dict[str, Any]) -> None:
    private_dir(path.parent)
    write_private_text(path, json.dumps(record, indent=2))


def _same_process(proc: psutil.Process, create_time: Any) -> bool:
    try:
        return isinstance(create_time, int | float) and abs(proc.create_time() - float(create_time)) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def live_process(pid: Any, create_time: Any) -> psutil.Process | None:
    """The process if ``pid`` still runs and is the one started at ``create_time``; else None."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if not _same_process(proc, create_time) or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def record_process(record: dict[str, Any] | None) -> psutil.Process | None:
    if not record:
        return None
    return live_process(record.get("pid"), record.get("create_time"))


# --------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------


def http_status(url: str, basic_auth: str | None = None, timeout: float = 2.0, cookie: str | None = None) -> int | None:
    """HTTP status of a GET on a local URL; None when nothing answers."""
    request = urllib.request.Request(url)
    if basic_auth:
        request.add_header("Authorization", "Basic " + b64encode(basic_auth.encode()).decode())
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


class _ControlClient:
    """A Celery app for the control API (worker pings, Windows warm shutdown), built once per run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            if str(PROJECT_ROOT) not in sys.path:
                sys.path.insert(0, str(PROJECT_ROOT))
            import celery_config

            self._app = celery_config.create_app(self.settings)
        return self._app

    @staticmethod
    def nodename(template: str) -> str:
        from celery.utils.nodenames import host_format

        return host_format(template)

    def ping(self, template: str, timeout: float = 1.0) -> bool:
        replies = self.app.control.ping(destination=[self.nodename(template)], timeout=timeout)
        return bool(replies)

    def shutdown(self, template: str) -> None:
        self.app.control.shutdown(destination=[self.nodename(template)])

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None


# --------------------------------------------------------------------------
# Starting
# --------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one service; ``ok`` False makes the launcher exit non-zero."""

    name: str
    ok: bool
    message: str
    details: list[str] = field(default_factory=list)


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment for services: this process's environment with the settings on top."""
    env = os.environ.copy()  # passed through to children only, not read for configuration
    env.update(settings.as_env())
    if not settings.flower_basic_auth:
        env.pop("FLOWER_BASIC_AUTH", None)  # an empty value would make Flower demand a blank login
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the log as they are written
    return env


def _detach_kwargs() -> dict[str, Any]:
    """Detached from the launcher, and (POSIX) with umask 077 so the service's own files are private."""
    if IS_WINDOWS:
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS  # type: ignore[attr-defined]
        return {"creationflags": flags}
    return {"start_new_session": True, **service_spawn_kwargs()}


def spawn(service: Service, settings: Settings, env: dict[str, str]) -> dict[str, Any]:
    """Start ``service`` detached, its output piped through a log pump; returns the PID record."""
    logfile = log_path(settings, service.name)
    private_dir(logfile.parent)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    append_private_text(logfile, f"----- {stamp} starting {service.name}: {' '.join(service.command)}\n")
    pump = subprocess.Popen(
        [sys.executable, "-m", "background_tasks.launcher.logpump", str(logfile)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=PROJECT_ROOT,
        env=env,
        **_detach_kwargs(),
    )
    try:
        proc = subprocess.Popen(
            list(service.command),
            stdin=subprocess.DEVNULL,
            stdout=pump.stdin,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env=env,
            **_detach_kwargs(),
        )
    finally:
        assert pump.stdin is not None
        pump.stdin.close()  # the service now holds the only write end: EOF when it ends
    record = {
        "name": service.name,
        "pid": proc.pid,
        "create_time": psutil.Process(proc.pid).create_time(),
        "command": list(service.command),
        "started_at": stamp,
        "url": service.url,
        "log": str(logfile),
        "pump_pid": pump.pid,
        "pump_create_time": _create_time_or_none(pump.pid),
    }
    write_record(pid_path(settings, service.name), record)
    return record


def _create_time_or_none(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def wait_gone(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (zombies count as exited); returns those still alive."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while True:
        for proc in alive:
            if proc.pid != os.getpid():
                with contextlib.suppress(psutil.Error, ChildProcessError):
                    proc.wait(timeout=0)  # reaps our own children; psutil.TimeoutExpired otherwise
        alive = [p for p in alive if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def log_tail(path: Path, lines: int = 6) -> list[str]:
    """The last non-empty lines of a log, for failure messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


class Launcher:
    """Carries out start/stop/status for one set of settings."""

    def __init__(self, settings: Settings, timeout: float = DEFAULT_START_TIMEOUT, python: str | None = None) -> None:
        self.settings = settings
        self.timeout = timeout
        self.services = build_services(settings, python)
        self.control = _ControlClient(settings)

    # -- helpers --------------------------------------------------------------

    def _fail(self, service: Service, reason: str, record: dict[str, Any] | None = None) -> Outcome:
        logfile = log_path(self.settings, service.name)
        details = []
        if record is not None:
            time.sleep(0.3)  # let the pump write the last lines
            details = ["  " + line for line in log_tail(logfile)]
        return Outcome(service.name, False, f"FAILED: {reason} (log: {logfile})", details)

    def _wait_ready(self, service: Service, record: dict[str, Any]) -> str | None:
        """None when ready; otherwise why not."""
        proc = record_process(record)
        deadline = time.monotonic() + self.timeout
        started = time.monotonic()
        while True:
            if proc is None or _gone(proc):
                return "exited right after starting"
            try:
                if self._is_ready(service, started):
                    return None
            except Exception as exc:  # a probe that cannot run at all is a failure, not a hang
                return f"readiness check failed: {exc}"
            if time.monotonic() > deadline:
                return f"did not become ready within {self.timeout:.0f} s"
            time.sleep(0.3)

    def _is_ready(self, service: Service, started: float) -> bool:
        kind = service.kind
        if kind == "redis":
            return redis_probe(self.settings) == "pong"
        if kind == "worker":
            assert service.node
            return self.control.ping(service.node, timeout=1.0)
        if kind == "flower":
            code = http_status(f"http://127.0.0.1:{self.settings.flower_port}/flower/", self.settings.flower_basic_auth)
            return code == 200
        if kind == "dashboard":
            base = f"http://127.0.0.1:{self.settings.streamlit_port}"
            cookie = None
            if self.settings.dashboard_password:
                try:
                    cookie = sign_in(base, self.settings.dashboard_password, timeout=2.0)
                except OSError:
                    return False  # not answering yet
            return http_status(f"{base}/_stcore/health", cookie=cookie) == 200
        return time.monotonic() - started >= GRACE_SECONDS

    # -- start ------------------------------------------------------------------

    def start(self, names: Sequence[str] = ()) -> list[Outcome]:
        selected = select_services(self.services, names)
        outcomes: list[Outcome] = []
        for path in (self.settings.data_dir, self.settings.run_dir, self.settings.log_dir):
            private_dir(path)
        try:
            with launcher_lock(self.settings):
                for service in selected:
                    # Computed for each service: starting Redis may have added its generated password.
                    outcome = self.start_one(service, child_environment(self.settings))
                    outcomes.append(outcome)
                    _print_outcome(outcome)
        finally:
            self.control.close()
        return outcomes

    def start_one(self, service: Service, env: dict[str, str]) -> Outcome:
        if service.requires is not None and not service.requires.exists():
            rel = service.requires.relative_to(PROJECT_ROOT)
            return Outcome(service.name, True, f"skipped: {rel} is not part of this installation yet")
        pidfile = pid_path(self.settings, service.name)
        record = read_record(pidfile)
        stale_note = ""
        if record is not None:
            proc = record_process(record)
            if proc is not None:
                return Outcome(service.name, True, f"already running (pid {proc.pid})")
            pidfile.unlink(missing_ok=True)
            stale_note = f" (removed stale PID file for pid {record.get('pid')})"

        if service.kind == "redis":
            probe = redis_probe(self.settings)
            if probe in ("pong", "auth"):
                if probe == "auth":
                    origin = password_origin(self.settings)
                    return Outcome(service.name, False, f"FAILED: the Redis at {service.url} rejects {origin}")
                return Outcome(service.name, True, f"external Redis answers at {service.url}; not started")
            if probe == "other":
                return self._fail(service, f"port {self.settings.redis_port} is in use by something that is not Redis")
            if not self.settings.redis_is_local:
                return self._fail(
                    service,
                    f"Redis at {self.settings.redis_host}:{self.settings.redis_port} does not answer; "
                    "the launcher starts Redis only when REDIS_HOST is local",
                )
            if find_redis_server() is None:
                return Outcome(
                    service.name,
                    False,
                    f"FAILED: nothing answers at 127.0.0.1:{self.settings.redis_port} "
                    "and redis-server is not installed",
                    [REDIS_INSTALL_HINT],
                )
            # Our own Redis always gets a password: REDIS_PASSWORD, or the one generated for it.
            self.settings = with_redis_password(self.settings)
            self.control.close()
            self.control = _ControlClient(self.settings)
            env = child_environment(self.settings)
            write_redis_conf(self.settings)
        elif service.kind in ("worker", "beat", "flower"):
            if not CELERY_CONFIG_FILE.exists():
                return self._fail(service, f"{CELERY_CONFIG_FILE.name} is missing from {PROJECT_ROOT}")
            if redis_probe(self.settings) != "pong":
                return self._fail(
                    service,
                    f"Redis does not answer at {self.settings.redis_host}:{self.settings.redis_port}; "
                    "start it first (python -m background_tasks.services start redis)",
                )

        try:
            record = spawn(service, self.settings, env)
        except OSError as exc:
            return self._fail(service, f"could not run {service.command[0]}: {exc}")
        problem = self._wait_ready(service, record)
        if problem is not None:
            outcome = self._fail(service, problem, record)
            self.stop_one(service)  # do not leave a half-started service behind
            return outcome
        where = f" {service.url}" if service.url else ""
        return Outcome(service.name, True, f"started (pid {record['pid']}){where}{stale_note}")

    # -- stop -------------------------------------------------------------------

    def stop(self, names: Sequence[str] = ()) -> list[Outcome]:
        selected = list(reversed(select_services(self.services, names)))
        # Stop order: watcher, dashboard, flower, beat, workers, redis.
        order = {"watcher": 0, "dashboard": 1, "flower": 2, "beat": 3, "worker": 4, "redis": 5}
        selected.sort(key=lambda s: order[s.kind])
        outcomes = []
        try:
            with launcher_lock(self.settings):
                for service in selected:
                    outcome = self.stop_one(service)
                    outcomes.append(outcome)
                    _print_outcome(outcome)
        finally:
            self.control.close()
        return outcomes

    def stop_one(self, service: Service) -> Outcome:
        pidfile = pid_path(self.settings, service.name)
        record = read_record(pidfile)
        if record is None:
            if service.kind == "redis" and redis_probe(self.settings) in ("pong", "auth"):
                return Outcome(service.name, True, "external Redis; left alone")
            return Outcome(service.name, True, "not running")
        proc = record_process(record)
        if proc is None:
            self._end_pump(record)
            pidfile.unlink(missing_ok=True)
            return Outcome(
                service.name,
                True,
                f"not running; removed stale PID file (pid {record.get('pid')} is gone or belongs to another program, "
                "not touched)",
            )
        forced = self._terminate(service, proc)
        self._end_pump(record)
        pidfile.unlink(missing_ok=True)
        how = "forced after stop timeout" if forced else "stopped"
        return Outcome(service.name, True, f"{how} (pid {proc.pid})")

    def _terminate(self, service: Service, proc: psutil.Process) -> bool:
        """Warm shutdown, then force after ``stop_timeout``; True when force was needed."""
        try:
            members = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        group = None
        if not IS_WINDOWS:
            with contextlib.suppress(OSError):
                if os.getpgid(proc.pid) == proc.pid:
                    group = proc.pid
        # SIGTERM to the main process only: for Celery it is the warm shutdown, in which the
        # master lets running tasks finish and then ends its pool children itself.
        try:
            if IS_WINDOWS:
                self._windows_soft_stop(service)
            else:
                proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
        alive = wait_gone(members, self.settings.stop_timeout)
        if not alive:
            return False
        # Force: the whole process group (while a verified member is in it, the group id cannot
        # have been reused), then each remaining process we recorded (psutil checks identity).
        if group is not None:
            for member in alive:
                try:
                    if member.is_running() and os.getpgid(member.pid) == group:
                        os.killpg(group, signal.SIGKILL)
                        break
                except (OSError, psutil.Error):
                    continue
        for member in alive:
            with contextlib.suppress(psutil.Error):
                member.kill()
        wait_gone(alive, 5.0)
        return True

    def _windows_soft_stop(self, service: Service) -> None:
        """Windows has no SIGTERM for detached processes: ask the service itself when it can be asked."""
        try:
            if service.kind == "worker" and service.node:
                self.control.shutdown(service.node)
                return
            if service.kind == "redis":
                import redis

                client = redis.Redis(
                    host="127.0.0.1", port=self.settings.redis_port, password=self.settings.redis_password
                )
                with contextlib.suppress(redis.ConnectionError):
                    client.shutdown()
                return
        except Exception as exc:
            log.warning("soft stop of %s failed: %s", service.name, exc)
        record = read_record(pid_path(self.settings, service.name))
        proc = record_process(record)
        if proc is not None:
            proc.terminate()

    @staticmethod
    def _end_pump(record: dict[str, Any]) -> None:
        """The pump ends by itself at EOF; one still running after that is ours and is ended."""
        pump = live_process(record.get("pump_pid"), record.get("pump_create_time"))
        if pump is None:
            return
        for proc in wait_gone([pump], PUMP_EXIT_TIMEOUT):
            with contextlib.suppress(psutil.Error):
                proc.kill()

    # -- status -----------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for service in self.services:
            rows.append(self.status_one(service))
        return rows

    def status_one(self, service: Service) -> dict[str, Any]:
        row: dict[str, Any] = {"service": service.name, "pid": None, "state": "down", "url": service.url, "note": ""}
        if service.kind == "worker":
            row["note"] = "queues " + ",".join(service.queues)
        if service.requires is not None and not service.requires.exists():
            row["state"] = "not installed"
            row["note"] = f"{service.requires.relative_to(PROJECT_ROOT)} not present"
            return row
        record = read_record(pid_path(self.settings, service.name))
        proc = record_process(record)
        if proc is not None:
            row["pid"] = proc.pid
            row["state"] = "up"
            return row
        if record is not None:
            row["note"] = f"stale PID file (pid {record.get('pid')})"
        if service.kind == "redis":
            probe = redis_probe(self.settings)
            if probe in ("pong", "auth"):
                row["state"] = "external"
                rejects = f"; rejects {password_origin(self.settings)}" if probe == "auth" else ""
                row["note"] = "not started by MIDAS" + rejects
            elif probe == "other":
                row["note"] = f"port {self.settings.redis_port} is used by something that is not Redis"
            elif self.settings.redis_is_local and find_redis_server() is None:
                row["state"] = "not installed"
                row["note"] = "redis-server not found"
        return row


def _print_outcome(outcome: Outcome) -> None:
    stream = sys.stdout if outcome.ok else sys.stderr
    print(f"{outcome.name:<10} {outcome.message}", file=stream, flush=True)
    for line in outcome.details:
        print(line, file=stream, flush=True)


def format_status(rows: Sequence[dict[str, Any]]) -> str:
    """The status table as text."""
    headers = ("SERVICE", "PID", "STATE", "URL", "NOTE")
    table = [(r["service"], str(r["pid"] or "-"), r["state"], r["url"] or "-", r["note"] or "") for r in rows]
    widths = [max(len(headers[i]), *(len(row[i]) for row in table)) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


@contextlib.contextmanager
def launcher_lock(settings: Settings, wait: float = 120.0) -> Iterator[None]:
    """One launcher at a time per data dir, so two starts cannot both start a service."""
    private_dir(settings.run_dir)
    path = settings.run_dir / "launcher.lock"
    fh = os.fdopen(open_private(path, os.O_RDWR), "r+b")
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                if IS_WINDOWS:
                    import msvcrt

                    fh.seek(0)
                    msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
                else:
                    import fcntl

                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise LauncherError(f"another launcher holds {path}; try again when it has finished") from None
                time.sleep(0.2)
        yield
    finally:
        fh.close()  # closing releases the lock on every platform


# --------------------------------------------------------------------------
# Autostart
# --------------------------------------------------------------------------


def _systemd_escape(value: str) -> str:
    """A value for a unit file: ``%`` doubled (specifiers)."""
    return value.replace("%", "%%")


def _systemd_arg(value: str) -> str:
    """One ExecStart= argument, quoted when it has spaces or quotes."""
    value = _systemd_escape(value)
    if any(c.isspace() for c in value) or any(c in value for c in "\"'\\;$"):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'
    return value


def systemd_unit_text(python: str | Path, project_root: Path, stop_timeout: float = 30.0, services: int = 6) -> str:
    """The systemd user unit that starts the services at boot (with lingering) or login."""
    root = str(project_root)
    exe = _systemd_arg(str(python))
    stop_seconds = int(stop_timeout * services + 60)
    return (
        "[Unit]\n"
        "Description=MIDAS document processing services (Redis, Celery workers, Beat, Flower, watcher, dashboard)\n"
        "After=network.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"WorkingDirectory={_systemd_escape(root)}\n"
        f"EnvironmentFile=-{_systemd_escape(str(project_root / '.env'))}\n"
        f"ExecStart={exe} -m background_tasks.services start\n"
        f"ExecStop={exe} -m background_tasks.services stop\n"
        "TimeoutStartSec=600\n"
        f"TimeoutStopSec={stop_seconds}\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def _ps_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def windows_task_command(project_root: Path, task_name: str = WINDOWS_TASK_NAME) -> str:
    """PowerShell that registers the logon task running Start-Celery-Services.ps1 for the current user."""
    script = str(project_root / "Start-Celery-Services.ps1")
    argument = f'-NoProfile -ExecutionPolicy Bypass -WindowStyle Hidden -File "{script}" -SkipInstall'
    return "\n".join(
        [
            "$ErrorActionPreference = 'Stop'",
            f"$action = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument {_ps_quote(argument)} "
            f"-WorkingDirectory {_ps_quote(str(project_root))}",
            "$user = [System.Security.Principal.WindowsIdentity]::GetCurrent().Name",
            "$trigger = New-ScheduledTaskTrigger -AtLogOn -User $user",
            "$settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries "
            "-ExecutionTimeLimit ([TimeSpan]::Zero) -MultipleInstances IgnoreNew",
            f"Register-ScheduledTask -TaskName {_ps_quote(task_name)} -Description "
            f"{_ps_quote('Starts the MIDAS services at logon')} -Action $action -Trigger $trigger "
            "-Settings $settings -Force | Out-Null",
            f"Write-Output {_ps_quote(f'registered scheduled task {task_name}')}",
        ]
    )


def windows_untask_command(task_name: str = WINDOWS_TASK_NAME) -> str:
    """PowerShell that removes the logon task (no error when it does not exist)."""
    return "\n".join(
        [
            "$ErrorActionPreference = 'Stop'",
            f"$task = Get-ScheduledTask -TaskName {_ps_quote(task_name)} -ErrorAction SilentlyContinue",
            f"if ($task) {{ Unregister-ScheduledTask -TaskName {_ps_quote(task_name)} -Confirm:$false }}",
        ]
    )


def default_unit_dir() -> Path:
    return Path.home() / ".config" / "systemd" / "user"


def _run(command: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stderr or done.stdout).strip()


def install_autostart(settings: Settings, unit_dir: Path | None = None, use_systemctl: bool = True) -> int:
    """Register start-at-boot/logon; returns the exit code."""
    if IS_WINDOWS:
        ok, out = _run(["powershell.exe", "-NoProfile", "-Command", windows_task_command(PROJECT_ROOT)])
        print(out or ("registered" if ok else "failed"))
        if not ok:
            print("If access was denied, run this again from an elevated PowerShell.", file=sys.stderr)
        return 0 if ok else 1
    if platform.system() != "Linux":
        print(
            "install-autostart supports systemd (Linux) and Task Scheduler (Windows). On macOS add a login item "
            f"or launchd agent running: {sys.executable} -m background_tasks.services start",
            file=sys.stderr,
        )
        return 1
    directory = unit_dir or default_unit_dir()
    directory.mkdir(parents=True, exist_ok=True)
    unit = directory / UNIT_NAME
    unit.write_text(
        systemd_unit_text(sys.executable, PROJECT_ROOT, settings.stop_timeout, len(build_services(settings))),
        encoding="utf-8",
    )
    print(f"wrote {unit}")
    manual = "systemctl --user daemon-reload && systemctl --user enable midas.service"
    if use_systemctl and shutil.which("systemctl"):
        for command in (["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", UNIT_NAME]):
            ok, out = _run(command)
            if not ok:
                print(f"`{' '.join(command)}` failed: {out}\nRun it yourself in your login session: {manual}")
                return 1
        print("enabled midas.service (starts at login; `loginctl enable-linger $USER` makes it start at boot)")
    else:
        print(f"systemctl not available here; to enable it run: {manual}")
    return 0


def uninstall_autostart(unit_dir: Path | None = None, use_systemctl: bool = True) -> int:
    """Remove what install_autostart registered; returns the exit code."""
    if IS_WINDOWS:
        ok, out = _run(["powershell.exe", "-NoProfile", "-Command", windows_untask_command()])
        print(out or ("removed" if ok else "failed"))
        return 0 if ok else 1
    unit = (unit_dir or default_unit_dir()) / UNIT_NAME
    if use_systemctl and shutil.which("systemctl") and unit.exists():
        ok, out = _run(["systemctl", "--user", "disable", UNIT_NAME])
        if not ok:
            print(f"`systemctl --user disable {UNIT_NAME}` failed: {out}")
    if unit.exists():
        unit.unlink()
        print(f"removed {unit}")
    else:
        print(f"{unit} was not installed")
    if use_systemctl and shutil.which("systemctl"):
        _run(["systemctl", "--user", "daemon-reload"])
    return 0


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m background_tasks.services",
        description="Start, stop and inspect the MIDAS services (redis, worker, beat, flower, watcher, dashboard).",
    )
    parser.add_argument(
        "action", choices=("start", "stop", "status", "restart", "install-autostart", "uninstall-autostart")
    )
    parser.add_argument("services", nargs="*", help="service names or kinds (default: all)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_START_TIMEOUT, help="seconds each service may take to become ready"
    )
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument("--unit-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    settings = settings_or_exit()
    if args.action == "install-autostart":
        return install_autostart(settings, args.unit_dir)
    if args.action == "uninstall-autostart":
        return uninstall_autostart(args.unit_dir)

    launcher = Launcher(settings, timeout=args.timeout)
    try:
        if args.action == "status":
            wanted = {s.name for s in select_services(launcher.services, args.services)}
            rows = [launcher.status_one(s) for s in launcher.services if s.name in wanted]
            print(json.dumps(rows, indent=2) if args.json else format_status(rows))
            return 0
        outcomes: list[Outcome] = []
        if args.action in ("stop", "restart"):
            outcomes += launcher.stop(args.services)
        if args.action in ("start", "restart"):
            outcomes += launcher.start(args.services)
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
