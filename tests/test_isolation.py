"""The parser process: one serves many jobs, and it never outlives the code that waits for it, nor its
failures (plain processes, no Celery).

The real-worker versions (soft and hard time limits, kill -9 of a pool process) are in test_fault_tolerance.py.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from background_tasks.errors import ExtractionError, ExtractionTimeout, ExtractorCrashed, ResourceLimitExceeded
from background_tasks.extraction import isolation
from background_tasks.extraction.isolation import run_isolated
from background_tasks.settings import PROJECT_ROOT
from tests.support import ChildPids, gone, wait_until


def _hang(pid_file: str) -> dict:
    """Runs in the child: start a program of its own, say both pids, then hang."""
    grandchild = subprocess.Popen(["sleep", "600"])
    Path(pid_file).write_text(f"{os.getpid()} {grandchild.pid}")
    while True:
        time.sleep(1)


def _pid() -> dict:
    return {"pid": os.getpid()}


def _import(name: str) -> dict:
    """Whether ``name`` was loaded before this job, in which process, and that it is now."""
    loaded = name in sys.modules
    importlib.import_module(name)
    return {"pid": os.getpid(), "was_loaded": loaded}


def _kill_self() -> dict:
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def _parser_bug() -> dict:
    raise ValueError("a parser's own bug")


def _allocate(size: int) -> dict:
    return {"size": len(bytearray(size))}


def _sleep(seconds: float) -> dict:
    time.sleep(seconds)
    return {"pid": os.getpid()}


class TaskEnded(Exception):
    """Stands for Celery's SoftTimeLimitExceeded: raised by a signal handler while the parent waits."""


def test_an_exception_while_waiting_kills_the_child_and_what_it_started(tmp_path: Path, child_pids: ChildPids) -> None:
    def end_task(*_: object) -> None:
        if child_pids.path.exists() and child_pids.path.read_text():
            raise TaskEnded
        signal.setitimer(signal.ITIMER_REAL, 0.2)  # not started yet: look again shortly

    previous = signal.signal(signal.SIGALRM, end_task)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(TaskEnded):
            run_isolated(_hang, (str(child_pids.path),), timeout=3600)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    child, grandchild = child_pids.wait()
    assert gone(child), "killed and reaped before the exception left run_isolated"
    wait_until(lambda: gone(grandchild), 30, what="the child's own program to be killed with its group")
    assert run_isolated(_pid, (), timeout=30)["pid"] != child, "the next job has a new parser process"


def test_the_child_dies_when_its_parent_is_killed(tmp_path: Path, child_pids: ChildPids) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only; elsewhere the CPU-time limit is the backstop")
    code = (
        "import sys\n"
        "from background_tasks.extraction.isolation import run_isolated\n"
        "from tests.test_isolation import _hang\n"
        "run_isolated(_hang, (sys.argv[1],), timeout=3600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code, str(child_pids.path)], cwd=PROJECT_ROOT)
    try:
        child, _grandchild = child_pids.wait()
        assert psutil.Process(child).ppid() == parent.pid
        parent.kill()
        parent.wait(10)
        wait_until(lambda: gone(child), 30, what="the child to die with its parent")
    finally:
        parent.kill()  # the child's own program is not covered when the parent dies: child_pids ends it


def test_one_parser_process_serves_many_jobs_and_keeps_what_they_imported() -> None:
    isolation.stop_parser_process()
    assert "wave" not in sys.modules, "pick a module this test process has not imported"
    first = run_isolated(_import, ("wave",), timeout=30)
    second = run_isolated(_import, ("wave",), timeout=30)
    assert first["pid"] == second["pid"] != os.getpid()
    assert (first["was_loaded"], second["was_loaded"]) == (False, True), "imported once, for every later file"
    assert "wave" not in sys.modules, "the caller never loads what its parsers load"
    assert psutil.Process(first["pid"]).ppid() == os.getpid()
    assert os.getpgid(first["pid"]) == first["pid"], "it leads a process group of its own"
    isolation.stop_parser_process()
    assert gone(first["pid"])


def test_a_crash_a_timeout_or_a_parser_bug_costs_one_job_and_the_next_has_a_new_process() -> None:
    start = run_isolated(_pid, (), timeout=30)["pid"]
    with pytest.raises(ExtractorCrashed, match="SIGKILL"):
        run_isolated(_kill_self, (), timeout=30)
    assert gone(start)
    after_crash = run_isolated(_pid, (), timeout=30)["pid"]
    with pytest.raises(ExtractionTimeout):
        run_isolated(_sleep, (60,), timeout=0.5)
    assert gone(after_crash)
    after_timeout = run_isolated(_pid, (), timeout=30)["pid"]
    with pytest.raises(ExtractionError, match="ValueError: a parser's own bug"):
        run_isolated(_parser_bug, (), timeout=30)
    wait_until(lambda: gone(after_timeout), 10, what="a process that saw a parser bug to retire")
    assert len({start, after_crash, after_timeout, run_isolated(_pid, (), timeout=30)["pid"]}) == 4


def test_the_memory_cap_fails_the_file_and_retires_the_process() -> None:
    before = run_isolated(_pid, (), timeout=30)["pid"]
    with pytest.raises(ResourceLimitExceeded):
        run_isolated(_allocate, (isolation.CHILD_MEMORY_LIMIT + 2**30,), timeout=60)
    assert run_isolated(_allocate, (2**20,), timeout=30) == {"size": 2**20}
    wait_until(lambda: gone(before), 10, what="the process that hit its memory cap to retire")


def test_a_process_that_went_away_between_jobs_is_replaced_without_failing_the_next() -> None:
    first = run_isolated(_pid, (), timeout=30)["pid"]
    os.kill(first, signal.SIGKILL)  # idled out, or killed from outside, while it waited for a job
    wait_until(lambda: gone(first), 10, what="the process to die")
    assert run_isolated(_pid, (), timeout=30)["pid"] not in (first, os.getpid())


def test_each_thread_has_its_own_process_and_a_local_function_gets_one_of_its_own() -> None:
    pids: dict[str, int] = {}

    def in_thread() -> None:
        pids["thread"] = run_isolated(_pid, (), timeout=30)["pid"]
        isolation.stop_parser_process()

    mine = run_isolated(_pid, (), timeout=30)["pid"]
    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    assert pids["thread"] != mine and gone(pids["thread"])

    def local() -> dict:
        return {"pid": os.getpid()}

    own = run_isolated(local, (), timeout=30)["pid"]
    assert own not in (mine, os.getpid()) and gone(own), "a process forked for that job alone"


def _socket_count() -> dict:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += stat.S_ISSOCK(os.fstat(int(name)).st_mode)
        except OSError:
            continue
    return {"sockets": count}


def test_the_parser_process_holds_none_of_its_parents_connections() -> None:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counts descriptors in /proc")
    isolation.stop_parser_process()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        assert run_isolated(_socket_count, (), timeout=30) == {"sockets": 0}
    finally:
        server.close()
    again = socket.create_server(("127.0.0.1", port))  # the port is free once its owner closed it
    again.close()
    isolation.stop_parser_process()
