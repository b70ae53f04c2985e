"""The SQL of the mail source: which mails were taken (``mail_messages``), each account's runs
(``mail_accounts``) and the mails that stopped a run (``mail_attempts``).

A mail is recorded once it was handled (its files submitted, or found to give none), in one
statement that ignores a place already recorded, so two overlapping runs never record a mail
twice; only a mail marked ``retry`` (``sources retry-failed``) is recorded over. Every time is
UTC; SQLite hands times back without their zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update

from background_tasks.statuses import MailOutcome
from background_tasks.storage.db import read_scope, session_scope
from background_tasks.storage.models import MailAccountState, MailAttemptRow, MailMessageRow
from background_tasks.storage.schema import create_schema
from background_tasks.storage.values import upsert

#: the columns that say where a mail is (its unique key)
_PLACE = ("account", "folder", "uidvalidity", "uid")


@dataclass(frozen=True)
class MailRecord:
    """One handled mail as recorded."""

    account: str
    folder: str
    uidvalidity: int
    uid: int
    message_key: str
    outcome: str
    message_id: str | None = None
    sender: str | None = None
    subject: str | None = None
    rule: str | None = None
    documents: int = 0
    parts: tuple[dict[str, Any], ...] = ()
    detail: str | None = None
    seen_at: datetime | None = None


@dataclass(frozen=True)
class AccountRun:
    """An account's last run and its totals."""

    account: str
    last_run_at: datetime | None
    last_run_s: float | None
    seen: int
    submitted: int
    failed: int
    error: str | None
    error_since: datetime | None
    last_success_at: datetime | None = None


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _clip(value: str | None, limit: int = 2000) -> str | None:
    return value[:limit] if value else value


def last_uid(url: str, account: str, folder: str, uidvalidity: int) -> int:
    """The highest UID taken from this folder under this UIDVALIDITY (0: none)."""
    create_schema(url)
    m = MailMessageRow
    with read_scope(url) as session:
        found = session.execute(
            select(func.max(m.uid)).where(m.account == account, m.folder == folder, m.uidvalidity == uidvalidity)
        ).scalar()
    return int(found or 0)


def known_keys(url: str, account: str, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` (message keys) this account has taken already, from any folder or UIDVALIDITY
    (a mail waiting to be fetched again is not taken)."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return set()
    create_schema(url)
    m = MailMessageRow
    found: set[str] = set()
    with read_scope(url) as session:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            found.update(
                session.execute(
                    select(m.message_key).where(
                        m.account == account, m.message_key.in_(chunk), m.outcome != MailOutcome.RETRY
                    )
                ).scalars()
            )
    return found


def record(url: str, records: Sequence[MailRecord]) -> int:
    """Record handled mails; a place recorded before is left as it is, unless it waits to be fetched
    again (``retry``). Their attempts (``note_attempt``) go in the same transaction. Returns how many
    were recorded."""
    if not records:
        return 0
    create_schema(url)
    now = datetime.now(UTC)
    rows = [
        {
            "account": r.account,
            "folder": r.folder,
            "uidvalidity": r.uidvalidity,
            "uid": r.uid,
            "message_key": r.message_key,
            "message_id": _clip(r.message_id),
            "sender": _clip(r.sender),
            "subject": _clip(r.subject),
            "rule": r.rule,
            "outcome": str(r.outcome),
            "documents": r.documents,
            "parts_json": list(r.parts),
            "detail": _clip(r.detail),
            "seen_at": r.seen_at or now,
        }
        for r in records
    ]
    a = MailAttemptRow
    places = [(r.account, r.folder, r.uidvalidity, r.uid) for r in records]
    with session_scope(url) as session:
        statement = upsert(session, MailMessageRow.__table__)
        statement = statement.on_conflict_do_update(
            index_elements=list(_PLACE),
            set_={key: statement.excluded[key] for key in rows[0] if key not in _PLACE},
            where=MailMessageRow.outcome == MailOutcome.RETRY,
        )
        result = session.connection().execute(statement, rows)
        session.execute(delete(a).where(tuple_(a.account, a.folder, a.uidvalidity, a.uid).in_(places)))
    return max(result.rowcount or 0, 0)


def note_attempt(url: str, account: str, folder: str, uidvalidity: int, uid: int, error: str) -> int:
    """One more run stopped while taking this mail (``error`` says how); returns how many have so far."""
    create_schema(url)
    now = datetime.now(UTC)
    place = {"account": account, "folder": folder, "uidvalidity": uidvalidity, "uid": uid}
    a = MailAttemptRow
    with session_scope(url) as session:
        statement = upsert(session, a.__table__).values(**place, attempts=1, error=_clip(error), last_at=now)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=list(_PLACE),
                set_={"attempts": a.attempts + 1, "error": statement.excluded.error, "last_at": now},
            )
        )
        found = session.execute(
            select(a.attempts).where(
                a.account == account, a.folder == folder, a.uidvalidity == uidvalidity, a.uid == uid
            )
        ).scalar_one()
    return int(found)


def retry_uids(url: str, account: str, folder: str, uidvalidity: int) -> list[int]:
    """The UIDs of this folder (under this UIDVALIDITY) asked to be fetched again, ascending."""
    create_schema(url)
    m = MailMessageRow
    with read_scope(url) as session:
        return list(
            session.execute(
                select(m.uid)
                .where(m.account == account, m.folder == folder, m.uidvalidity == uidvalidity)
                .where(m.outcome == MailOutcome.RETRY)
                .order_by(m.uid)
            ).scalars()
        )


def request_retry(url: str, account: str | None = None) -> int:
    """Mark every failed or too large mail (of ``account``, or of all) to be fetched again; returns how many."""
    create_schema(url)
    m = MailMessageRow
    statement = update(m).where(m.outcome.in_([str(o) for o in MailOutcome.retryable()]))
    if account is not None:
        statement = statement.where(m.account == account)
    with session_scope(url) as session:
        result = session.execute(
            statement.values(outcome=MailOutcome.RETRY), execution_options={"synchronize_session": False}
        )
    return max(result.rowcount or 0, 0)


def retry_gone(url: str, account: str, folder: str, uidvalidity: int, uids: Iterable[int]) -> None:
    """Mails asked to be fetched again that are no longer in their folder: failed again, saying so."""
    wanted = list(uids)
    if not wanted:
        return
    m = MailMessageRow
    with session_scope(url) as session:
        session.execute(
            update(m)
            .where(m.account == account, m.folder == folder, m.uidvalidity == uidvalidity, m.uid.in_(wanted))
            .where(m.outcome == MailOutcome.RETRY)
            .values(outcome=MailOutcome.FAILED, detail="no longer in the folder when it was to be fetched again"),
            execution_options={"synchronize_session": False},
        )


def messages(url: str, account: str, folder: str | None = None) -> list[MailRecord]:
    """Every recorded mail of an account (oldest first): for tests and inspection."""
    create_schema(url)
    m = MailMessageRow
    query = select(m).where(m.account == account).order_by(m.id)
    if folder is not None:
        query = query.where(m.folder == folder)
    with read_scope(url) as session:
        return [
            MailRecord(
                account=row.account,
                folder=row.folder,
                uidvalidity=row.uidvalidity,
                uid=row.uid,
                message_key=row.message_key,
                outcome=row.outcome,
                message_id=row.message_id,
                sender=row.sender,
                subject=row.subject,
                rule=row.rule,
                documents=row.documents,
                parts=tuple(row.parts_json or ()),
                detail=row.detail,
                seen_at=_utc(row.seen_at),
            )
            for row in session.execute(query).scalars()
        ]


def record_run(
    url: str,
    account: str,
    at: datetime,
    duration_s: float,
    seen: int,
    submitted: int,
    failed: int,
    error: str | None,
) -> AccountRun:
    """Add a run to the account's totals; an error keeps the time it first appeared (``error_since``),
    a run without one is the last success (``last_success_at``)."""
    create_schema(url)
    with session_scope(url) as session:
        row = session.get(MailAccountState, account)
        if row is None:
            row = MailAccountState(account=account, seen=0, submitted=0, failed=0)
            session.add(row)
        was = row.error
        row.last_run_at, row.last_run_s = at, round(duration_s, 3)
        row.seen, row.submitted, row.failed = row.seen + seen, row.submitted + submitted, row.failed + failed
        row.error = _clip(error)
        row.error_since = None if error is None else (row.error_since if was else at)
        if error is None:
            row.last_success_at = at
        session.flush()
        return _run(row)


def account_runs(url: str, accounts: Iterable[str] | None = None) -> dict[str, AccountRun]:
    """Each account's last run (only ``accounts`` when given)."""
    create_schema(url)
    query = select(MailAccountState)
    if accounts is not None:
        query = query.where(MailAccountState.account.in_(list(accounts)))
    with read_scope(url) as session:
        return {row.account: _run(row) for row in session.execute(query).scalars()}


def _run(row: MailAccountState) -> AccountRun:
    return AccountRun(
        account=row.account,
        last_run_at=_utc(row.last_run_at),
        last_run_s=row.last_run_s,
        seen=row.seen,
        submitted=row.submitted,
        failed=row.failed,
        error=row.error,
        error_since=_utc(row.error_since),
        last_success_at=_utc(row.last_success_at),
    )
