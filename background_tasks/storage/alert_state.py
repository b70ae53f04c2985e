"""The alerts' memory in the database: quiet periods claimed per kind, and the failures to report.

A quiet period is claimed by compare-and-swap on ``alert_state.last_sent_at``, so several
processes failing at once agree on one sender whichever database they share.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from background_tasks.statuses import TaskState
from background_tasks.storage.db import read_scope, session_scope
from background_tasks.storage.models import AlertState, TaskRecord
from background_tasks.storage.schema import create_schema
from background_tasks.storage.values import as_utc, upsert

#: compare-and-swap attempts before a claim gives up to another process
CLAIM_ATTEMPTS = 5


def claim(url: str, kind: str, now: datetime, quiet_s: float) -> tuple[bool, datetime | None]:
    """Take the quiet period of ``kind`` unless one began less than ``quiet_s`` ago: (claimed, previous send)."""
    create_schema(url)
    table = AlertState.__table__
    with session_scope(url) as session:
        fresh = upsert(session, table).values(kind=kind, last_sent_at=None, last_count=0)
        session.execute(fresh.on_conflict_do_nothing())
    for _ in range(CLAIM_ATTEMPTS):  # another process may claim in between
        with session_scope(url) as session:
            previous = session.execute(select(table.c.last_sent_at).where(table.c.kind == kind)).scalar_one()
            previous_at = as_utc(previous)
            if previous_at is not None and (now - previous_at).total_seconds() < quiet_s:
                return False, previous_at
            condition = table.c.last_sent_at.is_(None) if previous is None else table.c.last_sent_at == previous
            result = session.execute(update(table).where(table.c.kind == kind, condition).values(last_sent_at=now))
            if result.rowcount == 1:
                return True, previous_at
    return False, None


def record_count(url: str, kind: str, count: int) -> None:
    """How many events the last alert of ``kind`` covered."""
    with session_scope(url) as session:
        session.execute(update(AlertState).where(AlertState.kind == kind).values(last_count=count))


def last_sent(url: str, kind: str) -> datetime | None:
    """When the last alert of ``kind`` was sent, or None."""
    create_schema(url)
    with read_scope(url) as session:
        return as_utc(session.scalar(select(AlertState.last_sent_at).where(AlertState.kind == kind)))


def _failed_between(since: datetime, until: datetime) -> Any:
    finished = (TaskRecord.finished_at > since) & (TaskRecord.finished_at <= until)
    return (TaskRecord.state == TaskState.FAILURE) & finished


def any_failure(url: str, since: datetime, until: datetime) -> bool:
    """Whether a task failed for good after ``since`` and up to ``until``."""
    create_schema(url)
    with read_scope(url) as session:
        return session.scalar(select(TaskRecord.task_id).where(_failed_between(since, until)).limit(1)) is not None


def failures(url: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The history rows of the tasks that failed for good after ``since`` and up to ``until``, newest first."""
    create_schema(url)
    with read_scope(url) as session:
        rows = session.scalars(
            select(TaskRecord).where(_failed_between(since, until)).order_by(TaskRecord.finished_at.desc())
        ).all()
        return [r.as_dict() for r in rows]
