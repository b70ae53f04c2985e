"""E-mail: .eml (stdlib ``email``, ``policy.default``) and Outlook .msg (extract_msg).

The text is a header block (Subject, From, To, Cc, Date), the body (plain text
preferred; HTML-only bodies converted to visible text) and, under a
``--- Attachment: name ---`` heading each, the text of attachments MIDAS can
read. Attachments are written to a private temporary directory, their real
type is detected, and the registry's extractor runs on them; a failing
attachment becomes a warning, never an error. Messages attached to messages
are followed at most ``MAX_ATTACHMENT_DEPTH`` levels deep.

Encrypted mail (S/MIME ``application/pkcs7-mime`` enveloped data, PGP/MIME
``multipart/encrypted``): the headers are not encrypted and are what a user
searches a mailbox by, so extraction succeeds with the headers only, the
metadata flag ``encrypted: True`` and a warning that the body is encrypted.
It is not an ``EncryptedDocument`` error, because the file is not unreadable.
"""

from __future__ import annotations

import codecs
import logging
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import Any

from background_tasks.errors import CorruptDocument, EmptyDocument, MidasError, MissingDependency
from background_tasks.extraction.detect import MAIL_HEADERS
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits

logger = logging.getLogger(__name__)

#: a message inside a message inside a message is followed; deeper ones are only listed
MAX_ATTACHMENT_DEPTH = 3
ENCRYPTED_WARNING = "message body is encrypted (S/MIME or PGP); only the headers were extracted"

_ENCRYPTED_TYPES = frozenset(
    {"application/pkcs7-mime", "application/x-pkcs7-mime", "application/pgp-encrypted", "multipart/encrypted"}
)
_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "br",
        "tr",
        "li",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "table",
        "ul",
        "ol",
        "blockquote",
        "pre",
        "section",
        "article",
        "header",
        "footer",
        "hr",
        "dd",
        "dt",
        "title",
        "address",
    }
)


# ---------------------------------------------------------------------- shared pieces


@dataclass
class _Message:
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


def html_to_text(html: str | bytes) -> str:
    """Visible text of an HTML body: scripts, styles and the head dropped, blocks on their own lines."""
    try:
        from bs4 import BeautifulSoup
    except ImportError as exc:  # pragma: no cover - pinned
        raise MissingDependency("beautifulsoup4 is not installed (pip install beautifulsoup4)") from exc
    try:
        soup = BeautifulSoup(html, "lxml")
    except Exception:  # lxml missing or choking: the stdlib parser is slower but forgiving
        soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head", "svg"]):
        tag.decompose()
    for tag in soup.find_all(True):
        name = tag.name.lower() if tag.name else ""
        if name == "br":
            tag.replace_with("\n")
        elif name in ("td", "th"):
            tag.append("\t")
        elif name in _BLOCK_TAGS:
            tag.insert_before("\n")
            tag.append("\n")
    text = soup.get_text()
    text = text.replace("\xa0", " ").replace("\u200b", "")
    lines = [re.sub(r" ?\t[ \t]*", "\t", re.sub(r"[ \r\f\v]+", " ", line)).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _render(message: _Message, limits: Limits) -> Extraction:
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
    parts.extend(_newlines(body).strip() for body in message.bodies if body and body.strip())
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
        "date": message.date.isoformat() if message.date else None,
        "message_id": message.message_id,
        "attachments": message.attachments,
        "encrypted": message.encrypted,
    }
    if message.date is None and message.date_raw:
        metadata["date_raw"] = message.date_raw
    return Extraction(text=text, metadata=metadata, warnings=tuple(warnings))


def _with_size(name: str, size: int | None) -> str:
    if size is None:
        return name
    if size < 1024:
        return f"{name} ({size} B)"
    if size < 1024 * 1024:
        return f"{name} ({size / 1024:.2f} KiB)"
    return f"{name} ({size / 1024 / 1024:.2f} MiB)"


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _safe_name(name: str, index: int) -> tuple[str, str]:
    """(display name, file name for the temp copy): only the suffix of an attacker-chosen name is reused."""
    display = (name or "").replace("\x00", "").strip() or f"attachment-{index}"
    suffix = Path(display.replace("\\", "/")).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,10}", suffix):
        suffix = ""
    return display, f"attachment-{index}{suffix}"


def _extract_attachment(
    message: _Message, display: str, filename: str, data: bytes, limits: Limits, depth: int, work: Path
) -> None:
    """Write one attachment to the private dir, detect its type, run the matching extractor, add a section."""
    from background_tasks.extraction import detect
    from background_tasks.extraction.extractors import SUPPORTED_EXTENSIONS, extractor_for

    if not data:
        return
    if len(data) > limits.max_decompressed_bytes:
        message.warnings.append(f"attachment {display!r} not extracted: larger than the decompression limit")
        return
    target = work / filename
    target.write_bytes(data)
    suffix = target.suffix.lower()
    sniffed = detect.sniff(target)
    if suffix not in SUPPORTED_EXTENSIONS and (not sniffed.extension or sniffed.kind == "text"):
        return  # images, archives, unknown binaries, extension-less text blobs: listed, not extracted
    try:
        extension, mime_type = detect.resolve_extension(target, suffix or sniffed.extension)
        extractor = extractor_for(extension, mime_type)
        if isinstance(extractor, _MailExtractor):
            result = extractor.extract_nested(target, limits, depth + 1)
        else:
            result = extractor.extract(target, limits)
    except MidasError as exc:
        reason = exc.message.replace(filename, display)
        message.warnings.append(f"attachment {display!r} not extracted: {reason}")
        return
    except Exception as exc:  # a third-party parser failing on one attachment must not fail the message
        logger.info("attachment %r failed: %s", display, exc, exc_info=True)
        message.warnings.append(f"attachment {display!r} not extracted: {type(exc).__name__}: {exc}")
        return
    message.warnings.extend(f"attachment {display!r}: {w}" for w in result.warnings)
    if result.text.strip():
        message.sections.append(f"--- Attachment: {display} ---\n{result.text.strip()}")


class _MailExtractor(Extractor):
    """Shared entry points: ``extract`` starts at depth 0, attachments recurse through ``extract_nested``."""

    def extract(self, path: Path, limits: Limits) -> Extraction:
        return self.extract_nested(path, limits, 0)

    def extract_nested(self, path: Path, limits: Limits, depth: int) -> Extraction:
        raise NotImplementedError


# ---------------------------------------------------------------------- EML


def _decode_bytes(data: bytes, charset: str | None) -> str:
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
    return data.decode(name if _known(name) else "cp1252", errors="replace")


def _known(name: str) -> bool:
    try:
        codecs.lookup(name)
        return bool(name)
    except LookupError:
        return False


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


def _addresses(value: str | None) -> list[str]:
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


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


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


class EmlExtractor(_MailExtractor):
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
        message = _Message()
        with tempfile.TemporaryDirectory(prefix="midas-mail-") as work:
            _read_email(msg, message, limits, depth, Path(work))
        return _render(message, limits)


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


def _read_email(msg: Message, message: _Message, limits: Limits, depth: int, work: Path) -> None:
    message.subject = _header(msg, "Subject")
    message.sender = _header(msg, "From")
    message.to = _addresses(_header(msg, "To"))
    message.cc = _addresses(_header(msg, "Cc"))
    message.date_raw = _header(msg, "Date")
    message.date = _date(message.date_raw)
    message.message_id = _header(msg, "Message-ID")
    counter = [0]
    _walk(msg, message, limits, depth, work, counter, level=0)


def _walk(
    part: Message,
    message: _Message,
    limits: Limits,
    depth: int,
    work: Path,
    counter: list[int],
    level: int,
    bodies: bool = True,
) -> None:
    """Collect body texts and attachments; ``bodies=False`` walks a non-chosen alternative for attachments only."""
    if level > limits.max_nesting:
        message.warnings.append("MIME parts nested too deeply; the rest was skipped")
        return
    ctype = part.get_content_type()
    if ctype in _ENCRYPTED_TYPES and (ctype != "application/pkcs7-mime" or _is_enveloped(part)):
        message.encrypted = True
        return
    filename = _filename(part)
    if ctype == "message/rfc822":
        _nested_email(part, message, limits, depth, work, counter, filename)
        return
    if part.is_multipart():
        children = part.get_payload()
        if not isinstance(children, list):
            return
        if part.get_content_subtype() == "alternative":
            chosen = _best_alternative(children) if bodies else None
            for child in children:
                _walk(child, message, limits, depth, work, counter, level + 1, bodies=child is chosen)
            return
        if part.get_content_subtype() == "signed" and children:
            children = children[:1]  # the signature part is not content
        for child in children:
            _walk(child, message, limits, depth, work, counter, level + 1, bodies)
        return
    disposition = (part.get_content_disposition() or "").lower()
    if part.get_content_maintype() == "text" and disposition != "attachment" and not filename:
        if not bodies:
            return
        text = _decode_bytes(_part_bytes(part), part.get_content_charset())
        message.bodies.append(html_to_text(text) if ctype == "text/html" else text)
        return
    if not filename and (part.get_content_maintype() == "image" or not bodies):
        return  # nameless inline images (signatures, logos) are layout, not attachments
    counter[0] += 1
    display, tmp_name = _safe_name(filename or "", counter[0])
    message.attachments.append(display)
    data = _part_bytes(part)
    message.attachment_sizes[display] = len(data)
    if depth >= MAX_ATTACHMENT_DEPTH:
        message.warnings.append(f"attachment {display!r} not extracted: attachments nested too deeply")
        return
    _extract_attachment(message, display, tmp_name, data, limits, depth, work)


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
    if plain is not None and _decode_bytes(_part_bytes(plain), plain.get_content_charset()).strip():
        return plain
    for wanted in ("text/html", "multipart/related", "multipart/mixed"):
        if wanted in by_type:
            return by_type[wanted]
    return children[-1] if children else None


def _nested_email(
    part: Message, message: _Message, limits: Limits, depth: int, work: Path, counter: list[int], filename: str | None
) -> None:
    counter[0] += 1
    inner_parts = part.get_payload()
    inner = inner_parts[0] if isinstance(inner_parts, list) and inner_parts else None
    subject = _header(inner, "Subject") if inner is not None else None
    display = filename or (f"{subject}.eml" if subject else f"attachment-{counter[0]}.eml")
    message.attachments.append(display)
    if inner is None:
        return
    if depth >= MAX_ATTACHMENT_DEPTH:
        message.warnings.append(f"attachment {display!r} not extracted: attachments nested too deeply")
        return
    nested = _Message()
    try:
        _read_email(inner, nested, limits, depth + 1, work)
        rendered = _render(nested, limits)
    except MidasError as exc:
        message.warnings.append(f"attachment {display!r} not extracted: {exc.message}")
        return
    except Exception as exc:
        message.warnings.append(f"attachment {display!r} not extracted: {type(exc).__name__}: {exc}")
        return
    message.warnings.extend(f"attachment {display!r}: {w}" for w in rendered.warnings)
    if rendered.text.strip():
        message.sections.append(f"--- Attachment: {display} ---\n{rendered.text}")


# ---------------------------------------------------------------------- MSG

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
    return name if _known(name) else None


def _prop_int(msg: Any, key: str) -> int | None:
    try:
        prop = msg.props.get(key)
        value = getattr(prop, "value", None)
        return int(value) if value is not None else None
    except Exception:
        return None


class MsgExtractor(_MailExtractor):
    name = "email"
    extensions = frozenset({".msg"})
    mime_types = frozenset({"application/vnd.ms-outlook", "application/x-msg"})

    def extract_nested(self, path: Path, limits: Limits, depth: int) -> Extraction:
        msg = _open_msg(path)
        try:
            message = _Message()
            with tempfile.TemporaryDirectory(prefix="midas-mail-") as work:
                _read_msg(msg, message, limits, depth, Path(work))
            return _render(message, limits)
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


def _read_msg(msg: Any, message: _Message, limits: Limits, depth: int, work: Path) -> None:
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
        message.date = _date(message.date_raw)

    attachments = _attr(msg, "attachments") or []
    message_class = str(_attr(msg, "classType") or "")
    if "SMIME" in message_class.upper() or any(_is_encrypted_attachment(att) for att in attachments):
        message.encrypted = True
        message.attachments = [_attachment_name(att, i) for i, att in enumerate(attachments, start=1)]
        return

    body = _attr(msg, "body")
    if isinstance(body, bytes):
        body = _decode_bytes(body, None)
    if isinstance(body, str) and body.strip():
        message.bodies.append(body.replace("\r\n", "\n").replace("\r", "\n"))
    else:
        message.bodies.append(_msg_fallback_body(msg, message))

    for index, att in enumerate(attachments, start=1):
        display, tmp_name = _safe_name(_attachment_name(att, index), index)
        message.attachments.append(display)
        if depth >= MAX_ATTACHMENT_DEPTH:
            message.warnings.append(f"attachment {display!r} not extracted: attachments nested too deeply")
            continue
        data = _attr(att, "data")
        if isinstance(data, bytes):
            message.attachment_sizes[display] = len(data)
            _extract_attachment(message, display, tmp_name, data, limits, depth, work)
        elif data is not None and hasattr(data, "subject"):  # embedded Outlook message
            nested = _Message()
            try:
                _read_msg(data, nested, limits, depth + 1, work)
                rendered = _render(nested, limits)
            except Exception as exc:
                message.warnings.append(f"attachment {display!r} not extracted: {type(exc).__name__}: {exc}")
                continue
            message.warnings.extend(f"attachment {display!r}: {w}" for w in rendered.warnings)
            if rendered.text.strip():
                message.sections.append(f"--- Attachment: {display} ---\n{rendered.text}")


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
    return mimetype in _ENCRYPTED_TYPES or name.endswith((".p7m", ".pgp-encrypted")) or name == "smime.p7m"


def _msg_fallback_body(msg: Any, message: _Message) -> str:
    """No plain body: the HTML body as visible text, else the RTF body."""
    try:
        html = msg.htmlBody
    except Exception as exc:
        message.warnings.append(f"HTML body unreadable ({type(exc).__name__})")
        html = None
    if html:
        try:
            return html_to_text(html)
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
