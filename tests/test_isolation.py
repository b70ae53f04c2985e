"""An isolated parser child never outlives the code that waits for it (plain processes, no Celery).

The real-worker versions (soft and hard time limits, kill -9 of a pool process) are in test_fault_tolerance.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from background_tasks.extraction.isolation import run_isolated
from background_tasks.settings import PROJECT_ROOT
from tests.support import ChildPids, gone, wait_until


def _hang(pid_file: str) -> dict:
    """Runs in the child: start a program of its own, say both pids, then hang."""
    grandchild = subprocess.Popen(["sleep", "600"])
    Path(pid_file).write_text(f"{os.getpid()} {grandchild.pid}")
    while True:
        time.sleep(1)


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
            run_isolated(_hang, (str(child_pids.path),), timeout=3600, work_dir=tmp_path / "work")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    child, grandchild = child_pids.wait()
    assert gone(child), "killed and reaped before the exception left run_isolated"
    wait_until(lambda: gone(grandchild), 30, what="the child's own program to be killed with its group")
    assert list((tmp_path / "work").iterdir()) == [], "no result file left behind"


def test_the_child_dies_when_its_parent_is_killed(tmp_path: Path, child_pids: ChildPids) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only; elsewhere the CPU-time limit is the backstop")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from background_tasks.extraction.isolation import run_isolated\n"
        "from tests.test_isolation import _hang\n"
        "run_isolated(_hang, (sys.argv[1],), timeout=3600, work_dir=Path(sys.argv[2]))\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code, str(child_pids.path), str(tmp_path / "work")], cwd=PROJECT_ROOT
    )
    try:
        child, _grandchild = child_pids.wait()
        assert psutil.Process(child).ppid() == parent.pid
        parent.kill()
        parent.wait(10)
        wait_until(lambda: gone(child), 30, what="the child to die with its parent")
    finally:
        parent.kill()  # the child's own program is not covered when the parent dies: child_pids ends it
