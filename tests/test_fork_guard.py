"""A child forked while its parent writes to SQLite can still write (``storage.fork_guard``).

The hazard: SQLite's in-memory record of its process's locks is inherited by a forked child, so
a child forked during a parent's write transaction finds the database locked for good. The
worker's main process forks Celery's pool while its history and ledger threads write; before the
guard, fresh workers sometimes met a store locked for minutes from the moment they started.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support import PROJECT_ROOT

PROCESS = "background_tasks.document_tasks.process_document_file"


def _probe(tmp_path, *flags: str) -> list[str]:
    run = subprocess.run(
        [sys.executable, "-m", "tests.fork_guard_probe", str(tmp_path / "probe.db"), "4", *flags],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 4, run.stdout + run.stderr
    return lines


def test_without_the_guard_a_child_forked_during_a_write_finds_the_database_locked(tmp_path) -> None:
    """The hazard is real on this SQLite: the probe reproduces it, so the next test means something."""
    lines = _probe(tmp_path)
    assert all(line.startswith("failed") and "database is locked" in line for line in lines), lines


def test_with_the_guard_every_forked_child_writes_at_once(tmp_path) -> None:
    lines = _probe(tmp_path, "--guard")
    assert all(line.startswith("ok") for line in lines), lines


def test_a_worker_forking_while_its_main_process_writes_never_meets_a_locked_store(isolated_stack, docs_dir) -> None:
    """A thread of the main process writes all the time, and each task ends its pool process, so the
    main process forks pool processes in the middle of write transactions, at start and after each task."""
    stack = isolated_stack(MIDAS_MAX_TASKS_PER_CHILD="1", MIDAS_EXTRA_TASK_MODULES="tests.busy_main_process")
    worker = stack.start_worker(queues=["documents"], concurrency=2)
    paths = []
    for i in range(30):
        path = docs_dir / f"doc-{i:02d}.txt"
        path.write_text(f"Document {i} with its own token tok{i}x. " + "filler " * 20)
        paths.append(str(path))
    results = [stack.send(PROCESS, p) for p in paths]
    statuses = [r.get(timeout=240)["status"] for r in results]
    assert statuses == ["success"] * 30
    assert "database is locked" not in worker.log_text()
