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

import hashlib
import imaplib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from background_tasks import keys
from background_tasks.settings import Settings
from background_tasks.sources.mail import imap, message
from background_tasks.sources.mail.config import Account, MailConfigError, Rule, load_accounts
from background_tasks.storage import mail_messages as store
from background_tasks.storage.mail_messages import MailRecord

log = logging.getLogger(__name__)

#: headers listed per round trip
HEADER_BATCH = 50
#: a mail is downloaded up to this many times the file limit (base64 makes attachments a third larger)
MAIL_SIZE_FACTOR = 1.4

#: ``submit(path, origin, task_id)`` sends ``process_document_file`` (through the app, so the ledger has it)
Submit = Callable[[str, dict[str, str], str], None]
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
) -> RunResult:
    """Take at most ``max_mails`` new mails of ``account``; problems end the run and are recorded, never raised."""
    started, at = time.monotonic(), datetime.now(UTC)
    tally = _Tally()
    error: str | None = None
    client: imaplib.IMAP4 | None = None
    try:
        client = connect(account)
        for folder in account.folders:
            if tally.seen >= max_mails:
                tally.more = True
                break
            _fetch_folder(client, account, folder, settings, submit, max_mails, tally)
    except (imap.MailError, MailConfigError) as exc:
        error = str(exc)
    except imap.CONNECTION_ERRORS as exc:
        error = f"{account.host}:{account.port}: connection lost after {tally.seen} mail(s) ({type(exc).__name__})"
    except imaplib.IMAP4.error as exc:
        error = f"{account.host}:{account.port}: the server refused a command: {str(exc)[:300]}"
    finally:
        if client is not None:
            imap.close(client)
    duration = time.monotonic() - started
    run = store.record_run(
        settings.database_url_resolved, account.name, at, duration, tally.seen, tally.submitted, tally.failed, error
    )
    if error and run.error_since == at:
        log.warning("mail %s: %s (retried every run; logged again when it changes)", account.name, error)
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
            place = _Place(account, folder, uidvalidity, uid, headers)
            if headers.key in known:
                rec, rule = place.record("duplicate", detail="already taken (same Message-ID) from this account"), None
            else:
                rec, rule = _take(client, place, batch[uid].size, settings, submit)
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


@dataclass(frozen=True)
class _Place:
    account: Account
    folder: str
    uidvalidity: int
    uid: int
    headers: message.Headers

    def record(self, outcome: str, rule: Rule | None = None, **more: object) -> MailRecord:
        h = self.headers
        return MailRecord(
            account=self.account.name,
            folder=self.folder,
            uidvalidity=self.uidvalidity,
            uid=self.uid,
            message_key=h.key,
            outcome=outcome,
            message_id=h.message_id,
            sender=h.sender,
            subject=h.subject,
            rule=rule.name if rule else None,
            **more,  # type: ignore[arg-type]
        )

    def origin(self, rule: Rule, name: str) -> dict[str, str]:
        h = self.headers
        origin = {
            "source": "mail",
            "account": self.account.name,
            "folder": self.folder,
            "from": h.sender,
            "subject": h.subject,
            "date": message.sent_iso(h),
            "message_id": h.message_id,
            "attachment": None if name == message.EML_NAME else name[4:],
            "rule": rule.name,
        }
        return {k: v for k, v in origin.items() if v}

    def folder_path(self, settings: Settings) -> Path:
        account_dir = settings.inbox_dir / "mail" / self.account.name
        return account_dir / folder_slug(self.folder) / f"{self.uidvalidity}-{self.uid}"


def folder_slug(folder: str) -> str:
    """A mail folder's name as one path component: letters of any script kept, and a short hash of
    the name whenever something had to change, so "A/B", "A_B" and two Greek names never share one."""
    slug = re.sub(r"[^\w-]+", "_", folder).strip("_")[:80] or "folder"
    if slug == folder:
        return slug
    return f"{slug}-{hashlib.sha256(folder.encode('utf-8')).hexdigest()[:8]}"


def _take(
    client: imaplib.IMAP4, place: _Place, size: int, settings: Settings, submit: Submit
) -> tuple[MailRecord | None, Rule | None]:
    """Download one mail if a rule may want it; save and submit its files. The record says what happened."""
    candidates = message.header_rules(place.account.rules, place.headers)
    if not candidates:
        return place.record("no_rule", detail="no rule selects this mail"), None
    limit = int(settings.max_file_bytes * MAIL_SIZE_FACTOR)
    if size > limit:
        detail = f"{size:,} bytes, over {limit:,} (MIDAS_MAX_FILE_MB x {MAIL_SIZE_FACTOR}); not downloaded"
        return place.record("too_large", candidates[0], detail=detail), None
    raw = imap.body(client, place.uid)
    if raw is None:
        return None, None
    try:
        msg = message.parse(raw)
        rule = message.choose(candidates, msg)
        if rule is None:
            return place.record("no_rule", detail="no rule selects this mail (has_attachment)"), None
        files = message.files(msg, raw, rule, settings.max_file_bytes)
        defects = sorted({type(d).__name__ for part in msg.walk() for d in part.defects})
    except (RecursionError, LookupError, ValueError, TypeError, AttributeError) as exc:
        log.warning("mail %s: UID %s cannot be read: %s", place.account.name, place.uid, exc)
        detail = f"the mail cannot be read ({type(exc).__name__}: {str(exc)[:200]})"
        return place.record("failed", candidates[0], detail=detail), candidates[0]
    parts: list[dict[str, object]] = []
    folder = place.folder_path(settings)
    for part in files:
        if part.data is None:
            parts.append({"name": part.name, "skipped": part.reason})
            continue
        path = _save(folder, part.name, part.data)
        task_id = keys.mail_part_task_id(place.account.name, place.folder, place.uidvalidity, place.uid, part.name)
        submit(str(path), place.origin(rule, part.name), task_id)
        parts.append({"name": part.name, "task_id": task_id, "bytes": len(part.data)})
    submitted = sum(1 for p in parts if "task_id" in p)
    notes = [f"malformed MIME ({', '.join(defects)})"] if defects else []
    if not submitted:
        notes.append("no attachment of a supported type" if parts else "no attachment")
    outcome = "submitted" if submitted else "no_document"
    return place.record(outcome, rule, documents=submitted, parts=tuple(parts), detail="; ".join(notes) or None), rule


def _save(folder: Path, name: str, data: bytes) -> Path:
    """Write a working file whole (temporary name, then rename): a worker never reads half of it."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    temporary = folder / f".{name}.part"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temporary, path)
    return path


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
