"""Retention: what ``cleanup_old_tasks`` removes once it is older than ``MIDAS_RETENTION_DAYS``.

Task history, health samples, finished ledger entries, analyses of content that is no
document, Celery's result rows; then SQLite files with much free space are compacted. Each
step reports its own error and the others still run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import exc as sa_exc

from background_tasks.ops.reach import error_text
from background_tasks.ops.task_history import utc
from background_tasks.settings import Settings
from background_tasks.storage import ledger as ledger_store
from background_tasks.storage import retention as retention_store
from background_tasks.storage.retention import compact_sqlite
from background_tasks.storage.schema import create_schema

#: kind of result row -> Celery's table of the result backend
RESULT_TABLES = {"results": "celery_taskmeta", "result_groups": "celery_tasksetmeta"}


@dataclass(frozen=True)
class CleanupResult:
    """Rows removed per kind, and which SQLite files were compacted."""

    cutoff: float
    days: float
    removed: dict[str, int]
    compacted: tuple[dict[str, Any], ...]
    errors: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compacted"] = list(self.compacted)
        data["errors"] = list(self.errors)
        return data


def cleanup(
    settings: Settings,
    days: float | None = None,
    now: float | None = None,
    result_tables: Mapping[str, str] | None = None,
    compact: bool = True,
) -> CleanupResult:
    """Delete history, result rows, health samples and orphan analyses older than ``days``; compact SQLite."""
    days = settings.retention_days if days is None else float(days)
    if days < 0 or not math.isfinite(days):
        raise ValueError(f"days must be zero or a positive number, got {days!r}")
    now = time.time() if now is None else now
    cutoff = now - days * 86400
    before = utc(cutoff)
    url = settings.database_url_resolved
    removed: dict[str, int] = {}
    errors: list[str] = []
    create_schema(url)  # a store that cannot be reached at all fails the task, not one step
    try:
        removed.update(retention_store.purge_history(url, before))
    except sa_exc.SQLAlchemyError as exc:
        errors.append(f"history: {error_text(exc)}")
    try:
        removed["ledger"] = ledger_store.purge_finished(url, before)  # done and failed entries
    except sa_exc.SQLAlchemyError as exc:
        errors.append(f"ledger: {error_text(exc)}")
    try:
        removed["orphan_analyses"] = retention_store.purge_orphan_analyses(url, before)
    except sa_exc.SQLAlchemyError as exc:
        errors.append(f"analyses: {error_text(exc)}")
    backend_url = settings.result_backend_url.removeprefix("db+")
    for kind, table_name in (result_tables or RESULT_TABLES).items():
        try:
            removed[kind] = retention_store.purge_results(backend_url, table_name, before)
        except sa_exc.SQLAlchemyError as exc:
            errors.append(f"{kind}: {error_text(exc)}")
    compacted = []
    if compact:
        for db_url in dict.fromkeys((url, backend_url)):
            outcome = compact_sqlite(db_url)
            if outcome is not None:
                compacted.append(outcome)
    return CleanupResult(cutoff, days, removed, tuple(compacted), tuple(errors))


__all__ = ["RESULT_TABLES", "CleanupResult", "cleanup", "compact_sqlite"]
