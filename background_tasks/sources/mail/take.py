"""Taking one mail: read it (whole, or part by part when large), save its files, submit them, say what happened.

A mail up to ``WHOLE_MAIL_BYTES`` is downloaded in one round trip and parsed in memory. A larger
one is read from its structure (``parts``): parts over the file limit are skipped unread and the
others streamed to disk, so no mail is ever held whole. Either way the files are saved under a
deterministic name (a temporary name, then renamed) and submitted with a task id derived from
the mail's place, so a mail taken again after a crash sends the same ids.
"""

from __future__ import annotations

import hashlib
import imaplib
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from background_tasks import keys
from background_tasks.errors import StorageUnavailable
from background_tasks.settings import Settings
from background_tasks.sources.mail import imap, message, parts
from background_tasks.sources.mail.config import Account, Rule
from background_tasks.sources.mail.message import Part
from background_tasks.statuses import MailOutcome
from background_tasks.storage.mail_messages import MailRecord

log = logging.getLogger(__name__)

#: mails up to this size are read whole (one round trip); larger ones part by part, never whole in memory
WHOLE_MAIL_BYTES = 8 * 1024 * 1024
#: leaf parts looked at in a large mail (attachments beyond ``message.MAX_PARTS`` are skipped anyway)
MAX_LEAVES = 2 * message.MAX_PARTS
#: what a mail that cannot be parsed raises (the parser's own errors; recorded as ``failed``)
UNREADABLE = (RecursionError, LookupError, ValueError, TypeError, AttributeError)

#: ``submit(path, origin, task_id)`` sends ``process_document_file`` (through the app, so the ledger has it)
Submit = Callable[[str, dict[str, str], str], None]


@dataclass(frozen=True)
class Place:
    """Where a mail is: account, folder, UIDVALIDITY, UID, and its headers."""

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


@dataclass(frozen=True)
class _Read:
    """A mail read far enough to know its rule and its files."""

    rule: Rule | None
    files: list[Part]
    notes: list[str]


def take(
    client: imaplib.IMAP4,
    place: Place,
    size: int,
    settings: Settings,
    submit: Submit,
    whole_below: int = WHOLE_MAIL_BYTES,
) -> tuple[MailRecord | None, Rule | None]:
    """Read one mail if a rule may want it; save and submit its files. The record says what happened
    (None: the mail was expunged meanwhile). The rule is returned for its after-action."""
    candidates = message.header_rules(place.account.rules, place.headers)
    if not candidates:
        return place.record(MailOutcome.NO_RULE, detail="no rule selects this mail"), None
    try:
        if size <= whole_below:
            read = _whole(client, place.uid, candidates, settings.max_file_bytes)
        else:
            read = _by_parts(client, place.uid, size, candidates, settings.max_file_bytes)
    except UNREADABLE as exc:
        log.warning("mail %s: UID %s cannot be read: %s", place.account.name, place.uid, exc)
        detail = f"the mail cannot be read ({type(exc).__name__}: {str(exc)[:200]})"
        return place.record(MailOutcome.FAILED, candidates[0], detail=detail), candidates[0]
    if read is None:
        return None, None
    if read.rule is None:
        return place.record(MailOutcome.NO_RULE, detail="no rule selects this mail (has_attachment)"), None
    return _submit_files(place, read, settings, submit), read.rule


def _whole(client: imaplib.IMAP4, uid: int, candidates: list[Rule], max_bytes: int) -> _Read | None:
    raw = imap.body(client, uid)
    if raw is None:
        return None
    msg = message.parse(raw)
    rule = message.choose(candidates, message.has_attachment(msg))
    if rule is None:
        return _Read(None, [], [])
    files = message.files(msg, raw, rule, max_bytes)
    defects = sorted({type(d).__name__ for part in msg.walk() for d in part.defects})
    return _Read(rule, files, [f"malformed MIME ({', '.join(defects)})"] if defects else [])


def _by_parts(client: imaplib.IMAP4, uid: int, size: int, candidates: list[Rule], max_bytes: int) -> _Read | None:
    structure = imap.structure(client, uid)
    if structure is None:
        return None
    leaves, cut = parts.leaves(parts.tree(structure), MAX_LEAVES)
    blocks: dict[str, bytes] = {}
    for start in range(0, len(leaves), parts.HEADERS_BATCH):
        blocks.update(imap.mime_headers(client, uid, [s.number for s in leaves[start : start + parts.HEADERS_BATCH]]))
    attached = parts.attachments((s, parts.headers_message(blocks.get(s.number, b""), s)) for s in leaves)
    rule = message.choose(candidates, bool(attached))
    if rule is None:
        return _Read(None, [], [])

    def fetch(section: str) -> Iterable[bytes]:
        return imap.chunks(client, uid, section, parts.CHUNK_BYTES)

    def eml() -> Part:
        if size > max_bytes:
            return message.too_large(message.EML_NAME, size, max_bytes, unread=True)
        return Part(message.EML_NAME, None, chunks=lambda: fetch(""))

    files = message.select(rule, eml, attached, lambda i, a: parts.plan(i, a[0], a[1], max_bytes, fetch))
    notes = [f"read part by part ({size:,} bytes)"]
    if cut:
        notes.append(f"more than {MAX_LEAVES} parts; the rest were not looked at")
    return _Read(rule, files, notes)


def _submit_files(place: Place, read: _Read, settings: Settings, submit: Submit) -> MailRecord:
    """Save each file, submit it, and make the mail's record (the caller stores it)."""
    assert read.rule is not None
    recorded: list[dict[str, object]] = []
    too_big = False
    folder = place.folder_path(settings)
    for part in read.files:
        pieces = [part.data] if part.data is not None else part.chunks() if part.chunks is not None else None
        if pieces is None:
            recorded.append({"name": part.name, "skipped": part.reason, **({"failed": True} if part.failed else {})})
            too_big |= part.too_large
            continue
        try:
            saved = save(folder, part.name, pieces, settings.max_file_bytes)
        except ValueError as exc:  # a streamed part that cannot be decoded
            recorded.append({"name": part.name, "skipped": f"cannot be decoded: {type(exc).__name__}", "failed": True})
            continue
        if saved is None:
            reason = f"over the limit of {settings.max_file_bytes:,} bytes (MIDAS_MAX_FILE_MB) once decoded"
            recorded.append({"name": part.name, "skipped": reason})
            too_big = True
            continue
        path, written = saved
        task_id = keys.mail_part_task_id(place.account.name, place.folder, place.uidvalidity, place.uid, part.name)
        submit(str(path), place.origin(read.rule, part.name), task_id)
        recorded.append({"name": part.name, "task_id": task_id, "bytes": written})
    submitted = sum(1 for p in recorded if "task_id" in p)
    failed = sum(1 for p in recorded if p.get("failed"))
    notes = list(read.notes)
    if failed:
        notes.append(f"{failed} of its files cannot be decoded")
    if not submitted and not failed:
        if too_big:
            notes.append("every file it would give is over the size limit (MIDAS_MAX_FILE_MB)")
        else:
            notes.append("no attachment of a supported type" if recorded else "no attachment")
    outcome = _outcome(submitted, failed, too_big)
    detail = "; ".join(notes) or None
    return place.record(outcome, read.rule, documents=submitted, parts=tuple(recorded), detail=detail)


def _outcome(submitted: int, failed: int, too_big: bool) -> MailOutcome:
    """Any file submitted: submitted; else a file that failed makes the mail failed, one too large too_large."""
    if submitted:
        return MailOutcome.SUBMITTED
    if failed:
        return MailOutcome.FAILED
    return MailOutcome.TOO_LARGE if too_big else MailOutcome.NO_DOCUMENT


def taken(record: MailRecord) -> bool:
    """The mail was taken as its rule wanted (its files submitted, or it has none MIDAS processes, and
    none failed): only then does the rule's after-action change it on the server."""
    return record.outcome in MailOutcome.taken() and not any(p.get("failed") for p in record.parts)


def save(folder: Path, name: str, pieces: Iterable[bytes], max_bytes: int) -> tuple[Path, int] | None:
    """Write a working file whole (temporary name, then rename): a worker never reads half of it.

    More than ``max_bytes`` leaves no file and returns None. A file that cannot be written is
    ``StorageUnavailable`` (MIDAS's own disk, not the mail: the run stops and the mail is taken next
    run); ``pieces`` from the network raise ``MailUnreachable``, never OSError.
    """
    path = folder / name
    temporary = folder / f".{name}.part"
    written = 0
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            for piece in pieces:
                written += len(piece)
                if written > max_bytes:
                    break
                out.write(piece)
        if written > max_bytes:
            temporary.unlink(missing_ok=True)
            return None
        os.replace(temporary, path)
    except OSError as exc:
        _remove(temporary)
        raise StorageUnavailable(f"the working file {path} cannot be written: {exc.strerror or exc}") from None
    except BaseException:
        _remove(temporary)
        raise
    return path, written


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # its folder is gone or not one: nothing was written there
