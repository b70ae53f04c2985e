"""`python test_background_processing.py` against a whole stack the test starts with the launcher."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from background_tasks.storage.store import DocumentStore
from tests.support import PROJECT_ROOT, launcher, launcher_env, stop_stack

#: real launcher stacks, workers or servers: deselected by -m "not integration"
pytestmark = pytest.mark.integration


def run_check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "test_background_processing.py", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    watch = tmp_path / "watch"
    watch.mkdir()
    env = launcher_env(
        tmp_path,
        MIDAS_WATCH_DIRS=str(watch),
        MIDAS_STABILITY_SECONDS="0.5",
        MIDAS_WORKER_CONCURRENCY="2",
        FLOWER_BASIC_AUTH="admin:check-pw",
    )
    started = launcher(env, "start", timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    yield env
    stop_stack(env, tmp_path)


def test_the_system_check_passes_on_a_running_stack_and_explains_failures(stack_env, tmp_path) -> None:
    done = run_check(stack_env, "--json")
    report = json.loads(done.stdout)
    failed = {c["name"]: c["detail"] for c in report["checks"] if not c["passed"]}
    assert done.returncode == 0 and report["passed"], failed
    names = [c["name"] for c in report["checks"]]
    expected = ["redis", "workers", "documents", "batch", "monitoring", "cleanup", "watcher", "flower", "tidy_up"]
    if (PROJECT_ROOT / "Streamlit_Task_Monitoring.py").exists():
        expected.insert(-2, "dashboard")
    assert names == expected
    assert all(c["seconds"] >= 0 for c in report["checks"])
    assert list((tmp_path / "watch").iterdir()) == [], "the watcher check removes its file again"
    # it leaves nothing behind: its 8 formats, 3 batch files and the watcher's file are deleted again
    tidy = next(c for c in report["checks"] if c["name"] == "tidy_up")
    assert tidy["detail"].startswith("deleted 12 document(s) the check created and 11 inbox file(s)"), tidy
    store = DocumentStore(f"sqlite:///{tmp_path / 'data' / 'midas.sqlite3'}")
    assert store.count_documents() == 0 and store.stats()["chunks"] == 0
    inbox = tmp_path / "data" / "inbox"
    assert not inbox.exists() or list(inbox.iterdir()) == [], sorted(inbox.rglob("*"))

    table = run_check(stack_env)
    assert table.returncode == 0, table.stdout  # the whole table: which check failed and why
    assert f"{len(expected)} passed, 0 failed" in table.stdout

    stopped = launcher(stack_env, "stop", "redis")
    assert stopped.returncode == 0, stopped.stderr
    broken = run_check(stack_env, "--skip", "dashboard,flower")
    assert broken.returncode == 1
    assert "redis" in broken.stdout and "FAIL" in broken.stdout
    assert "Is Redis running?" in broken.stdout
    assert "Traceback" not in broken.stdout + broken.stderr
