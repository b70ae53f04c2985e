"""Tasks that misbehave on purpose, loaded into test workers through MIDAS_EXTRA_TASK_MODULES."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from celery_config import app


def _count(key: str) -> int:
    client = redis.Redis.from_url(app.conf.broker_url)
    return int(client.incr(key))


@app.task(name="tests.fault_tasks.crash_self")
def crash_self(counter_key: str) -> None:
    """Counts its own runs in Redis, then kills its own process: the worst task there is."""
    _count(counter_key)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="tests.fault_tasks.slow_count")
def slow_count(counter_key: str, seconds: float) -> int:
    """Takes a while, then counts a completed run (to prove warm shutdown lets it finish)."""
    time.sleep(seconds)
    return _count(counter_key)


def _hang(pid_file: str, with_grandchild: bool) -> dict:
    """In the isolated child: say who runs (the child, and a program it started), then hang."""
    pids = [os.getpid()]
    if with_grandchild:
        pids.append(subprocess.Popen(["sleep", "600"]).pid)
    Path(pid_file).write_text(" ".join(map(str, pids)))
    while True:
        time.sleep(1)


@app.task(name="tests.fault_tasks.hang_in_isolated_child")
def hang_in_isolated_child(pid_file: str, with_grandchild: bool = False, deaf_to_soft_limit: bool = False) -> dict:
    """Waits on an isolated child that never finishes, with a deadline far beyond any task time limit.

    ``deaf_to_soft_limit`` blocks the soft limit's signal, as a parent stuck in C code would not see it:
    only the hard limit (killing this pool process) ends the task.
    """
    from background_tasks.extraction.isolation import run_isolated

    if deaf_to_soft_limit:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    return run_isolated(_hang, (pid_file, with_grandchild), timeout=3600)


@app.task(name="tests.fault_tasks.fail_transiently")
def fail_transiently(counter_key: str, failures: int, storage: bool = False) -> int:
    """Raises a transient error (a storage fault with ``storage``) on its first ``failures`` runs."""
    from background_tasks.errors import StorageUnavailable, TransientError

    runs = _count(counter_key)
    if runs <= failures:
        raise (StorageUnavailable if storage else TransientError)(f"run {runs} of {failures} failing ones")
    return runs


def _document_task_base():
    from background_tasks.document_tasks import DocumentFileTask

    return DocumentFileTask


@app.task(bind=True, base=_document_task_base(), name="tests.fault_tasks.never_ready")
def never_ready(self, file_path: str) -> dict:
    """Like process_document_file with a file that is never complete: retried, then recorded as failed."""
    from background_tasks.errors import FileNotReady

    raise FileNotReady(f"{file_path} is still being written (attempt {self.request.retries + 1})")
