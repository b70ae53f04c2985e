"""One run of one mail account: list what is new, take each mail once, submit its files, record it.

Exactly once, in this order per mail: save its files (deterministic names), submit them (each
with a task id derived from the mail's place, so a mail taken again after a crash sends the
same ids and the ledger and the content hash absorb it), record the mail, then do the rule's
after-action (only for a mail taken as its rule wanted: a failed one stays as it is on the
server). A mail is recorded also when it gives no document (no rule, no attachment, unsupported
types, too large, malformed), so it is never downloaded again; a restart lists only UIDs above
the highest recorded one, and those marked to be fetched again (``sources retry-failed``). A
folder whose UIDVALIDITY changed is listed from the start and each mail recognised by its
Message-ID (or header hash): no doubles.

A mail that stops the run with an error (a parser bug, a server that will not give it) stops it
at most MIDAS_MAX_REDELIVERIES times: then it is recorded as failed and the fetch goes on past it.
Errors on MIDAS's own side (the broker, the working folder) are not the mail's and never count.
"""

from __future__ import annotations

import imaplib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from background_tasks.errors import (
    ErrorType,
    MailConfigError,
    MailError,
    MailRefused,
    MailUnreachable,
    MidasError,
    TransientError,
)
from background_tasks.settings import Settings
from background_tasks.sources.mail import imap, message, take
from background_tasks.sources.mail.config import Account, Rule, load_accounts
from background_tasks.sources.mail.take import Place, Submit
from background_tasks.statuses import MailOutcome
from background_tasks.storage import mail_messages as store
from background_tasks.storage.mail_messages import MailRecord

log = logging.getLogger(__name__)

#: headers listed per round trip
HEADER_BATCH = 50

Connect = Callable[[Account], imaplib.IMAP4]


@dataclass(frozen=True)
class RunResult:
    """What one run of one account did."""

    account: str
    seen: int = 0  # mails recorded this run
    submitted: int = 0  # files submitted
    skipped: int = 0  # attachments recorded and not processed (unsupported, too large)
    failed: int = 0  # mails that could not be read (recorded as failed)
    more: bool = False  # mails left for the next run (the cap was reached and another mail waits)
    error: str | None = None
    #: the error's ``ErrorType``: ``auth_failed``, ``mail_config``, ``mail_refused`` are permanent for the
    #: run, ``mail_unreachable`` and ``storage_unavailable`` transient; each is tried again next interval
    error_type: str | None = None
    duration_s: float = 0.0


@dataclass
class _Tally:
    seen: int = 0
    submitted: int = 0
    skipped: int = 0
    failed: int = 0
    more: bool = False
    #: said of the mail the run stopped at: which attempt this was (see ``_attempt_failed``)
    stuck: str = ""
    #: a connection lost on a mail given up on: the run stops once that mail is recorded
    lost: BaseException | None = None


def fetch_account(
    account: Account,
    settings: Settings,
    submit: Submit,
    max_mails: int,
    connect: Connect = imap.connect,
    whole_below: int = take.WHOLE_MAIL_BYTES,
) -> RunResult:
    """Take at most ``max_mails`` new mails of ``account``; problems end the run and are recorded, never raised.

    Mails larger than ``whole_below`` bytes are read part by part (``take``)."""
    started, at = time.monotonic(), datetime.now(UTC)
    tally = _Tally()
    error: str | None = None
    error_type: str | None = None
    unexpected: Exception | None = None
    client: imaplib.IMAP4 | None = None
    try:
        client = connect(account)
        for folder in account.folders:
            if tally.more:
                break
            _fetch_folder(client, account, folder, settings, submit, max_mails, tally, whole_below)
    except Exception as exc:  # every problem, a bug too, is recorded, never raised: the other accounts still run
        known = _as_midas_error(exc, account, tally.seen)
        unexpected = None if known else exc
        error = known.message if known else f"the run stopped after {tally.seen} mail(s): {_reason(exc)}"
        error = f"{error}{tally.stuck}"
        error_type = known.error_type if known else ErrorType.ERROR
    finally:
        if client is not None:
            imap.close(client)
    duration = time.monotonic() - started
    run = store.record_run(
        settings.database_url_resolved, account.name, at, duration, tally.seen, tally.submitted, tally.failed, error
    )
    if error and run.error_since == at:
        log.warning(
            "mail %s: %s (retried every run; logged again when it changes)", account.name, error, exc_info=unexpected
        )
    elif error:
        log.info("mail %s: still failing since %s: %s", account.name, run.error_since, error)
    else:
        more = " (more next run)" if tally.more else ""
        log.info(
            "mail %s: %d mail(s), %d file(s) submitted, %d skipped in %.1f s%s",
            account.name, tally.seen, tally.submitted, tally.skipped, duration, more,
        )  # fmt: skip
    return RunResult(
        account.name,
        tally.seen,
        tally.submitted,
        tally.skipped,
        tally.failed,
        tally.more,
        error,
        None if error_type is None else str(error_type),
        round(duration, 3),
    )


def _as_midas_error(exc: Exception, account: Account, seen: int) -> MidasError | None:
    """The error a run ended with as one of the hierarchy's (permanent or transient); None: unexpected."""
    where = f"{account.host}:{account.port}"
    if isinstance(exc, MidasError):
        return exc
    if isinstance(exc, imap.CONNECTION_ERRORS):
        return MailUnreachable(f"{where}: connection lost after {seen} mail(s) ({type(exc).__name__})")
    if isinstance(exc, imaplib.IMAP4.error):
        return MailRefused(f"{where}: the server refused a command: {str(exc)[:300]}")
    return None


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _fetch_folder(
    client: imaplib.IMAP4,
    account: Account,
    folder: str,
    settings: Settings,
    submit: Submit,
    max_mails: int,
    tally: _Tally,
    whole_below: int,
) -> None:
    url = settings.database_url_resolved
    uidvalidity = imap.select(client, folder)
    again = store.retry_uids(url, account.name, folder, uidvalidity)  # all below the highest recorded UID
    uids = again + imap.new_uids(client, store.last_uid(url, account.name, folder, uidvalidity))
    room = max_mails - tally.seen
    if len(uids) > room:  # at the cap exactly, another mail waits only if one is listed here (or in a later folder)
        uids, tally.more = uids[:room], True
    for start in range(0, len(uids), HEADER_BATCH):
        listed = uids[start : start + HEADER_BATCH]
        batch = imap.headers(client, listed)
        store.retry_gone(url, account.name, folder, uidvalidity, set(again).intersection(listed) - set(batch))
        parsed = {uid: message.read_headers(h.header) for uid, h in batch.items()}
        known = store.known_keys(url, account.name, (h.key for h in parsed.values()))
        for uid in sorted(batch):
            headers = parsed[uid]
            place = take.Place(account, folder, uidvalidity, uid, headers)
            if headers.key in known:
                detail = "already taken (same Message-ID) from this account"
                rec, rule = place.record(MailOutcome.DUPLICATE, detail=detail), None
            else:
                try:
                    rec, rule = take.take(client, place, batch[uid].size, settings, submit, whole_below)
                except Exception as exc:
                    rec, rule = _attempt_failed(url, place, exc, settings.max_redeliveries, tally), None
            if rec is None:
                continue  # expunged meanwhile: nothing to record
            store.record(url, [rec])
            known.add(headers.key)
            tally.seen += 1
            tally.submitted += rec.documents
            tally.skipped += sum(1 for p in rec.parts if p.get("skipped"))
            tally.failed += rec.outcome == MailOutcome.FAILED
            if tally.lost is not None:
                raise tally.lost
            if rule is not None and rule.after != "none" and take.taken(rec):
                _after(client, account, rule, uid)


def _attempt_failed(url: str, place: Place, exc: Exception, limit: int, tally: _Tally) -> MailRecord:
    """A mail stopped the run: count it; raises again below ``limit`` runs, then gives the mail up as failed.

    Errors on MIDAS's side (the broker, the working folder: transient, and not the mail server's) are
    raised uncounted. A lost connection counts (a server that drops it on this mail each time), but
    after giving up the run still stops (``tally.lost``): the connection is gone.
    """
    if isinstance(exc, TransientError) and not isinstance(exc, MailError):
        raise exc
    name = place.account.name
    attempts = store.note_attempt(url, name, place.folder, place.uidvalidity, place.uid, _reason(exc))
    if attempts < limit:
        tally.stuck = (
            f" (UID {place.uid} in {place.folder}: attempt {attempts} of {limit}; "
            "then it is recorded as failed and skipped)"
        )
        raise exc
    log.warning(
        "mail %s: UID %s in %s stopped the fetch %d times; recorded as failed, the fetch goes on: %s",
        name, place.uid, place.folder, attempts, _reason(exc),
    )  # fmt: skip
    if isinstance(exc, (MailUnreachable, *imap.CONNECTION_ERRORS)):
        tally.lost = exc
    detail = f"stopped the fetch {attempts} times (MIDAS_MAX_REDELIVERIES), the last with {_reason(exc)}"
    return place.record(MailOutcome.FAILED, detail=detail)


def _after(client: imaplib.IMAP4, account: Account, rule: Rule, uid: int) -> None:
    """The rule's after-action; a failure is logged (the mail is taken and recorded either way)."""
    try:
        imap.after_action(client, [uid], rule.after, rule.move_to)
    except MailError as exc:
        log.warning("mail %s: %s", account.name, exc)


def fetch_all(settings: Settings, submit: Submit, only: str | None = None) -> list[RunResult]:
    """One run of every configured account (or of ``only``); a broken configuration is one error, not a crash."""
    if settings.mail_config is None:
        return []
    try:
        accounts = load_accounts(settings.mail_config)
    except MailConfigError as exc:
        log.warning("mail: %s", exc)
        return [RunResult("-", error=str(exc), error_type=str(exc.error_type))]
    return [
        fetch_account(account, settings, submit, settings.mail_max_per_run)
        for account in accounts
        if only is None or account.name == only
    ]
