"""One run of one mail account: list what is new, take each mail once, submit its files, record it.

Exactly once, in this order per mail: save its files (deterministic names), submit them (each
with a task id derived from the mail's place, so a mail taken again after a crash sends the
same ids and the ledger and the content hash absorb it), record the mail, then do the rule's
after-action. A mail is recorded also when it gives no document (no rule, no attachment,
unsupported types, too large, malformed), so it is never downloaded again; a restart lists
only UIDs above the highest recorded one. A folder whose UIDVALIDITY changed is listed from the
start and each mail recognised by its Message-ID (or header hash): no doubles.
"""

from __future__ import annotations

import imaplib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from background_tasks.settings import Settings
from background_tasks.sources.mail import imap, message, take
from background_tasks.sources.mail.config import Account, MailConfigError, Rule, load_accounts
from background_tasks.sources.mail.take import Submit
from background_tasks.storage import mail_messages as store

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
    more: bool = False  # mails left for the next run (the cap was reached)
    error: str | None = None
    duration_s: float = 0.0


@dataclass
class _Tally:
    seen: int = 0
    submitted: int = 0
    skipped: int = 0
    failed: int = 0
    more: bool = False


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
    unexpected: Exception | None = None
    client: imaplib.IMAP4 | None = None
    try:
        client = connect(account)
        for folder in account.folders:
            if tally.seen >= max_mails:
                tally.more = True
                break
            _fetch_folder(client, account, folder, settings, submit, max_mails, tally, whole_below)
    except (imap.MailError, MailConfigError) as exc:
        error = str(exc)
    except imap.CONNECTION_ERRORS as exc:
        error = f"{account.host}:{account.port}: connection lost after {tally.seen} mail(s) ({type(exc).__name__})"
    except imaplib.IMAP4.error as exc:
        error = f"{account.host}:{account.port}: the server refused a command: {str(exc)[:300]}"
    except Exception as exc:  # the broker away, a bug: recorded like the rest; the other accounts still run
        unexpected = exc
        error = f"the run stopped after {tally.seen} mail(s): {type(exc).__name__}: {str(exc)[:300]}"
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
        account.name, tally.seen, tally.submitted, tally.skipped, tally.failed, tally.more, error, round(duration, 3)
    )


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
    uids = imap.new_uids(client, store.last_uid(url, account.name, folder, uidvalidity))
    room = max_mails - tally.seen
    if len(uids) > room:
        uids, tally.more = uids[:room], True
    for start in range(0, len(uids), HEADER_BATCH):
        batch = imap.headers(client, uids[start : start + HEADER_BATCH])
        parsed = {uid: message.read_headers(h.header) for uid, h in batch.items()}
        known = store.known_keys(url, account.name, (h.key for h in parsed.values()))
        for uid in sorted(batch):
            headers = parsed[uid]
            place = take.Place(account, folder, uidvalidity, uid, headers)
            if headers.key in known:
                rec, rule = place.record("duplicate", detail="already taken (same Message-ID) from this account"), None
            else:
                rec, rule = take.take(client, place, batch[uid].size, settings, submit, whole_below)
            if rec is None:
                continue  # expunged meanwhile: nothing to record
            store.record(url, [rec])
            known.add(headers.key)
            tally.seen += 1
            tally.submitted += rec.documents
            tally.skipped += sum(1 for p in rec.parts if p.get("skipped"))
            tally.failed += rec.outcome == "failed"
            if rule is not None and rule.after != "none":
                _after(client, account, rule, uid)


def _after(client: imaplib.IMAP4, account: Account, rule: Rule, uid: int) -> None:
    """The rule's after-action; a failure is logged (the mail is taken and recorded either way)."""
    try:
        imap.after_action(client, [uid], rule.after, rule.move_to)
    except imap.MailError as exc:
        log.warning("mail %s: %s", account.name, exc)


def fetch_all(settings: Settings, submit: Submit, only: str | None = None) -> list[RunResult]:
    """One run of every configured account (or of ``only``); a broken configuration is one error, not a crash."""
    if settings.mail_config is None:
        return []
    try:
        accounts = load_accounts(settings.mail_config)
    except MailConfigError as exc:
        log.warning("mail: %s", exc)
        return [RunResult("-", error=str(exc))]
    return [
        fetch_account(account, settings, submit, settings.mail_max_per_run)
        for account in accounts
        if only is None or account.name == only
    ]
