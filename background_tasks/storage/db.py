"""Database plumbing shared by every MIDAS table.

One declarative ``Base`` holds all models (every table is in ``models``;
``schema.create_schema`` builds them all). SQLite is the
default and is tuned for several worker processes writing at once (WAL,
busy timeout); PostgreSQL works unchanged through the same URL-based API.
Database hiccups that retrying can fix (a locked SQLite file, a PostgreSQL
serialization failure or dropped connection) surface as ``TransientError``
via ``transient_db_errors`` so tasks retry them instead of failing documents;
storage that cannot be written at all (read-only, I/O errors, full, server
gone) surfaces as ``StorageUnavailable``. SQLite connections are guarded
against their files turning read-only (``sqlite_guard``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool

from background_tasks.errors import StorageUnavailable, TransientError
from background_tasks.storage import fork_guard
from background_tasks.storage.sqlite_guard import GuardedConnection, discard_broken_connections, is_storage_fault

logger = logging.getLogger(__name__)

#: key of the PostgreSQL advisory lock that serializes concurrent schema creation
_SCHEMA_LOCK_KEY = 0x4D49444153  # "MIDAS"


class Base(DeclarativeBase):
    """Declarative base of every MIDAS table."""


_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}
_readers: dict[str, sessionmaker[Session]] = {}
#: engines a forked child inherited from its parent, kept so their connections are never closed here
_inherited: list[Engine] = []
#: execution option that marks a connection as read-only (see ``read_scope``)
_READ_ONLY = "midas_read_only"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database).expanduser()


# How long a SQLite connection waits for other writers (and for the switch to WAL) before it gives up.
BUSY_TIMEOUT_S = 30


def _prepare_sqlite_file(path: Path) -> None:
    """Create the private folder and the file itself with owner-only permissions."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    if os.name == "posix" and (path.stat().st_mode & 0o777) != 0o600:
        os.chmod(path, 0o600)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first, so switching to WAL waits for other writers.
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # No memory-mapped I/O of the database file (the default of most builds, made sure here): a
        # mapped page of a file that turns read-only kills the process with SIGBUS. The WAL index
        # (-shm) is always mapped; sqlite_guard keeps SQLite away from it when it is not writable.
        cursor.execute("PRAGMA mmap_size=0")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any, patience_s: float = BUSY_TIMEOUT_S) -> None:
    """Put the file in WAL mode, waiting out other connections that hold it.

    Changing the journal mode of a fresh file that another process is opening or writing at the
    same moment answers "database is locked" at once, without the busy handler (seen when three
    workers start together on an empty data folder). WAL is kept in the file, so once any
    connection has switched, the others find it set and change nothing.
    """
    deadline = time.monotonic() + patience_s
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _begin(connection: Any) -> None:
    """Start SQLite transactions the way their use needs.

    A deferred transaction that reads and then writes cannot wait for another writer: SQLite
    answers "database is locked" at once, whatever the busy timeout, because its snapshot may be
    stale. So writing sessions start with BEGIN IMMEDIATE and queue on the busy timeout instead.
    Read-only sessions (``read_scope``) start a plain deferred transaction: under WAL it is a
    consistent snapshot that neither waits for writers nor makes them wait, so the dashboard and
    reports never hold up a worker.
    """
    options = connection.get_execution_options()
    if options.get("isolation_level") == "AUTOCOMMIT":
        return  # e.g. VACUUM, which must run outside any transaction
    connection.exec_driver_sql("BEGIN" if options.get(_READ_ONLY) else "BEGIN IMMEDIATE")


def configure_sqlite_engine(engine: Engine) -> None:
    """Pragmas and transaction start of a SQLite engine (also used for Celery's result backend).

    The engine must be created with ``isolation_level=None`` in ``connect_args`` so the sqlite3
    driver leaves transactions to us (SQLAlchemy's documented recipe for pysqlite).
    """
    if engine.dialect.name != "sqlite":
        return
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _begin)
    event.listen(engine, "handle_error", discard_broken_connections)


#: SQLite connect arguments that go with ``configure_sqlite_engine``; the factory is ``sqlite_guard``'s
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": 30, "isolation_level": None, "factory": GuardedConnection}


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url`` (created once, then cached)."""
    with _lock:
        engine = _engines.get(url)
        if engine is not None:
            return engine
        if is_sqlite(url):
            path = sqlite_path(url)
            if path is not None:
                _prepare_sqlite_file(path)
            # a process that forks database users keeps no connection open between uses (fork_guard)
            pooling: dict[str, Any] = {"poolclass": NullPool} if fork_guard.is_guarding() else {}
            engine = create_engine(url, connect_args=dict(SQLITE_CONNECT_ARGS), **pooling)
            configure_sqlite_engine(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        _engines[url] = engine
        _sessionmakers[url] = sessionmaker(bind=engine, expire_on_commit=False)
        _readers[url] = sessionmaker(bind=engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False)
        return engine


def dispose_engine(url: str) -> None:
    """Close and forget the engine of ``url`` (tests; before dropping a database)."""
    with _lock:
        engine = _engines.pop(url, None)
        _sessionmakers.pop(url, None)
        _readers.pop(url, None)
    if engine is not None:
        engine.dispose()


def guard_forks() -> None:
    """Make this process safe to fork children that use the database (Celery's prefork pool).

    Its SQLite engines from now on hold no connection between uses, and a fork waits until none
    is open (``fork_guard`` says why). Engines made before are closed and made again on next use.
    """
    fork_guard.guard_forks()
    with _lock:
        engines = [(url, _engines.pop(url)) for url in list(_engines) if is_sqlite(url)]
        for url, _engine in engines:
            _sessionmakers.pop(url, None)
            _readers.pop(url, None)
    for _url, engine in engines:
        engine.dispose()


def _after_fork_in_child() -> None:
    # Connections inherited from the parent must not be used by the child (Celery prefork): set the
    # parent's engines aside and build new ones on first use. They are kept referenced, never closed:
    # closing (or collecting) an inherited SQLite connection runs SQLite's close path in the wrong
    # process. A parent's thread may have held the lock at the fork.
    global _lock
    _lock = threading.Lock()
    _inherited.extend(_engines.values())
    _engines.clear()
    _sessionmakers.clear()
    _readers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    get_engine(url)
    with _scope(_sessionmakers[url]) as session:
        yield session


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """A session for reading only: on SQLite it never takes the write lock (see ``_begin``)."""
    get_engine(url)
    with _scope(_readers[url]) as session:
        yield session


@contextmanager
def _scope(maker: sessionmaker[Session]) -> Iterator[Session]:
    session = maker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")
_PG_TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "53300",  # too_many_connections
    "08000",
    "08003",
    "08006",
    "08001",
    "08004",
}


#: PostgreSQL SQLSTATE classes/codes meaning the server or its storage cannot take writes now
_PG_STORAGE_SQLSTATES = ("08", "53", "58", "57P0", "25006")


def is_storage_unavailable(error: BaseException) -> bool:
    """True when the database cannot be used at all now (read-only, I/O error, full, unreachable).

    Unlike a lock or a serialization failure this says nothing about the work
    at hand, so it is retried for as long as it lasts (``StorageUnavailable``).
    """
    if isinstance(error, exc.DisconnectionError):
        return True
    if not isinstance(error, exc.DBAPIError):
        return False
    orig = error.orig
    if is_storage_fault(orig):
        return True
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        return sqlstate.startswith(_PG_STORAGE_SQLSTATES)
    if error.connection_invalidated:
        return True
    return isinstance(error, exc.OperationalError) and type(orig).__module__.startswith("psycopg")


def is_transient(error: BaseException) -> bool:
    """True for database errors that a later retry can be expected to get past."""
    if isinstance(error, exc.TimeoutError | exc.DisconnectionError):
        return True
    if not isinstance(error, exc.DBAPIError):
        return False
    if error.connection_invalidated or is_storage_unavailable(error):
        return True
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        return sqlstate in _PG_TRANSIENT_SQLSTATES or sqlstate.startswith("08")
    message = str(orig).lower()
    if any(marker in message for marker in _SQLITE_TRANSIENT):
        return True
    # psycopg raises OperationalError without an SQLSTATE when it cannot connect at all
    return isinstance(error, exc.OperationalError) and type(orig).__module__.startswith("psycopg")


@contextmanager
def transient_db_errors() -> Iterator[None]:
    """Turn retryable database errors into ``TransientError`` (``StorageUnavailable`` when the
    database cannot be written at all); others pass through."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        if is_transient(error):
            detail = str(getattr(error, "orig", None) or error).strip().splitlines()
            kind = StorageUnavailable if is_storage_unavailable(error) else TransientError
            raise kind(f"database temporarily unavailable: {detail[0] if detail else error}") from error
        raise


def _is_already_exists(error: exc.DBAPIError) -> bool:
    message = str(error.orig).lower()
    sqlstate = getattr(error.orig, "sqlstate", None)
    return (
        "already exists" in message
        or sqlstate in {"42P07", "42710", "23505"}  # duplicate table / object / pg_type unique race
    )


def create_all(url: str, attempts: int = 5) -> None:
    """Create every table on ``Base`` that is missing. Idempotent and safe to race.

    On PostgreSQL an advisory lock serializes concurrent callers; on SQLite the
    "already exists" error of a lost race is caught and the check repeated.
    """
    engine = get_engine(url)
    for attempt in range(1, attempts + 1):
        try:
            with transient_db_errors(), engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
                Base.metadata.create_all(conn, checkfirst=True)
            return
        except exc.DBAPIError as error:
            if attempt == attempts or not _is_already_exists(error):
                raise
            logger.debug("schema created concurrently by another process, checking again (%s)", error.orig)
