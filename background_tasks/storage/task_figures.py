"""Reads of the task history and the documents for the queue check and the task report.

The history itself is written by ``ops.task_history``; these are the questions asked of it:
when tasks a worker holds were sent and started, which tasks were active in a window, and
how many documents of each type and status finished in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from background_tasks.storage.db import read_scope
from background_tasks.storage.models import DocumentRow, TaskRecord
from background_tasks.storage.schema import create_schema


@dataclass(frozen=True, slots=True)
class TaskTimes:
    """When a task was sent and when it started, as stored (either may be unknown)."""

    sent_at: datetime | None
    started_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskRow:
    """What the report counts of one task."""

    name: str | None
    state: str
    retries: int | None
    runtime_s: float | None
    wait_s: float | None
    error_type: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class DocumentCount:
    """Documents of one file type and status, and their chunks."""

    file_type: str | None
    status: str
    documents: int
    chunks: int


def last_seen() -> Any:
    """A task's last sign of life: when it finished, else started, was received or sent."""
    return func.coalesce(TaskRecord.finished_at, TaskRecord.started_at, TaskRecord.received_at, TaskRecord.sent_at)


def history_times(url: str, task_ids: Sequence[str]) -> dict[str, TaskTimes]:
    """Sent and start times of the tasks in ``task_ids`` that the history knows."""
    if not task_ids:
        return {}
    create_schema(url)
    with read_scope(url) as session:
        rows = session.execute(
            select(TaskRecord.task_id, TaskRecord.sent_at, TaskRecord.started_at).where(
                TaskRecord.task_id.in_(list(task_ids))
            )
        )
        return {r.task_id: TaskTimes(r.sent_at, r.started_at) for r in rows}


def report_rows(url: str, since: datetime, until: datetime) -> list[TaskRow]:
    """The tasks whose last sign of life lies between ``since`` and ``until``."""
    create_schema(url)
    seen = last_seen()
    with read_scope(url) as session:
        rows = session.execute(
            select(
                TaskRecord.name,
                TaskRecord.state,
                TaskRecord.retries,
                TaskRecord.runtime_s,
                TaskRecord.wait_s,
                TaskRecord.error_type,
                TaskRecord.error_message,
            ).where(seen >= since, seen <= until)
        ).all()
    return [TaskRow(*row) for row in rows]


def document_counts(url: str, since: datetime | None = None) -> list[DocumentCount]:
    """Documents per file type and status: all of them, or those finished (or last changed) since ``since``."""
    create_schema(url)
    stmt = select(
        DocumentRow.file_type,
        DocumentRow.status,
        func.count(),
        func.coalesce(func.sum(DocumentRow.chunk_count), 0),
    ).group_by(DocumentRow.file_type, DocumentRow.status)
    if since is not None:
        stmt = stmt.where(func.coalesce(DocumentRow.finished_at, DocumentRow.updated_at) >= since)
    with read_scope(url) as session:
        rows = session.execute(stmt).all()
    return [DocumentCount(ftype, status, int(count), int(chunks)) for ftype, status, count, chunks in rows]


@dataclass(frozen=True, slots=True)
class TaskTotal:
    """Tasks of one name in one state in the kept history, and the sum and count of their known run times."""

    name: str | None
    state: str
    tasks: int
    runtime_sum_s: float
    runtime_count: int


def task_totals(url: str) -> list[TaskTotal]:
    """Per task name and state: how many the history holds, and their run times (for ``/metrics``)."""
    create_schema(url)
    stmt = select(
        TaskRecord.name,
        TaskRecord.state,
        func.count(),
        func.coalesce(func.sum(TaskRecord.runtime_s), 0.0),
        func.count(TaskRecord.runtime_s),
    ).group_by(TaskRecord.name, TaskRecord.state)
    with read_scope(url) as session:
        rows = session.execute(stmt).all()
    return [TaskTotal(name, state, int(n), float(total), int(timed)) for name, state, n, total, timed in rows]
