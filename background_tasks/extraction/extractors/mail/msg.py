"""Outlook .msg: read with extract_msg; 8-bit strings decoded with the code page the message states."""

from __future__ import annotations

import codecs
import logging
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from background_tasks.errors import CorruptDocument, EmptyDocument, MidasError, MissingDependency
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
    decode_text,
    known_codec,
    mail_date,
    newlines,
    render,
)
from background_tasks.extraction.extractors.mail.ocr import attachment_ocr

logger = logging.getLogger(__name__)

_SPECIAL_CODEPAGES = {
    65001: "utf-8",
    1200: "utf-16-le",
    1201: "utf-16-be",
    20127: "ascii",
    20866: "koi8_r",
    21866: "koi8_u",
    50220: "iso2022_jp",
    50221: "iso2022_jp",
    50222: "iso2022_jp",
    51932: "euc_jp",
    51949: "euc_kr",
    54936: "gb18030",
    52936: "hz",
    10000: "mac_roman",
    28603: "iso8859_13",
    28605: "iso8859_15",
}


def _codepage_codec(codepage: int | None) -> str | None:
    if not codepage or codepage < 0:
        return None
    name = _SPECIAL_CODEPAGES.get(codepage)
    if name is None and 28591 <= codepage <= 28599:
        name = f"iso8859_{codepage - 28590}"
    name = name or f"cp{codepage}"
    return name if known_codec(name) else None


def _prop_int(msg: Any, key: str) -> int | None:
    try:
        prop = msg.props.get(key)
        value = getattr(prop, "value", None)
        return int(value) if value is not None else None
    except Exception:
        return None


class MsgExtractor(MailExtractor):
    name = "email"
    extensions = frozenset({".msg"})
    mime_types = frozenset({"application/vnd.ms-outlook", "application/x-msg"})

    def extract_nested(self, path: Path, limits: Limits, depth: int) -> Extraction:
        msg = _open_msg(path)
        try:
            message = MailMessage()
            with tempfile.TemporaryDirectory(prefix="midas-mail-") as work, attachment_ocr(limits) as ocr:
                _read_msg(msg, message, Reading(limits, depth, Path(work), self.extractor_for, ocr))
            return render(message, limits)
        finally:
            _close(msg)


def _open_msg(path: Path) -> Any:
    try:
        import extract_msg
        from extract_msg.exceptions import ExMsgBaseException
    except ImportError as exc:  # pragma: no cover - pinned
        raise MissingDependency("extract-msg is not installed (pip install extract-msg)") from exc
    if path.stat().st_size == 0:
        raise EmptyDocument(f"{path.name}: file is empty (0 bytes)")
    try:
        msg = extract_msg.openMsg(str(path), delayAttachments=True)
    except (ExMsgBaseException, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise CorruptDocument(f"{path.name}: not a readable Outlook message ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # olefile and extract_msg raise many types for damaged files
        raise CorruptDocument(f"{path.name}: not a readable Outlook message ({type(exc).__name__}: {exc})") from exc
    # 8-bit string properties are decoded with a guessed code page; the message states the real one
    try:
        unicode_strings = bool(msg.areStringsUnicode)
    except Exception:
        unicode_strings = True
    codec = _codepage_codec(_prop_int(msg, "3FDE0003") or _prop_int(msg, "3FFD0003"))
    if not unicode_strings and codec and codecs.lookup(codec).name != codecs.lookup(msg.stringEncoding).name:
        try:
            reopened = extract_msg.openMsg(str(path), delayAttachments=True, overrideEncoding=codec)
        except Exception as exc:
            logger.info("%s: reopening with code page %s failed (%s)", path.name, codec, exc)
        else:
            _close(msg)
            msg = reopened
    return msg


def _close(msg: Any) -> None:
    try:
        msg.close()
    except Exception as exc:  # closing must never mask the real outcome
        logger.debug("closing msg failed: %s", exc)


def _attr(msg: Any, name: str) -> Any:
    try:
        return getattr(msg, name, None)
    except Exception as exc:  # lazily parsed properties can fail individually
        logger.debug("msg property %s unreadable: %s", name, exc)
        return None


def _msg_recipients(value: Any) -> list[str]:
    if not value:
        return []
    items = (item.strip() for item in str(value).split(";"))
    return [item for item in items if item and not re.fullmatch(r"<\s*>", item)]


def _read_msg(msg: Any, message: MailMessage, reading: Reading) -> None:
    subject = _attr(msg, "subject")
    message.subject = subject.strip() if isinstance(subject, str) else None
    sender = _attr(msg, "sender")
    message.sender = sender.strip() if isinstance(sender, str) and sender.strip() else None
    message.to = _msg_recipients(_attr(msg, "to"))
    message.cc = _msg_recipients(_attr(msg, "cc"))
    date = _attr(msg, "date")
    message.date = date if isinstance(date, datetime) else None
    message_id = _attr(msg, "messageId")
    message.message_id = message_id.strip() if isinstance(message_id, str) and message_id.strip() else None
    if message.date is None:
        header = _attr(msg, "header")
        raw_date = header.get("Date") if header is not None and hasattr(header, "get") else None
        message.date_raw = str(raw_date).strip() if raw_date else None
        message.date = mail_date(message.date_raw)

    attachments = _attr(msg, "attachments") or []
    message_class = str(_attr(msg, "classType") or "")
    if "SMIME" in message_class.upper() or any(_is_encrypted_attachment(att) for att in attachments):
        message.encrypted = True
        message.attachments = [_attachment_name(att, i) for i, att in enumerate(attachments, start=1)]
        return

    body = _attr(msg, "body")
    if isinstance(body, bytes):
        body = decode_text(body, None)
    if isinstance(body, str) and body.strip():
        message.bodies.append(newlines(body))
    else:
        message.bodies.append(_msg_fallback_body(msg, message, reading.limits))

    for index, att in enumerate(attachments, start=1):
        display, tmp_name = safe_name(_attachment_name(att, index), index)
        message.attachments.append(display)
        if reading.depth >= MAX_ATTACHMENT_DEPTH:
            not_extracted(message, display, "attachments nested too deeply")
            continue
        data = _attr(att, "data")
        if isinstance(data, bytes):
            message.attachment_sizes[display] = len(data)
            extract_attachment(message, display, tmp_name, data, reading)
        elif data is not None and hasattr(data, "subject"):  # embedded Outlook message
            nested = MailMessage()
            try:
                _read_msg(data, nested, reading.deeper())
                rendered = render(nested, reading.limits)
            except Exception as exc:
                not_extracted(message, display, f"{type(exc).__name__}: {exc}")
                continue
            add_section(message, display, rendered)


def _attachment_name(att: Any, index: int) -> str:
    for attr in ("longFilename", "shortFilename", "displayName", "name"):
        value = _attr(att, attr)
        if isinstance(value, str) and value.strip():
            return value.strip()
    data = _attr(att, "data")
    subject = _attr(data, "subject") if data is not None and not isinstance(data, bytes) else None
    if isinstance(subject, str) and subject.strip():
        return f"{subject.strip()}.msg"
    return f"attachment-{index}"


def _is_encrypted_attachment(att: Any) -> bool:
    mimetype = str(_attr(att, "mimetype") or "").lower()
    name = str(_attachment_name(att, 0)).lower()
    return mimetype in ENCRYPTED_TYPES or name.endswith((".p7m", ".pgp-encrypted")) or name == "smime.p7m"


def _msg_fallback_body(msg: Any, message: MailMessage, limits: Limits) -> str:
    """No plain body: the HTML body as visible text, else the RTF body."""
    try:
        html = msg.htmlBody
    except Exception as exc:
        message.warnings.append(f"HTML body unreadable ({type(exc).__name__})")
        html = None
    if html:
        try:
            return html_to_text(html, limits.max_text_chars, truncate=True)
        except MidasError:
            raise
        except Exception as exc:
            message.warnings.append(f"HTML body could not be converted ({type(exc).__name__})")
    try:
        rtf = msg.rtfBody
    except Exception:
        rtf = None
    if rtf:
        from background_tasks.extraction.extractors.rtf import _convert

        try:
            return _convert(rtf.decode("latin-1"), Path("body.rtf"))
        except MidasError as exc:
            message.warnings.append(f"RTF body could not be converted ({exc.message})")
    return ""
