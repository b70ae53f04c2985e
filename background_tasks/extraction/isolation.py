"""Run a parser in a forked child so a hang, a crash or a memory blow-up costs one file, not the worker.

The child inherits the already imported modules (a fork is a few
milliseconds), runs the function, writes its JSON result to a private file
and exits. The parent waits with a deadline, kills the child on timeout, and
turns a death by signal into ``ExtractorCrashed``. Where ``fork`` does not
exist (Windows) the function runs in-process and Celery's time limits apply.

A child never outlives the task that started it: it leads a process group of
its own, which the parent kills (and reaps) whenever ``run_isolated`` is left
without a result, also by Celery's ``SoftTimeLimitExceeded`` or any other
exception; on Linux it also gets SIGKILL the moment its parent dies (hard
time limit, ``kill -9`` of the pool process). Everywhere a CPU-time limit
ends a child whose parent is gone and which keeps computing.
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
#: CPU seconds a child may use per second of its deadline (parsers may run a few threads), plus a margin:
#: a backstop that ends a child whose parent vanished without taking it along (no PR_SET_PDEATHSIG).
CHILD_CPU_FACTOR, CHILD_CPU_MARGIN_S = 4, 10
_PR_SET_PDEATHSIG = 1


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


def _die_with_parent(parent_pid: int) -> None:
    """In the child: lead a process group of its own and get SIGKILL when the parent dies (Linux)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the CPU limit and the parent's clean-up remain
        pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(4)


def _limit_resources(timeout: float) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_LIMIT, CHILD_MEMORY_LIMIT))
        cpu = int(timeout * CHILD_CPU_FACTOR + CHILD_CPU_MARGIN_S)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    except (ImportError, ValueError, OSError):
        pass


def _child(
    func: Callable[..., dict[str, Any]],
    args: tuple[Any, ...],
    out_path: Path,
    parent_pid: int,
    timeout: float,
    signal_mask: set[signal.Signals],
) -> None:
    status = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
        _die_with_parent(parent_pid)
        _limit_resources(timeout)
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


def _kill_and_reap(pid: int) -> None:
    """SIGKILL the child's process group (the child and whatever it started), then reap the child.

    Only called while the child is not yet reaped, so its pid (and group id) cannot belong to anyone else.
    """
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:  # no group (yet): at least the child itself
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


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
    parent_pid = os.getpid()
    pid = 0  # the child while it is not reaped; whatever ends this function kills and reaps it
    try:
        # Signals wait until ``pid`` is known: a soft time limit arriving mid-fork cannot orphan the child.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                _child(func, args, out_path, parent_pid, timeout, mask)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            os.setpgid(pid, pid)  # also here, so the group exists before the child gets to it
        except OSError:
            pass
        status = _wait(pid, timeout)
        if status is None:
            raise ExtractionTimeout(f"{label}: the parser did not finish within {timeout:g} s (MIDAS_EXTRACT_TIMEOUT)")
        pid = 0
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                raise ExtractionTimeout(f"{label}: the parser used more CPU time than its limit allows")
            raise ExtractorCrashed(f"{label}: the parser process died ({signal.Signals(sig).name})")
        if os.WEXITSTATUS(status) != 0 or out_path.stat().st_size == 0:
            raise ExtractorCrashed(f"{label}: the parser process exited with status {os.WEXITSTATUS(status)}")
        with out_path.open(encoding="utf-8") as handle:
            result = json.load(handle)
    except BaseException as exc:
        if pid:
            if not isinstance(exc, ExtractionTimeout):
                log.warning("%s: parser process %d killed, its task ended (%s)", label, pid, type(exc).__name__)
            _kill_and_reap(pid)
            pid = 0
        raise
    finally:
        out_path.unlink(missing_ok=True)
    if "error" in result:
        raise error_from_payload(result["error"])
    return result["ok"]
