"""SQLite connections that survive their files turning read-only, and recover when they are writable again.

In WAL mode every connection maps the ``-shm`` file (the WAL index) into
memory and writes to it, readers too. When that file stops being writable
under a live mapping (``chattr +i``, a filesystem remounted read-only after an
error) the kernel answers the next write to a mapped page with SIGBUS, which
kills the whole process: a pool process, or the worker's main process with
its task-history writer. Python cannot catch it. So MIDAS never lets SQLite
touch a database whose files it cannot write:

- ``GuardedConnection`` (the ``factory`` of every MIDAS SQLite connection,
  the result backend's included) checks the database, ``-wal`` and ``-shm``
  with ``access(W_OK)`` (which sees immutable files, also as root) before it
  opens and before every transaction, and raises ``StorageNotWritable``
  instead (a ``sqlite3.OperationalError``, so SQLAlchemy reports it like any
  database error and ``db.transient_db_errors`` makes it ``StorageUnavailable``).
  Connections opened while the files were read-only would stay read-only for
  good ("attempt to write a readonly database" minutes after the fault); none
  are opened.
- Closing the last connection checkpoints the WAL, which writes the mapping:
  a connection closed while its files are not writable is parked and closed
  once they are writable again.
- ``discard_broken_connections`` (a ``handle_error`` listener) throws away a
  connection SQLite itself reports as read-only, moved (SQLITE_READONLY_DBMOVED),
  failing I/O or unable to open, so the next use reopens the file.

The check costs three ``access`` calls per transaction (a few microseconds).
What it cannot prevent: the files turning read-only in the middle of a
transaction that then writes a mapped page. That process dies; Celery requeues
its task (``task_reject_on_worker_lost``) and replaces the pool process.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from typing import Any

from background_tasks.storage import fork_guard

logger = logging.getLogger(__name__)

#: primary SQLite result codes that mean "the storage cannot be written/read now"
SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN = 8, 10, 13, 14
_STORAGE_CODES = {SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN}
_STORAGE_MESSAGES = (
    "attempt to write a readonly database",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
)


class StorageNotWritable(sqlite3.OperationalError):
    """A file of the database cannot be written now; SQLite was not allowed to touch it."""


def unwritable_file(path: str) -> str | None:
    """The first file of database ``path`` that SQLite would write but cannot, or None.

    ``-wal`` and ``-shm`` that do not exist yet must be created, so then the
    folder has to be writable.
    """
    missing = False
    for candidate in (path + "-shm", path + "-wal", path):
        if os.access(candidate, os.W_OK):
            continue
        if os.path.lexists(candidate):
            return candidate
        missing = True
    folder = os.path.dirname(path) or "."
    if missing and not os.access(folder, os.W_OK | os.X_OK):
        return folder
    return None


def check_writable(path: str) -> None:
    """Raise ``StorageNotWritable`` when SQLite could not write database ``path`` now."""
    blocked = unwritable_file(path)
    if blocked is not None:
        raise StorageNotWritable(f"storage not writable: {blocked} cannot be written (read-only or immutable)")
    if _parked:
        _close_parked()


_parked_lock = threading.Lock()
#: connections whose close had to wait until their files are writable again
_parked: list[GuardedConnection] = []


def _close_parked() -> None:
    with _parked_lock:
        waiting = list(_parked)
    for conn in waiting:
        if unwritable_file(conn.midas_path) is not None:
            continue
        try:
            sqlite3.Connection.close(conn)
        except sqlite3.ProgrammingError:  # made in another thread: that thread closes it (next guard pass)
            continue
        with _parked_lock:
            if conn in _parked:
                _parked.remove(conn)
        logger.info("closed a connection to %s that waited for its files to be writable again", conn.midas_path)


def _database_path(database: Any, uri: bool) -> str | None:
    name = os.fsdecode(database) if isinstance(database, str | bytes | os.PathLike) else ""
    if not name or name == ":memory:" or uri or name.startswith("file:"):
        return None  # in-memory, or a URI (MIDAS uses plain paths): nothing to guard
    return os.path.abspath(name)


class GuardedCursor(sqlite3.Cursor):
    """Checks the files before a statement that starts a transaction (or runs outside one)."""

    def execute(self, sql: str, parameters: Any = (), /) -> GuardedCursor:  # type: ignore[override]
        conn = self.connection
        if not conn.in_transaction and isinstance(conn, GuardedConnection) and conn.midas_path:
            check_writable(conn.midas_path)
        return super().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> GuardedCursor:  # type: ignore[override]
        conn = self.connection
        if not conn.in_transaction and isinstance(conn, GuardedConnection) and conn.midas_path:
            check_writable(conn.midas_path)
        return super().executemany(sql, seq_of_parameters)


class GuardedConnection(sqlite3.Connection):
    """A ``sqlite3`` connection that is never opened, used or closed while its files are not writable."""

    midas_path: str | None = None

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        path = _database_path(database, bool(kwargs.get("uri")))
        if path is not None:
            check_writable(path)
        counted = fork_guard.opening()
        try:
            super().__init__(database, *args, **kwargs)
        except BaseException:
            fork_guard.opened(None, counted)
            raise
        self.midas_path = path
        fork_guard.opened(self, counted)

    def cursor(self, factory: Any = None) -> Any:  # type: ignore[override]
        return super().cursor(factory or GuardedCursor)

    def close(self) -> None:
        path = self.midas_path
        if path is not None and unwritable_file(path) is not None:
            with _parked_lock:
                if self not in _parked:
                    _parked.append(self)
            logger.warning("not closing a connection to %s while its files cannot be written; later", path)
            return
        super().close()
        fork_guard.closed(self)


def is_storage_fault(orig: BaseException | None) -> bool:
    """True when SQLite says the storage cannot be used now (read-only, moved, I/O error, full, cannot open)."""
    if isinstance(orig, StorageNotWritable):
        return True
    if not isinstance(orig, sqlite3.Error):
        return False
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _STORAGE_CODES
    message = str(orig).lower()
    return any(marker in message for marker in _STORAGE_MESSAGES)


def discard_broken_connections(context: Any) -> None:
    """SQLAlchemy ``handle_error`` listener: a connection SQLite reports as read-only or broken is not reused.

    A connection that met "attempt to write a readonly database" (opened while
    the file was read-only, or the file was replaced underneath it) would fail
    every write for the rest of the process. Marking the error a disconnect
    makes SQLAlchemy drop this one connection; the pool's other connections
    are fine and stay.
    """
    orig = context.original_exception
    if isinstance(orig, StorageNotWritable) or not is_storage_fault(orig):
        return  # the guard refused before SQLite touched anything: the connection itself is fine
    context.is_disconnect = True
    context.invalidate_pool_on_disconnect = False
    logger.warning("discarding a SQLite connection after %s: %s", getattr(orig, "sqlite_errorname", "error"), orig)


def _after_fork_in_child() -> None:
    # Connections parked by the parent belong to the parent: never close them here, just keep them
    # alive. A fresh lock: another thread of the parent may have held the old one at fork time.
    global _parked_lock
    _parked_lock = threading.Lock()
    _inherited.extend(_parked)
    _parked.clear()


_inherited: list[GuardedConnection] = []

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
