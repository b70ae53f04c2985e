"""The dashboard's reads of task history (documents and chunks go through ``reading``, health samples
through ``health_samples``).

Each query is served by an index: filters and ordering use indexed columns,
pages use LIMIT/OFFSET over the ``sent_at`` index, counts stop at a cap, and
``tests/test_dashboard.py`` checks the query plans for full scans. Rows leave
as plain tuples and dicts with the database's own datetimes (naive UTC from
SQLite); the dashboard turns them into frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy import exc as sa_exc

from background_tasks.storage.db import get_engine, read_scope
from background_tasks.storage.models import TaskRecord

HISTORY_COLUMNS = (
    "task_id",
    "name",
    "state",
    "queue",
    "worker",
    "sent_at",
    "started_at",
    "finished_at",
    "wait_s",
    "runtime_s",
    "retries",
    "args_summary",
    "error_type",
)

#: Task history columns the dashboard offers as filters (each has its own index).
DISTINCT_COLUMNS = ("name", "queue")


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def database_problem(exc: BaseException) -> str | None:
    """A database error in one line a person can act on; None for anything else."""
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ):
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"the database could not be reached ({detail[0] if detail else type(exc).__name__})"
    if isinstance(exc, sa_exc.SQLAlchemyError):
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"database error: {detail[0] if detail else type(exc).__name__}"
    return None


# --------------------------------------------------------------------------
# Task history
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryFilter:
    """What the task history shows: empty tuples mean 'any'; times are epoch seconds on ``sent_at``."""

    names: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    text: str = ""


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _filtered(stmt: Select, flt: HistoryFilter) -> Select:
    if flt.names:
        stmt = stmt.where(TaskRecord.name.in_(flt.names))
    if flt.states:
        stmt = stmt.where(TaskRecord.state.in_(flt.states))
    if flt.queues:
        stmt = stmt.where(TaskRecord.queue.in_(flt.queues))
    if flt.since is not None:
        stmt = stmt.where(TaskRecord.sent_at >= _utc(flt.since))
    if flt.until is not None:
        stmt = stmt.where(TaskRecord.sent_at <= _utc(flt.until))
    text = (flt.text or "").strip()[:200]
    if text:
        pattern = _like(text)
        stmt = stmt.where(
            or_(
                TaskRecord.task_id == text,
                *(
                    col.ilike(pattern, escape="\\")
                    for col in (
                        TaskRecord.name,
                        TaskRecord.args_summary,
                        TaskRecord.result_summary,
                        TaskRecord.error_type,
                        TaskRecord.error_message,
                        TaskRecord.worker,
                    )
                ),
            )
        )
    return stmt


def _newest_first(url: str) -> list[Any]:
    newest = TaskRecord.sent_at.desc()
    if get_engine(url).dialect.name == "postgresql":  # PostgreSQL puts NULLs first when descending
        newest = newest.nulls_last()
    return [newest, TaskRecord.task_id.desc()]


def history_rows(url: str, flt: HistoryFilter, limit: int, offset: int, cap: int) -> tuple[list[tuple], int]:
    """Rows of ``HISTORY_COLUMNS``, newest first, and the matching count read no further than ``cap + 1``."""
    cols = [getattr(TaskRecord, c) for c in HISTORY_COLUMNS]
    stmt = _filtered(select(*cols), flt).order_by(*_newest_first(url)).limit(limit).offset(offset)
    capped = _filtered(select(TaskRecord.task_id), flt).limit(cap + 1).subquery()
    with read_scope(url) as session:
        rows = [tuple(r) for r in session.execute(stmt)]
        total = int(session.execute(select(func.count()).select_from(capped)).scalar_one())
    return rows, total


def task_row(url: str, task_id: str) -> dict[str, Any] | None:
    """Every recorded column of one task."""
    with read_scope(url) as session:
        row = session.get(TaskRecord, task_id)
        return None if row is None else row.as_dict()


def distinct_task_values(url: str, column: str) -> list[str]:
    """Task names or queues seen (each served by its own index)."""
    if column not in DISTINCT_COLUMNS:
        raise ValueError(f"not a filterable column: {column!r}")
    col = getattr(TaskRecord, column)
    with read_scope(url) as session:
        return [v for (v,) in session.execute(select(col).distinct().where(col.is_not(None)).order_by(col)) if v]


def _finished_between(stmt: Select, since: float, until: float) -> Select:
    return stmt.where(TaskRecord.finished_at >= _utc(since), TaskRecord.finished_at <= _utc(until))


def finished_state_counts(url: str, since: float, until: float) -> dict[str, int]:
    """Tasks per final state among those finished in the window (index on ``finished_at``)."""
    stmt = _finished_between(select(TaskRecord.state, func.count()), since, until).group_by(TaskRecord.state)
    with read_scope(url) as session:
        return {state: int(n) for state, n in session.execute(stmt)}


def count_in_state(url: str, state: str) -> int:
    """Tasks the history holds in one state (index on ``state``)."""
    with read_scope(url) as session:
        return int(session.execute(select(func.count()).where(TaskRecord.state == state)).scalar_one())


def finished_per_bucket(url: str, since: float, until: float, unit: str) -> list[tuple[Any, str, int]]:
    """(bucket start, state, count) of tasks finished in the window, per ``unit`` ('minute' or 'hour').

    The bucket is a datetime on PostgreSQL and 'YYYY-MM-DD HH:MM:00' text (UTC) on SQLite.
    """
    if unit not in ("minute", "hour"):
        raise ValueError(f"not a bucket unit: {unit!r}")
    if get_engine(url).dialect.name == "postgresql":
        bucket = func.date_trunc(unit, TaskRecord.finished_at)
    else:
        bucket = func.strftime("%Y-%m-%d %H:%M:00" if unit == "minute" else "%Y-%m-%d %H:00:00", TaskRecord.finished_at)
    bucket = bucket.label("bucket")
    stmt = _finished_between(select(bucket, TaskRecord.state, func.count()), since, until)
    with read_scope(url) as session:
        return [(b, state, int(n)) for b, state, n in session.execute(stmt.group_by(bucket, TaskRecord.state))]


def finished_timings(url: str, since: float, until: float, limit: int) -> list[tuple[str | None, str, Any, Any]]:
    """(name, state, runtime_s, wait_s) of at most ``limit`` tasks finished in the window."""
    stmt = _finished_between(
        select(TaskRecord.name, TaskRecord.state, TaskRecord.runtime_s, TaskRecord.wait_s), since, until
    ).limit(limit)
    with read_scope(url) as session:
        return [tuple(r) for r in session.execute(stmt)]


__all__ = [
    "DISTINCT_COLUMNS",
    "HISTORY_COLUMNS",
    "HistoryFilter",
    "count_in_state",
    "database_problem",
    "distinct_task_values",
    "finished_per_bucket",
    "finished_state_counts",
    "finished_timings",
    "history_rows",
    "task_row",
]
