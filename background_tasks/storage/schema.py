"""One ``create_schema`` builds every MIDAS table, in any process that needs one of them.

Importing ``models`` registers all tables on ``Base``, so a worker, the watcher, the dashboard
and Beat all build the same complete schema, plus the full-text index of the chunks (SQLite
FTS5 with its triggers, or a stored PostgreSQL ``tsvector`` with a GIN index). Each engine
does it once: the memo is keyed on the engine, so a disposed engine (a dropped test database)
builds again.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from background_tasks.storage import models  # registers every table on Base
from background_tasks.storage.db import create_all, get_engine

logger = logging.getLogger(__name__)

_SQLITE_FTS_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5("
    "text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_ai AFTER INSERT ON chunks BEGIN "
    "INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_ad AFTER DELETE ON chunks BEGIN "
    "INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_au AFTER UPDATE ON chunks BEGIN "
    "INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END",
)
#: a stored tsvector (ranking reads it instead of re-parsing every matching chunk) and its GIN index
_PG_FTS_DDL = (
    "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, text)) STORED",
    "CREATE INDEX IF NOT EXISTS ix_chunks_tsv ON chunks USING GIN (tsv)",
)
#: key of the PostgreSQL advisory lock that serializes creating the full-text column and index
_PG_FTS_LOCK_KEY = 0x4D4944415346

_lock = threading.Lock()
#: engine -> whether full-text search is available on it
_built: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def _after_fork_in_child() -> None:
    # a thread of the parent may have held the lock when it forked (Celery prefork)
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def create_schema(url: str) -> bool:
    """Create every table and the full-text index of ``url`` if missing; True when FTS works.

    Idempotent and safe to race between processes and hosts.
    """
    engine = get_engine(url)
    with _lock:
        built = _built.get(engine)
        if built is not None:
            return built
        create_all(url)
        add_missing_columns(engine)
        fts = _create_sqlite_fts(engine) if engine.dialect.name == "sqlite" else _create_postgres_fts(engine)
        _built[engine] = fts
        return fts


def add_missing_columns(engine: Engine) -> list[str]:
    """Add the nullable columns a newer MIDAS declares to tables an older one created.

    ``create_all`` creates missing tables but never alters existing ones; columns are only ever
    added (nullable, no default), so an older worker still running beside a newer one keeps
    working. Returns the ``table.column`` names added.
    """
    existing = inspect(engine)
    tables = set(existing.get_table_names())
    added: list[str] = []
    for table in models.Base.metadata.sorted_tables:
        if table.name not in tables:
            continue
        have = {c["name"] for c in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name in have or not column.nullable or column.primary_key:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            guard = "IF NOT EXISTS " if engine.dialect.name == "postgresql" else ""
            try:
                with engine.begin() as conn:
                    conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN {guard}"{column.name}" {kind}'))
            except (OperationalError, ProgrammingError) as error:
                if "duplicate column" not in str(error.orig).lower():  # another process added it first
                    raise
            added.append(f"{table.name}.{column.name}")
            logger.info("schema: added column %s.%s", table.name, column.name)
    return added


def _create_postgres_fts(engine: Engine) -> bool:
    # Look before taking locks: ALTER TABLE locks the table even when the column exists.
    check = text(
        "SELECT (SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'chunks' AND column_name = 'tsv') + (SELECT count(*) FROM pg_indexes "
        "WHERE schemaname = current_schema() AND indexname = 'ix_chunks_tsv')"
    )
    with engine.connect() as conn:
        if conn.execute(check).scalar_one() == len(_PG_FTS_DDL):
            return True
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_FTS_LOCK_KEY})
        for ddl in _PG_FTS_DDL:
            conn.execute(text(ddl))
    return True


def _create_sqlite_fts(engine: Engine) -> bool:
    for attempt in range(5):
        try:
            with engine.begin() as conn:
                existed = conn.execute(
                    text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chunks_fts'")
                ).first()
                for ddl in _SQLITE_FTS_DDL:
                    conn.execute(text(ddl))
                if not existed and conn.execute(text("SELECT 1 FROM chunks LIMIT 1")).first():
                    conn.execute(text("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')"))
            return True
        except OperationalError as error:
            message = str(error.orig).lower()
            if "no such module" in message:
                logger.warning("SQLite was built without FTS5; search falls back to slow substring matching")
                return False
            if "already exists" in message and attempt < 4:
                continue
            raise
    return True
