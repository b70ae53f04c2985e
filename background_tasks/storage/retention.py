"""The deletes of retention and the compaction of SQLite files.

``ops.retention.cleanup`` decides the cutoff and reports what each step removed or why it
failed; these functions do one step each and raise what the database raises.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, delete, select
from sqlalchemy import exc as sa_exc

from background_tasks.storage.db import get_engine, is_sqlite, session_scope, sqlite_path
from background_tasks.storage.models import AnalysisRow, DocumentRow, HealthSample, TaskRecord
from background_tasks.storage.schema import create_schema
from background_tasks.storage.task_figures import last_seen

log = logging.getLogger(__name__)

#: SQLite files are compacted when at least this much (and this share) of them is free pages.
VACUUM_MIN_FREE_BYTES = 1 << 20
VACUUM_MIN_FREE_SHARE = 0.2


def purge_history(url: str, before: datetime) -> dict[str, int]:
    """Delete task history (by its last sign of life) and health samples older than ``before``, together."""
    create_schema(url)
    with session_scope(url) as session:
        tasks = session.execute(delete(TaskRecord).where(last_seen() < before)).rowcount
        samples = session.execute(delete(HealthSample).where(HealthSample.taken_at < before)).rowcount
    return {"task_history": int(tasks), "health_samples": int(samples)}


def purge_orphan_analyses(url: str, before: datetime) -> int:
    """Analyses last changed before ``before`` of content that is not (or no longer) a stored document.

    A file analysed directly (``analyze_data_file`` without processing it) has no document, so
    removing documents never removed its analysis; one whose document exists is kept with it.
    """
    create_schema(url)
    known = select(DocumentRow.id).where(DocumentRow.sha256 == AnalysisRow.sha256).exists()
    orphan = AnalysisRow.document_id.is_(None) & (AnalysisRow.updated_at < before) & ~known
    with session_scope(url) as session:
        return int(session.execute(delete(AnalysisRow).where(orphan)).rowcount)


def purge_results(url: str, table_name: str, before: datetime) -> int:
    """Delete rows of a Celery result table (``celery_taskmeta`` ...) done before ``before``; 0 without the table."""
    engine = get_engine(url)
    try:
        table = Table(table_name, MetaData(), autoload_with=engine)
    except sa_exc.NoSuchTableError:
        return 0
    # Celery's column is a zone-less DateTime holding UTC.
    naive = before.astimezone(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        return int(conn.execute(delete(table).where(table.c.date_done < naive)).rowcount)


def compact_sqlite(url: str) -> dict[str, Any] | None:
    """VACUUM a SQLite database when enough of it is free pages; None when not SQLite or not worthwhile."""
    path = sqlite_path(url)
    if not is_sqlite(url) or path is None:
        return None
    engine = get_engine(url)
    try:
        with engine.connect() as conn:
            page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
        if free * page_size < VACUUM_MIN_FREE_BYTES or free < VACUUM_MIN_FREE_SHARE * pages:
            return None
        before = _sqlite_size(path)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return {"path": str(path), "bytes_before": before, "bytes_after": _sqlite_size(path), "free_pages": free}
    except sa_exc.SQLAlchemyError as exc:
        error = f"{type(exc).__name__}: {exc}".strip()
        log.warning("could not compact %s: %s", path, error)
        return {"path": str(path), "error": error}


def _sqlite_size(path: Path) -> int:
    total = 0
    for candidate in (path, path.with_name(path.name + "-wal")):
        try:
            total += candidate.stat().st_size
        except OSError:
            pass
    return total
