"""Writes of the ``task_history`` table: one upsert per event, ordered by the event's sequence.

Events for one task arrive out of order (client and worker are different
processes, each with its own writer). Each carries ``seq``; a row's state only
moves forward, while columns an earlier event knows better (send time,
arguments) are filled in whenever they are still empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func
from sqlalchemy.orm import Session

from background_tasks.storage.db import session_scope
from background_tasks.storage.models import TaskRecord
from background_tasks.storage.schema import create_schema
from background_tasks.storage.values import upsert

#: Columns an event sets only when it is the newest word on the task.
_GUARDED = (
    "state",
    "retries",
    "worker",
    "received_at",
    "started_at",
    "finished_at",
    "wait_s",
    "runtime_s",
    "result_summary",
    "error_type",
    "error_message",
    "traceback",
)
#: Columns filled in by whichever event knows them, never overwritten.
_FILL = ("name", "queue", "args_summary", "parent_id", "sent_at")
#: Guarded columns that an older event may still fill while they are empty: the worker's
#: main process (received) and its pool process (started) write independently, either first.
_FILL_WHEN_EMPTY = ("received_at", "worker")
#: Text columns cut to their length instead of refused.
_LENGTHS = {"name": 200, "queue": 100, "worker": 255, "error_type": 200, "parent_id": 155}


@dataclass(frozen=True)
class TaskEvent:
    """One word on one task: the columns it knows, and where it stands in the task's life."""

    task_id: str
    seq: int
    fields: dict[str, Any]


def utc(ts: float | None) -> datetime | None:
    """Epoch seconds -> aware UTC datetime (as the document store stores them)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC)


def epoch(value: datetime | None) -> float | None:
    """Datetime from the database (aware, or naive UTC from SQLite) -> epoch seconds."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC).timestamp() if value.tzinfo is None else value.timestamp()


def write_events(url: str, events: Sequence[TaskEvent]) -> None:
    """Upsert ``events`` in one transaction, in their order."""
    create_schema(url)
    with session_scope(url) as session:
        conn = session.connection()  # Core statements: the session's ORM layer would only cost time
        for event in events:
            conn.execute(_upsert_statement(session, conn.dialect.name, frozenset(event.fields)), _event_params(event))


_statements: dict[tuple[str, frozenset[str]], Any] = {}


def _upsert_statement(session: Session, dialect: str, columns: frozenset[str]) -> Any:
    """The upsert for events carrying ``columns``; built once per column set (building costs more than running)."""
    key = (dialect, columns)
    stmt = _statements.get(key)
    if stmt is not None:
        return stmt
    table = TaskRecord.__table__
    base = upsert(session, table)
    newer = base.excluded.seq >= table.c.seq
    set_: dict[str, Any] = {"seq": case((newer, base.excluded.seq), else_=table.c.seq)}
    for column in columns:
        if column in _FILL_WHEN_EMPTY:
            set_[column] = case((newer | table.c[column].is_(None), base.excluded[column]), else_=table.c[column])
        elif column in _GUARDED:
            set_[column] = case((newer, base.excluded[column]), else_=table.c[column])
        elif column in _FILL:
            set_[column] = func.coalesce(table.c[column], base.excluded[column])
    stmt = base.on_conflict_do_update(index_elements=[table.c.task_id], set_=set_)
    _statements[key] = stmt
    return stmt


def _event_params(event: TaskEvent) -> dict[str, Any]:
    # a row first created by an event without a state (a retry's receipt) starts as pending
    params = {"task_id": event.task_id, "seq": event.seq, "state": "pending", **event.fields}
    for column, limit in _LENGTHS.items():
        value = params.get(column)
        if isinstance(value, str) and len(value) > limit:
            params[column] = value[:limit]
    return params
