"""Service processes: spawned detached behind a log pump, waited for, and stopped warm then by force.

Each service runs detached from the launcher and writes through a ``logpump``
into ``<log_dir>/<name>.log`` (rotated), so the launcher can exit while the
services run on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from background_tasks.launcher.definitions import IS_WINDOWS, Service
from background_tasks.launcher.pidfiles import create_time_or_none, live_process, log_path, pid_path, write_record
from background_tasks.launcher.private_files import append_private_text, private_dir, service_spawn_kwargs
from background_tasks.settings import PROJECT_ROOT, Settings

PUMP_EXIT_TIMEOUT = 5.0


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
        "pump_create_time": create_time_or_none(pump.pid),
    }
    write_record(pid_path(settings, service.name), record)
    return record


def gone(proc: psutil.Process) -> bool:
    """Whether ``proc`` has exited (a zombie has)."""
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
        alive = [p for p in alive if not gone(p)]
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


def terminate(proc: psutil.Process, ask_to_stop: Callable[[], None], timeout: float) -> bool:
    """Warm shutdown through ``ask_to_stop``, then force after ``timeout``; True when force was needed."""
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    group = None
    if not IS_WINDOWS:
        with contextlib.suppress(OSError):
            if os.getpgid(proc.pid) == proc.pid:
                group = proc.pid
    with contextlib.suppress(psutil.NoSuchProcess):
        ask_to_stop()
    alive = wait_gone(members, timeout)
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


def end_pump(record: dict[str, Any]) -> None:
    """The pump ends by itself at EOF; one still running after that is ours and is ended."""
    pump = live_process(record.get("pump_pid"), record.get("pump_create_time"))
    if pump is None:
        return
    for proc in wait_gone([pump], PUMP_EXIT_TIMEOUT):
        with contextlib.suppress(psutil.Error):
            proc.kill()
