"""The SQL of the intake ledger: every submission from publish to done, so nothing is lost.

An entry is written as its message is published (``record_sent``), leased by the worker that
starts it (``start``, renewed by ``renew`` while it runs), and closed when its outcome is
recorded (``finish``). ``claim_due`` hands the reaper the entries nobody has looked after for a
while (queued past their check time, running past their lease) and pushes their check time on
in the same transaction, so two reapers on two hosts never take the same entry (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL; SQLite's write lock serializes them).

Every time is UTC. SQLite hands times back without their zone; ``_utc`` reads both.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from background_tasks.statuses import LedgerState
from background_tasks.storage.db import get_engine, read_scope, session_scope, transient_db_errors
from background_tasks.storage.models import LedgerEntry
from background_tasks.storage.schema import create_schema
from background_tasks.storage.values import insert_for

#: arguments larger than this are not kept (the entry can then not be sent again, and says so)
MAX_CALL_BYTES = 4 * 1024 * 1024
_OVER = (LedgerState.DONE, LedgerState.FAILED)
_OPEN = (LedgerState.QUEUED, LedgerState.RUNNING)
_LENGTHS = {"name": 200, "queue": 100, "worker": 255}
_MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class Submission:
    """A task as it was published."""

    task_id: str
    name: str
    args: Sequence[Any] = ()
    kwargs: dict[str, Any] | None = None
    queue: str | None = None


@dataclass(frozen=True)
class Due:
    """An open entry the reaper should look at: ``call`` is None when its arguments were not kept."""

    task_id: str
    name: str
    call: dict[str, Any] | None
    queue: str | None
    state: LedgerState
    attempts: int
    resends: int
    worker: str | None


@dataclass(frozen=True)
class LedgerCounts:
    """What the ledger holds now."""

    queued: int
    running: int
    done: int
    failed: int
    resent_last_hour: int
    oldest_queued_s: float | None
    #: open entries the reaper should have looked at more than ``overdue_s`` ago (is Beat running?)
    overdue: int = 0


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _clip(column: str, value: str | None) -> str | None:
    limit = _LENGTHS[column]
    return value[:limit] if value is not None and len(value) > limit else value


def _call_json(submission: Submission) -> dict[str, Any] | None:
    call = {"args": list(submission.args or ()), "kwargs": dict(submission.kwargs or {})}
    try:
        size = len(json.dumps(call, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError):
        return None
    return call if size <= MAX_CALL_BYTES else None


_TABLE = LedgerEntry.__table__


@dataclass(frozen=True)
class _Statements:
    """The ledger's hot statements, built once per dialect so a task pays no SQL compilation.

    Every task is published, started, recorded and closed; built and compiled anew each time
    these statements cost about 0.5 ms of CPU apiece, more than a tiny document's processing
    can hide. Compiled once they hit SQLAlchemy's statement cache and run as ``executemany``.
    """

    sent: Any
    start: Any
    finish: Any
    outcome: Any


@functools.cache
def _statements(dialect: str) -> _Statements:
    c = _TABLE.c
    # plain comparisons: an IN list cannot be used by an upsert executed for many rows
    not_over = and_(*(c.state != s.value for s in _OVER))
    sent = insert_for(dialect, _TABLE)
    sent = sent.on_conflict_do_update(
        index_elements=[c.task_id],
        set_={
            "state": LedgerState.QUEUED.value,
            "sent_at": sent.excluded.sent_at,
            "check_after": sent.excluded.check_after,
            "lease_until": None,
            "worker": None,
        },
        where=not_over,
    )
    start = insert_for(dialect, _TABLE)
    start = start.on_conflict_do_update(
        index_elements=[c.task_id],
        set_={
            "state": LedgerState.RUNNING.value,
            "attempts": c.attempts + 1,
            "started_at": start.excluded.started_at,
            "lease_until": start.excluded.lease_until,
            "check_after": start.excluded.check_after,
            "worker": start.excluded.worker,
        },
        where=not_over,
    )
    finish = (
        update(_TABLE)
        .where(c.task_id == bindparam("b_task_id"), not_over)
        .values(state=bindparam("b_state"), finished_at=bindparam("b_at"), lease_until=None, error=bindparam("b_error"))
    )
    outcome = (
        update(_TABLE)
        .where(c.task_id == bindparam("b_task_id"))
        .values(document_id=bindparam("b_document_id"), outcome=bindparam("b_outcome"))
    )
    return _Statements(sent, start, finish, outcome)


def _statements_of(bind: Engine | Any) -> _Statements:
    return _statements(bind.dialect.name)


def record_sent(url: str, submissions: Iterable[Submission], now: datetime, grace_s: float) -> int:
    """Record published tasks as queued (a retry's or a re-send's message re-opens its entry).

    Entries already done or failed stay as they are: a late duplicate of a finished task
    must not bring it back. Returns how many submissions were given.
    """
    rows = [
        {
            "task_id": s.task_id,
            "name": _clip("name", s.name) or "",
            "call_json": _call_json(s),
            "queue": _clip("queue", s.queue),
            "state": LedgerState.QUEUED.value,
            "attempts": 0,
            "resends": 0,
            "sent_at": now,
            "check_after": now + timedelta(seconds=grace_s),
        }
        for s in submissions
    ]
    if not rows:
        return 0
    create_schema(url)
    engine = get_engine(url)
    with transient_db_errors(), engine.begin() as connection:
        connection.execute(_statements_of(engine).sent, rows)
    return len(rows)


@dataclass(frozen=True)
class Started:
    """A worker took a task at ``at`` (its lease runs ``lease_s`` from then)."""

    submission: Submission
    worker: str
    lease_s: float
    at: datetime


@dataclass(frozen=True)
class Finished:
    """A task's entry closes as done or failed."""

    task_id: str
    state: LedgerState
    at: datetime
    error: str | None = None


def start(url: str, submission: Submission, worker: str, lease_s: float, now: datetime) -> int:
    """A worker takes the entry (creating it when its publisher kept no ledger); returns its attempts.

    A finished entry is not re-opened: a redelivery after the outcome was recorded is the
    task's own business (it finds its stored result).
    """
    create_schema(url)
    with transient_db_errors(), session_scope(url) as session:
        start_in(session, Started(submission, worker, lease_s, now))
        attempts = session.scalar(select(LedgerEntry.attempts).where(LedgerEntry.task_id == submission.task_id))
    return int(attempts or 0)


def apply(url: str, started: Sequence[Started] = (), finished: Sequence[Finished] = ()) -> None:
    """Starts, then finishes, of one worker process in one transaction (the worker batches them)."""
    if not started and not finished:
        return
    create_schema(url)
    engine = get_engine(url)
    statements = _statements_of(engine)
    with transient_db_errors(), engine.begin() as connection:
        if started:
            connection.execute(statements.start, [_start_row(e) for e in started])
        if finished:
            connection.execute(statements.finish, [_finish_row(e) for e in finished])


def _start_row(event: Started) -> dict[str, Any]:
    submission, now = event.submission, event.at
    lease = now + timedelta(seconds=event.lease_s)
    return {
        "task_id": submission.task_id,
        "name": _clip("name", submission.name) or "",
        "call_json": _call_json(submission),
        "queue": _clip("queue", submission.queue),
        "state": LedgerState.RUNNING.value,
        "attempts": 1,
        "resends": 0,
        "sent_at": now,
        "started_at": now,
        "lease_until": lease,
        "check_after": lease,
        "worker": _clip("worker", event.worker),
    }


def _finish_row(event: Finished) -> dict[str, Any]:
    if event.state not in _OVER:
        raise ValueError(f"an entry finishes as done or failed, not {event.state!r}")
    error = event.error[:_MAX_ERROR_CHARS] if event.error else None
    return {"b_task_id": event.task_id, "b_state": event.state.value, "b_at": event.at, "b_error": error}


def start_in(session: Session, event: Started) -> None:
    """``start`` inside the caller's transaction."""
    connection = session.connection()
    connection.execute(_statements_of(connection).start, [_start_row(event)])


def renew(url: str, worker: str, lease_s: float, now: datetime, task_ids: Iterable[str] | None = None) -> int:
    """Push on the leases of ``worker``'s running entries (only ``task_ids`` when given)."""
    lease = now + timedelta(seconds=lease_s)
    stmt = (
        update(LedgerEntry)
        .where(LedgerEntry.worker == _clip("worker", worker), LedgerEntry.state == LedgerState.RUNNING.value)
        .values(lease_until=lease, check_after=lease)
    )
    if task_ids is not None:
        ids = list(task_ids)
        if not ids:
            return 0
        stmt = stmt.where(LedgerEntry.task_id.in_(ids))
    create_schema(url)
    with transient_db_errors(), session_scope(url) as session:
        return session.execute(stmt).rowcount or 0


def finish_in(session: Session, task_id: str, state: LedgerState, now: datetime, error: str | None = None) -> bool:
    """Close an entry inside the caller's transaction (the one that records the outcome)."""
    params = _finish_row(Finished(task_id, state, now, error))
    connection = session.connection()
    result = connection.execute(_statements_of(connection).finish, params)
    return bool(result.rowcount)


def record_outcome_in(session: Session, task_id: str, document_id: int, outcome: str) -> bool:
    """Write which document an entry recorded, inside the transaction that records it.

    The entry stays open: it is closed after the task's follow-ups are published, so a worker
    that dies in between is noticed by its lease and the task runs again (finding its stored
    result and publishing what was missing). The store and the ledger never disagree about
    what was recorded.
    """
    connection = session.connection()
    params = {"b_task_id": task_id, "b_document_id": int(document_id), "b_outcome": str(outcome)[:20]}
    return bool(connection.execute(_statements_of(connection).outcome, params).rowcount)


def finish(url: str, task_id: str, state: LedgerState, now: datetime, error: str | None = None) -> bool:
    """Close an entry in a transaction of its own; False when it was not open."""
    create_schema(url)
    with transient_db_errors(), session_scope(url) as session:
        return finish_in(session, task_id, state, now, error)


def claim_due(url: str, now: datetime, hold_s: float, limit: int = 500) -> list[Due]:
    """Take up to ``limit`` open entries whose check time has come, and push it on by ``hold_s``."""
    create_schema(url)
    with transient_db_errors(), session_scope(url) as session:
        query = (
            select(LedgerEntry)
            .where(LedgerEntry.state.in_([s.value for s in _OPEN]), LedgerEntry.check_after <= now)
            .order_by(LedgerEntry.check_after)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        entries = list(session.scalars(query))
        if not entries:
            return []
        session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.task_id.in_([e.task_id for e in entries]))
            .values(check_after=now + timedelta(seconds=hold_s))
        )
        return [
            Due(
                task_id=e.task_id,
                name=e.name,
                call=e.call_json if isinstance(e.call_json, dict) else None,
                queue=e.queue,
                state=LedgerState(e.state),
                attempts=e.attempts or 0,
                resends=e.resends or 0,
                worker=e.worker,
            )
            for e in entries
        ]


def mark_resent(url: str, task_ids: Sequence[str], now: datetime, grace_s: float) -> int:
    """Count a re-send of each entry and put it back to queued."""
    if not task_ids:
        return 0
    create_schema(url)
    with transient_db_errors(), session_scope(url) as session:
        result = session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.task_id.in_(list(task_ids)), LedgerEntry.state.in_([s.value for s in _OPEN]))
            .values(
                state=LedgerState.QUEUED.value,
                resends=LedgerEntry.resends + 1,
                last_resent_at=now,
                sent_at=now,
                lease_until=None,
                worker=None,
                check_after=now + timedelta(seconds=grace_s),
            )
        )
        return result.rowcount or 0


def fail(url: str, task_id: str, reason: str, now: datetime) -> bool:
    """Close an entry that cannot be sent again (unknown task, unusable arguments, file gone)."""
    return finish(url, task_id, LedgerState.FAILED, now, reason)


def counts(url: str, now: datetime, overdue_s: float = 120.0) -> LedgerCounts:
    """How many entries are in each state, re-sends in the last hour, the oldest queued entry's age."""
    create_schema(url)
    with transient_db_errors(), read_scope(url) as session:
        by_state = dict(session.execute(select(LedgerEntry.state, func.count()).group_by(LedgerEntry.state)).all())
        resent = session.scalar(select(func.count()).where(LedgerEntry.last_resent_at >= now - timedelta(hours=1)))
        oldest = _utc(
            session.scalar(select(func.min(LedgerEntry.sent_at)).where(LedgerEntry.state == LedgerState.QUEUED.value))
        )
        overdue = session.scalar(
            select(func.count()).where(
                LedgerEntry.state.in_([s.value for s in _OPEN]),
                LedgerEntry.check_after < now - timedelta(seconds=overdue_s),
            )
        )
    return LedgerCounts(
        queued=int(by_state.get(LedgerState.QUEUED.value, 0)),
        running=int(by_state.get(LedgerState.RUNNING.value, 0)),
        done=int(by_state.get(LedgerState.DONE.value, 0)),
        failed=int(by_state.get(LedgerState.FAILED.value, 0)),
        resent_last_hour=int(resent or 0),
        oldest_queued_s=max(0.0, (now - oldest).total_seconds()) if oldest else None,
        overdue=int(overdue or 0),
    )


def get(url: str, task_id: str) -> dict[str, Any] | None:
    """One entry as a plain dict (times in UTC), or None."""
    create_schema(url)
    with transient_db_errors(), read_scope(url) as session:
        entry = session.get(LedgerEntry, task_id)
        if entry is None:
            return None
        row = {c.name: getattr(entry, c.name) for c in LedgerEntry.__table__.columns}
    return {k: _utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def purge_finished(url: str, before: datetime) -> int:
    """Delete done and failed entries that finished before ``before`` (retention)."""
    create_schema(url)
    with transient_db_errors(), session_scope(url) as session:
        result = session.execute(
            delete(LedgerEntry).where(LedgerEntry.state.in_([s.value for s in _OVER]), LedgerEntry.finished_at < before)
        )
        return result.rowcount or 0
