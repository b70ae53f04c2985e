"""What .eml and .msg share: the message record, its text and metadata, decoding, the extractor base."""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime, getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import Any

from background_tasks.extraction.extractors.base import ContainerExtractor, Extraction, ExtractorLookup, Limits
from background_tasks.extraction.extractors.embedded import MAX_DEPTH
from background_tasks.extraction.extractors.mail.ocr import AttachmentOcr
from background_tasks.extraction.extractors.metadata import put_date

logger = logging.getLogger(__name__)

#: a message inside a message inside a message is followed; deeper ones are only listed
MAX_ATTACHMENT_DEPTH = MAX_DEPTH
ENCRYPTED_WARNING = "message body is encrypted (S/MIME or PGP); only the headers were extracted"
ENCRYPTED_TYPES = frozenset(
    {"application/pkcs7-mime", "application/x-pkcs7-mime", "application/pgp-encrypted", "multipart/encrypted"}
)


@dataclass
class MailMessage:
    """What both formats boil down to before rendering."""

    subject: str | None = None
    sender: str | None = None
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    date: datetime | None = None
    date_raw: str | None = None
    message_id: str | None = None
    bodies: list[str] = field(default_factory=list)
    attachments: list[str] = field(default_factory=list)
    attachment_sizes: dict[str, int] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)  # rendered attachment sections
    warnings: list[str] = field(default_factory=list)
    encrypted: bool = False


@dataclass(frozen=True)
class Reading:
    """Reading one message: the limits, how deep in attachments, a private folder, the registry, the OCR budget."""

    limits: Limits
    depth: int
    work: Path
    extractor_for: ExtractorLookup | None
    ocr: AttachmentOcr

    def deeper(self) -> Reading:
        return replace(self, depth=self.depth + 1)


class MailExtractor(ContainerExtractor):
    """.eml and .msg: attachments are read through the registry handed in (listed, not read, without it)."""


def render(message: MailMessage, limits: Limits) -> Extraction:
    """The header block, bodies and attachment sections as one text; the headers as metadata."""
    header_lines = []
    if message.subject is not None:
        header_lines.append(f"Subject: {message.subject}")
    if message.sender:
        header_lines.append(f"From: {message.sender}")
    if message.to:
        header_lines.append(f"To: {', '.join(message.to)}")
    if message.cc:
        header_lines.append(f"Cc: {', '.join(message.cc)}")
    if message.date is not None:
        header_lines.append(f"Date: {format_datetime(message.date)}")
    elif message.date_raw:
        header_lines.append(f"Date: {message.date_raw}")
    if message.attachments:
        listed = [_with_size(name, message.attachment_sizes.get(name)) for name in message.attachments]
        header_lines.append(f"Attachments: {', '.join(listed)}")
    parts = ["\n".join(header_lines)]
    parts.extend(newlines(body).strip() for body in message.bodies if body and body.strip())
    parts.extend(message.sections)
    text = "\n\n".join(p for p in parts if p).strip()
    warnings = list(message.warnings)
    if message.encrypted:
        warnings.insert(0, ENCRYPTED_WARNING)
    if len(text) > limits.max_text_chars:
        warnings.append(f"text truncated at {limits.max_text_chars} characters")
        text = text[: limits.max_text_chars]
    metadata: dict[str, Any] = {
        "subject": message.subject,
        "from": message.sender,
        "to": message.to,
        "cc": message.cc,
        "message_id": message.message_id,
        "attachments": message.attachments,
        "encrypted": message.encrypted,
    }
    authors = addresses(message.sender)  # RFC 5322: From names the author(s) of the message
    if authors:
        metadata["authors"] = authors
    put_date(metadata, "created", message.date or message.date_raw)  # the Date header, when it was sent
    return Extraction(text=text, metadata=metadata, warnings=tuple(warnings))


def _with_size(name: str, size: int | None) -> str:
    if size is None:
        return name
    if size < 1024:
        return f"{name} ({size} B)"
    if size < 1024 * 1024:
        return f"{name} ({size / 1024:.2f} KiB)"
    return f"{name} ({size / 1024 / 1024:.2f} MiB)"


def newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def addresses(value: str | None) -> list[str]:
    """``Name <addr>`` (or the bare address) for each address of a header; the value itself if unparsable."""
    if not value:
        return []
    try:
        pairs = getaddresses([value])
    except Exception:
        return [value]
    out = []
    for name, addr in pairs:
        if not name and not addr:
            continue
        out.append(f"{name} <{addr}>" if name and addr else (addr or name))
    return out or [value]


def mail_date(value: str | None) -> datetime | None:
    """An RFC 2822 ``Date`` header; None when it is not one."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


def decode_text(data: bytes, charset: str | None) -> str:
    """Decode a text part: declared charset when it works, else a detected one, else UTF-8 with replacements."""
    name = (charset or "").strip().strip("\"'").lower()
    name = re.split(r"[\s;\"']", name)[0] if name else ""
    if name:
        try:
            codecs.lookup(name)
            return data.decode(name)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:200_000]).best()
        if best is not None and best.encoding:
            return data.decode(best.encoding, errors="replace")
    except Exception as exc:  # detection is best-effort
        logger.debug("charset detection failed: %s", exc)
    return data.decode(name if known_codec(name) else "cp1252", errors="replace")


def known_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
        return bool(name)
    except LookupError:
        return False
