""".eml: RFC 5322 messages read with the standard library's ``email`` (``policy.default``)."""

from __future__ import annotations

import codecs
import re
import tempfile
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path

from background_tasks.errors import CorruptDocument, EmptyDocument, MidasError
from background_tasks.extraction.detect import MAIL_HEADERS
from background_tasks.extraction.extractors.base import Extraction, Limits
from background_tasks.extraction.extractors.html import html_to_text
from background_tasks.extraction.extractors.mail.attachments import (
    add_section,
    extract_attachment,
    not_extracted,
    safe_name,
)
from background_tasks.extraction.extractors.mail.message import (
    ENCRYPTED_TYPES,
    MAX_ATTACHMENT_DEPTH,
    MailExtractor,
    MailMessage,
    Reading,
    addresses,
    decode_text,
    mail_date,
    render,
)
from background_tasks.extraction.extractors.mail.ocr import attachment_ocr


class EmlExtractor(MailExtractor):
    name = "email"
    extensions = frozenset({".eml"})
    mime_types = frozenset({"message/rfc822"})

    def extract_nested(self, path: Path, limits: Limits, depth: int) -> Extraction:
        raw = path.read_bytes()
        if not raw.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
            raise EmptyDocument(f"{path.name}: file has no content")
        msg = _parse_eml(raw)
        if not any(key.lower() in MAIL_HEADERS for key in msg):
            raise CorruptDocument(f"{path.name}: not an e-mail message (no mail headers found)")
        message = MailMessage()
        with tempfile.TemporaryDirectory(prefix="midas-mail-") as work, attachment_ocr(limits) as ocr:
            _read_email(msg, message, Reading(limits, depth, Path(work), self.extractor_for, ocr))
        return render(message, limits)


def _header(msg: Message, name: str) -> str | None:
    """A header as text; malformed headers fall back to their raw value instead of raising."""
    try:
        value = msg.get(name)
    except Exception:
        value = None
        for key, raw in msg.raw_items() if hasattr(msg, "raw_items") else msg.items():
            if key.lower() == name.lower():
                value = raw
                break
    if value is None:
        return None
    text = re.sub(r"\s+", " ", str(value)).strip()
    return text or None


def _part_bytes(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if payload is None:
        raw = part.get_payload()
        if isinstance(raw, str):
            return raw.encode("utf-8", "surrogateescape")
        return b""
    return payload


def _parse_eml(raw: bytes) -> EmailMessage:
    """Bytes -> message; UTF-16/32 files (with BOM) are transcoded first, since the parser expects 8-bit data."""
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if raw.startswith(bom):
            # re-encode as UTF-8 so non-ASCII headers and 8-bit bodies survive the byte-oriented parser
            raw = raw.decode(encoding, errors="replace").encode("utf-8")
            break
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    if raw.startswith(b"From ") and b"\n" in raw:  # mbox separator line
        raw = raw.split(b"\n", 1)[1]
    return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


def _read_email(msg: Message, message: MailMessage, reading: Reading) -> None:
    message.subject = _header(msg, "Subject")
    message.sender = _header(msg, "From")
    message.to = addresses(_header(msg, "To"))
    message.cc = addresses(_header(msg, "Cc"))
    message.date_raw = _header(msg, "Date")
    message.date = mail_date(message.date_raw)
    message.message_id = _header(msg, "Message-ID")
    _walk(msg, message, reading, counter=[0], level=0)


def _walk(
    part: Message, message: MailMessage, reading: Reading, counter: list[int], level: int, bodies: bool = True
) -> None:
    """Collect body texts and attachments; ``bodies=False`` walks a non-chosen alternative for attachments only."""
    if level > reading.limits.max_nesting:
        message.warnings.append("MIME parts nested too deeply; the rest was skipped")
        return
    ctype = part.get_content_type()
    if ctype in ENCRYPTED_TYPES and (ctype != "application/pkcs7-mime" or _is_enveloped(part)):
        message.encrypted = True
        return
    filename = _filename(part)
    if ctype == "message/rfc822":
        _nested_email(part, message, reading, counter, filename)
        return
    if part.is_multipart():
        children = part.get_payload()
        if not isinstance(children, list):
            return
        if part.get_content_subtype() == "alternative":
            chosen = _best_alternative(children) if bodies else None
            for child in children:
                _walk(child, message, reading, counter, level + 1, bodies=child is chosen)
            return
        if part.get_content_subtype() == "signed" and children:
            children = children[:1]  # the signature part is not content
        for child in children:
            _walk(child, message, reading, counter, level + 1, bodies)
        return
    disposition = (part.get_content_disposition() or "").lower()
    if part.get_content_maintype() == "text" and disposition != "attachment" and not filename:
        if not bodies:
            return
        text = decode_text(_part_bytes(part), part.get_content_charset())
        if ctype == "text/html":
            text = html_to_text(text, reading.limits.max_text_chars, truncate=True)
        message.bodies.append(text)
        return
    if not filename and (part.get_content_maintype() == "image" or not bodies):
        return  # nameless inline images (signatures, logos) are layout, not attachments
    counter[0] += 1
    display, tmp_name = safe_name(filename or "", counter[0])
    message.attachments.append(display)
    data = _part_bytes(part)
    message.attachment_sizes[display] = len(data)
    if reading.depth >= MAX_ATTACHMENT_DEPTH:
        not_extracted(message, display, "attachments nested too deeply")
        return
    extract_attachment(message, display, tmp_name, data, reading)


def _is_enveloped(part: Message) -> bool:
    smime_type = (part.get_param("smime-type") or "").lower() if hasattr(part, "get_param") else ""
    return smime_type in ("", "enveloped-data", "authenveloped-data")


def _filename(part: Message) -> str | None:
    try:
        return part.get_filename()
    except Exception:
        return None


def _best_alternative(children: list[Message]) -> Message | None:
    """Plain text if it has content, else HTML, else the last (richest) alternative."""
    by_type: dict[str, Message] = {}
    for child in children:
        by_type.setdefault(child.get_content_type(), child)
    plain = by_type.get("text/plain")
    if plain is not None and decode_text(_part_bytes(plain), plain.get_content_charset()).strip():
        return plain
    for wanted in ("text/html", "multipart/related", "multipart/mixed"):
        if wanted in by_type:
            return by_type[wanted]
    return children[-1] if children else None


def _nested_email(
    part: Message, message: MailMessage, reading: Reading, counter: list[int], filename: str | None
) -> None:
    counter[0] += 1
    inner_parts = part.get_payload()
    inner = inner_parts[0] if isinstance(inner_parts, list) and inner_parts else None
    subject = _header(inner, "Subject") if inner is not None else None
    display = filename or (f"{subject}.eml" if subject else f"attachment-{counter[0]}.eml")
    message.attachments.append(display)
    if inner is None:
        return
    if reading.depth >= MAX_ATTACHMENT_DEPTH:
        not_extracted(message, display, "attachments nested too deeply")
        return
    nested = MailMessage()
    try:
        _read_email(inner, nested, reading.deeper())
        rendered = render(nested, reading.limits)
    except MidasError as exc:
        not_extracted(message, display, exc.message)
        return
    except Exception as exc:
        not_extracted(message, display, f"{type(exc).__name__}: {exc}")
        return
    add_section(message, display, rendered)
