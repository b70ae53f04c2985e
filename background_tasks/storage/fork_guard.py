"""No SQLite connection crosses a fork into a child that will use the database.

SQLite keeps an in-memory record of the file locks its process holds. POSIX
locks are not inherited by a forked child, but that record is: a child forked
while a thread of its parent was inside a write transaction believes, for the
rest of its life, that someone in its own process holds the write lock. Every
write in the child then waits out the busy timeout and fails with "database is
locked" (``tests/test_fork_guard.py`` reproduces it with plain ``sqlite3``).
Even an idle connection carried across a fork is unsafe: the parent closing
its last one may checkpoint and delete the WAL the child is writing to. And a
child forked while another thread was inside SQLite (opening a connection, running
a statement) inherits SQLite's global mutexes locked and hangs on its first
``sqlite3_open``. SQLite's own advice is never to carry an open connection
across ``fork()``.

Celery's prefork pool forks its children from the worker's main process, whose
threads (task history, ledger) write while it does. So that process calls
``guard_forks()`` before the pool starts: from then on its engines open a
connection per use and close it after (``NullPool``, as Celery's own result
backend does before it forks), and ``os.fork`` first waits until no connection
of this process is open or opening and lets no new one open until the child exists. The
child starts unguarded, with no connection and no engine.

Connections are counted where they are made (``sqlite_guard.GuardedConnection``),
so every engine is covered, Celery's result backend included.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref

logger = logging.getLogger(__name__)

#: longest a fork waits for open connections to close (a transaction waits out the same busy timeout)
FORK_PATIENCE_S = 60.0

_cond = threading.Condition()
_enabled = False
_forking = False
_open: weakref.WeakSet[sqlite3.Connection] = weakref.WeakSet()
#: connections being opened now: SQLite holds its global mutexes inside ``sqlite3_open``, and a child
#: forked then would wait for them forever
_connecting = 0


def guard_forks() -> None:
    """From now on, forks of this process wait for its SQLite connections to close (see the module)."""
    global _enabled
    _enabled = True


def is_guarding() -> bool:
    return _enabled


def opening() -> bool:
    """Called before a connection opens: waits while this process is forking, then counts the
    opening until ``opened`` (True when counted)."""
    global _connecting
    if not _enabled:
        return False
    with _cond:
        while _forking:
            _cond.wait()
        _connecting += 1
    return True


def opened(connection: sqlite3.Connection | None, counted: bool) -> None:
    """Called after ``opening`` whether the connection opened (``connection``) or failed (None)."""
    global _connecting
    if not counted:
        return
    with _cond:
        _connecting -= 1
        if connection is not None:
            _open.add(connection)
        _cond.notify_all()


def closed(connection: sqlite3.Connection) -> None:
    if not _enabled:
        return
    with _cond:
        _open.discard(connection)
        _cond.notify_all()


def open_connections() -> int:
    with _cond:
        return len(_open) + _connecting


def _before_fork() -> None:
    global _forking
    if not _enabled:
        return
    deadline = time.monotonic() + FORK_PATIENCE_S
    with _cond:
        _forking = True
        while _open or _connecting:
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning(
                    "forking with %d SQLite connection(s) still open after %.0f s; the child may find the "
                    "database locked",
                    len(_open) + _connecting,
                    FORK_PATIENCE_S,
                )
                break
            # connections dropped without close() leave the weak set only when collected: look again often
            _cond.wait(min(left, 0.05))


def _after_fork_in_parent() -> None:
    global _forking
    if not _enabled:
        return
    with _cond:
        _forking = False
        _cond.notify_all()


def _after_fork_in_child() -> None:
    global _cond, _connecting, _enabled, _forking, _open
    # the parent's threads that held the condition or a connection do not exist here
    _cond = threading.Condition()
    _enabled = False
    _forking = False
    _open = weakref.WeakSet()
    _connecting = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
