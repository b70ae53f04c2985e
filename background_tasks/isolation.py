"""Run a parser in a forked child so a hang, a crash or a memory blow-up costs one file, not the worker.

The child inherits the already imported modules (a fork is a few
milliseconds), runs the function, writes its JSON result to a private file
and exits. The parent waits with a deadline, kills the child on timeout, and
turns a death by signal into ``ExtractorCrashed``. Where ``fork`` does not
exist (Windows) the function runs in-process and Celery's time limits apply.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from background_tasks import errors
from background_tasks.errors import ExtractionError, ExtractionTimeout, ExtractorCrashed, MidasError

log = logging.getLogger(__name__)

#: Address-space cap for a parser child; a decompression or allocation bomb hits it and fails that file only.
CHILD_MEMORY_LIMIT = 6 * 1024 * 1024 * 1024


def error_from_payload(payload: list[str]) -> MidasError:
    """Rebuild the error a child reported, by class name within our hierarchy."""
    name, message = payload
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, MidasError)):
        cls = ExtractionError
    return cls(message)


def _payload_for(exc: BaseException) -> list[str]:
    if isinstance(exc, MidasError):
        return [type(exc).__name__, exc.message]
    if isinstance(exc, MemoryError):
        return ["ResourceLimitExceeded", "the document needs more memory than allowed (decompression bomb?)"]
    if isinstance(exc, RecursionError):
        return ["ResourceLimitExceeded", "the document is nested too deeply"]
    return ["ExtractionError", f"parser error ({type(exc).__name__}: {exc})"]


def _run_in_process(func: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> dict[str, Any]:
    try:
        return func(*args)
    except MidasError:
        raise
    except Exception as exc:  # a parser's own exception type: report it in our terms
        raise error_from_payload(_payload_for(exc)) from exc


def _child(func: Callable[..., dict[str, Any]], args: tuple[Any, ...], out_path: Path) -> None:
    status = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            libc = ctypes.CDLL(None)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the worker
        except (OSError, AttributeError):
            pass
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_LIMIT, CHILD_MEMORY_LIMIT))
        except (ImportError, ValueError, OSError):
            pass
        try:
            result: dict[str, Any] = {"ok": func(*args)}
        except BaseException as exc:
            result = {"error": _payload_for(exc)}
        with out_path.open("w", encoding="utf-8") as handle:
            json.dump(result, handle, default=str, ensure_ascii=False)
    except BaseException:
        status = 3
    finally:
        os._exit(status)


def _wait(pid: int, timeout: float) -> int | None:
    """Wait for ``pid``; its wait status, or None on timeout."""
    deadline = time.monotonic() + timeout
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = None
    try:
        delay = 0.001
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if pidfd is not None:
                select.select([pidfd], [], [], remaining)
            else:
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.05)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def run_isolated(
    func: Callable[..., dict[str, Any]],
    args: tuple[Any, ...],
    timeout: float,
    work_dir: Path,
    label: str = "file",
    isolate: bool = True,
) -> dict[str, Any]:
    """``func(*args)`` in a child process with a deadline; returns its JSON-able dict.

    Raises the child's MidasError, ExtractionTimeout, or ExtractorCrashed.
    """
    if not isolate or not hasattr(os, "fork"):
        return _run_in_process(func, args)
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix="result-", suffix=".json", dir=work_dir)
    os.close(fd)
    out_path = Path(name)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            _child(func, args, out_path)
        status = _wait(pid, timeout)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise ExtractionTimeout(f"{label}: the parser did not finish within {timeout:g} s (MIDAS_EXTRACT_TIMEOUT)")
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            raise ExtractorCrashed(f"{label}: the parser process died ({signal.Signals(sig).name})")
        if os.WEXITSTATUS(status) != 0 or out_path.stat().st_size == 0:
            raise ExtractorCrashed(f"{label}: the parser process exited with status {os.WEXITSTATUS(status)}")
        with out_path.open(encoding="utf-8") as handle:
            result = json.load(handle)
    finally:
        out_path.unlink(missing_ok=True)
    if "error" in result:
        raise error_from_payload(result["error"])
    return result["ok"]
