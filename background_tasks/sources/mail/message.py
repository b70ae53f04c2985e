"""One mail read: its headers, which rule takes it, and the parts worth processing.

Header rules (from, to, subject, since) are checked on the header block alone, so a mail no
rule wants is never downloaded; ``has_attachment`` needs the body. Attachments are the leaf
parts a mail client would offer to save, plus attached mails (saved as ``.eml``: the mail
extractor reads them, however deep they nest). Names from the mail are never trusted as paths.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import PurePosixPath, PureWindowsPath
from typing import TypeVar

from background_tasks.extraction.detect import MIME_BY_EXTENSION, is_supported
from background_tasks.sources.mail.config import Rule

log = logging.getLogger(__name__)

#: the name the mail itself is saved under (attachments are numbered from 001)
EML_NAME = "000-mail.eml"
#: more parts than this in one mail are recorded as skipped, not saved
MAX_PARTS = 1000
_EXTENSION_BY_MIME = {mime: ext for ext, mime in reversed(MIME_BY_EXTENSION.items())}
T = TypeVar("T")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")


@dataclass(frozen=True)
class Headers:
    """What rules and origin metadata read from a mail's header block."""

    message_id: str | None
    sender: str
    recipients: str
    subject: str
    sent: datetime | None
    key: str  # SHA-256 of the Message-ID, or of the header block when there is none


@dataclass(frozen=True)
class Part:
    """One file to process: its bytes (``data``) or, for a large mail, where to stream them from
    (``chunks``, already decoded); or one skipped with its ``reason``."""

    name: str
    data: bytes | None
    reason: str | None = None
    #: skipped because it is over the file limit (the mail's outcome is then ``too_large``)
    too_large: bool = False
    chunks: Callable[[], Iterable[bytes]] | None = None
    #: wanted and not had (it cannot be decoded): the mail is not taken whole, so no after-action
    failed: bool = False


def read_headers(block: bytes) -> Headers:
    """The header fields rules need; a malformed header reads as empty, never raises."""
    msg = email.message_from_bytes(block, policy=email.policy.compat32)
    message_id = _field(msg, "Message-ID").strip() or None
    sent: datetime | None = None
    try:
        raw_date = _field(msg, "Date")
        sent = parsedate_to_datetime(raw_date) if raw_date else None
        if sent is not None and sent.tzinfo is None:
            sent = sent.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        sent = None
    identity = message_id.encode("utf-8", "replace") if message_id else b"headers:" + block
    return Headers(
        message_id=message_id,
        sender=_field(msg, "From"),
        recipients=", ".join(v for v in (_field(msg, h) for h in ("To", "Cc", "Delivered-To")) if v),
        subject=_field(msg, "Subject"),
        sent=sent,
        key=hashlib.sha256(identity).hexdigest(),
    )


def _field(msg: Message, name: str) -> str:
    """A header decoded to text (RFC 2047 words, any charset); empty when missing or unreadable."""
    raw = msg.get(name)
    if raw is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(raw)))).strip()
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return str(raw).strip()


def header_rules(rules: tuple[Rule, ...], headers: Headers) -> list[Rule]:
    """The rules whose header criteria the mail meets, in order (``has_attachment`` is checked later)."""
    return [rule for rule in rules if _headers_match(rule, headers)]


def _contains(needle: str | None, haystack: str) -> bool:
    return needle is None or needle.casefold() in haystack.casefold()


def _headers_match(rule: Rule, headers: Headers) -> bool:
    if rule.since is not None and (headers.sent is None or headers.sent.astimezone(UTC).date() < rule.since):
        return False
    return (
        _contains(rule.from_contains, headers.sender)
        and _contains(rule.to_contains, headers.recipients)
        and _contains(rule.subject_contains, headers.subject)
    )


def parse(raw: bytes) -> Message:
    """The whole mail; the parser never raises (defects are noted on the message)."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def attachment_parts(msg: Message) -> list[Message]:
    """Parts a mail client offers to save: attached mails whole, and leaf parts with a file name or
    ``Content-Disposition: attachment``. The mail's own body (text, HTML, inline pictures without a
    name) is not one."""
    found: list[Message] = []
    stack = [msg]
    while stack:
        part = stack.pop()
        if part is not msg and is_attachment(part):
            found.append(part)
            continue  # an attached mail is one document; its own attachments are read from it
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(reversed(payload))
    return found


def is_attachment(part: Message) -> bool:
    """An attached mail, or a leaf part with a file name or ``Content-Disposition: attachment``
    (a large mail's parts are judged by their MIME headers alone, so the rule is the same)."""
    if part.get_content_type() == "message/rfc822":
        return True
    if part.is_multipart():
        return False
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment" or bool(part.get_filename())


def has_attachment(msg: Message) -> bool:
    return bool(attachment_parts(msg))


def choose(candidates: list[Rule], attached: bool) -> Rule | None:
    """The first candidate rule whose ``has_attachment`` criterion the mail (``attached``: it has one) meets."""
    return next((r for r in candidates if r.has_attachment is None or r.has_attachment == attached), None)


def files(msg: Message, raw: bytes, rule: Rule, max_bytes: int) -> list[Part]:
    """The files a rule takes from a mail read whole: the mail as ``.eml``, its attachments, or both."""
    return select(
        rule, lambda: _sized(EML_NAME, raw, max_bytes), attachment_parts(msg), lambda i, p: _attachment(p, i, max_bytes)
    )


def select(rule: Rule, eml: Callable[[], Part], attached: Sequence[T], one: Callable[[int, T], Part]) -> list[Part]:
    """What ``rule.process`` takes: the mail itself (``eml()``), and the ``index``-th of ``attached`` as
    ``one(index, attachment)`` for at most ``MAX_PARTS`` of them (the rest one skipped entry)."""
    found: list[Part] = []
    if rule.process in ("eml", "both"):
        found.append(eml())
    if rule.process in ("attachments", "both"):
        for index, item in enumerate(attached):
            if index >= MAX_PARTS:
                found.append(Part(f"{len(attached) - MAX_PARTS} more", None, f"more than {MAX_PARTS} attachments"))
                break
            found.append(one(index, item))
    return found


def too_large(name: str, size: int, max_bytes: int, unread: bool = False) -> Part:
    """A part skipped for its size; ``unread``: judged from the size the server gave, never downloaded."""
    how = ", not downloaded" if unread else ""
    return Part(name, None, f"{size:,} bytes, over the limit of {max_bytes:,} (MIDAS_MAX_FILE_MB){how}", True)


def _sized(name: str, data: bytes, max_bytes: int) -> Part:
    return too_large(name, len(data), max_bytes) if len(data) > max_bytes else Part(name, data)


def attachment_name(part: Message, index: int) -> tuple[str, str | None]:
    """The safe file name of the ``index``-th attachment, and why it is skipped when its type is not supported."""
    name = safe_name(filename(part), index, part.get_content_type())
    extension = PurePosixPath(name).suffix.lower()
    if not is_supported(extension):
        return name, f"unsupported type {extension or part.get_content_type()}"
    return name, None


def _attachment(part: Message, index: int, max_bytes: int) -> Part:
    name, unsupported = attachment_name(part, index)
    if unsupported:
        return Part(name, None, unsupported)
    try:
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            data = inner[0].as_bytes() if isinstance(inner, list) and inner else b""
        else:
            data = part.get_payload(decode=True) or b""
    except (LookupError, ValueError, TypeError, RecursionError) as exc:
        return Part(name, None, f"cannot be decoded: {type(exc).__name__}", failed=True)
    return _sized(name, data, max_bytes)


def filename(part: Message) -> str:
    """The part's file name as a mail client shows it (RFC 2231 and RFC 2047 forms decoded); empty when none."""
    try:
        raw = part.get_filename() or ""
    except (LookupError, UnicodeError, ValueError):
        return ""
    if "=?" not in raw:
        return raw
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return raw


def safe_name(raw: str, index: int, content_type: str) -> str:
    """A file name that cannot leave its folder, hide, or overflow: the last path component, cleaned."""
    name = PureWindowsPath(PurePosixPath(raw.replace("\x00", "")).name).name
    name = _UNSAFE.sub("_", name).strip(" .")
    extension = _EXTENSION_BY_MIME.get(content_type, "")
    if content_type == "message/rfc822":
        extension = ".eml"
    if not name:
        name = f"attachment{extension or '.bin'}"
    elif extension and not PurePosixPath(name).suffix:
        name += extension
    stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix[:16]
    return f"{index + 1:03d}-{stem[: 120 - len(suffix)]}{suffix}"


def sent_iso(headers: Headers) -> str | None:
    return (
        headers.sent.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z") if headers.sent else None
    )
