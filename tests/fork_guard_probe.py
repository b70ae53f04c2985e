"""Forks children that write to a SQLite store while a thread of the parent is inside write transactions.

Run as a script by ``test_fork_guard``: ``python -m tests.fork_guard_probe DB_FILE FORKS [--guard]``.
Prints one line per child, ``ok SECONDS`` or ``failed SECONDS ERROR``, and exits 0.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from sqlalchemy import text

from background_tasks.storage import db

#: a child that has not written after this long met a lock nobody will release
CHILD_PATIENCE_S = 5


def _writer(url: str, stop: threading.Event, in_transaction: threading.Event) -> None:
    """Hold the write lock most of the time, as the worker's history writer does under load."""
    while not stop.is_set():
        with db.session_scope(url) as session:
            session.execute(text("INSERT INTO probe (who) VALUES ('parent')"))
            in_transaction.set()
            time.sleep(0.05)
        in_transaction.clear()
        time.sleep(0.02)


def _child(url: str, report_fd: int) -> None:
    started = time.monotonic()
    outcome = "ok"
    try:
        db.BUSY_TIMEOUT_S = CHILD_PATIENCE_S
        db.SQLITE_CONNECT_ARGS["timeout"] = CHILD_PATIENCE_S
        with db.session_scope(url) as session:
            session.execute(text("INSERT INTO probe (who) VALUES ('child')"))
    except Exception as exc:
        outcome = f"failed {type(exc).__name__}: {str(exc).splitlines()[0]}"
    line = f"{outcome.split(' ', 1)[0]} {time.monotonic() - started:.2f} {outcome.partition(' ')[2]}\n"
    os.write(report_fd, line.encode())
    os._exit(0)


def main(argv: list[str]) -> int:
    path, forks, guard = argv[0], int(argv[1]), "--guard" in argv
    url = f"sqlite:///{path}"
    if guard:
        db.guard_forks()
    with db.session_scope(url) as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, who TEXT)"))
    stop, in_transaction = threading.Event(), threading.Event()
    thread = threading.Thread(target=_writer, args=(url, stop, in_transaction), daemon=True)
    thread.start()
    read_fd, write_fd = os.pipe()
    children = []
    for _ in range(forks):
        in_transaction.wait()  # fork while the writer holds the lock (a guarded fork waits for it to end)
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child(url, write_fd)
        children.append(pid)
        time.sleep(0.03)
    os.close(write_fd)
    for pid in children:
        os.waitpid(pid, 0)
    stop.set()
    thread.join()
    with os.fdopen(read_fd) as reports:
        sys.stdout.write(reports.read())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
