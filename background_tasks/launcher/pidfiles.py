"""PID records, so ``stop`` only ever signals a process this launcher started.

Each service is recorded in ``<run_dir>/<name>.pid`` as JSON with its process
creation time: a PID file whose process is gone, or whose PID now belongs to
another program (the creation time differs), counts as stale and is removed
untouched. The launcher lock in the same folder keeps two launchers from
starting one service twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from background_tasks.launcher.definitions import IS_WINDOWS, LauncherError
from background_tasks.launcher.private_files import open_private, private_dir, write_private_text
from background_tasks.settings import Settings


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


def create_time_or_none(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


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
