"""Content-type detection from magic bytes and container structure.

Extensions lie: a ``.doc`` saved by an old mailer is often RTF, a ``.docx``
can be a renamed PDF, a download can be an HTML error page. ``sniff`` says
what the bytes are; ``resolve_extension`` decides which extractor to use, or
refuses with ``TypeMismatch`` when the content is something MIDAS cannot
handle under that name. Only the first bytes of a file and, for ZIP and OLE2
containers, the member/stream names are read.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from background_tasks.errors import EmptyDocument, EncryptedDocument, TypeMismatch, UnsupportedFileType

logger = logging.getLogger(__name__)

SAMPLE_BYTES = 64 * 1024
_CT_MAX_BYTES = 1024 * 1024

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


@dataclass(frozen=True)
class Detected:
    """What a file's content is, independent of its name."""

    #: MIME type, e.g. "application/pdf"
    mime_type: str
    #: family, e.g. "pdf", "docx", "doc", "xlsx", "odt", "msg", "rtf", "html", "xml", "json", "email",
    #: "text", "zip", "ole", "encrypted-ooxml", "image", "binary", "empty"
    kind: str
    #: human-readable description used in error messages
    description: str
    #: the extension MIDAS processes this content as ("" when it cannot)
    extension: str = ""
    #: a container (ZIP/OLE2) whose signature matched but whose structure could not be read
    damaged: bool = False
    #: text encoding for text kinds (from a BOM or decoding), else ""
    encoding: str = ""


# canonical MIME type per processable extension: exactly the registry's SUPPORTED_EXTENSIONS (a test checks)
MIME_BY_EXTENSION: dict[str, str] = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".doc": "application/msword",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".rtf": "application/rtf",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xlsm": "application/vnd.ms-excel.sheet.macroEnabled.12",
    ".xls": "application/vnd.ms-excel",
    ".csv": "text/csv",
    ".msg": "application/vnd.ms-outlook",
    ".eml": "message/rfc822",
    ".html": "text/html",
    ".htm": "text/html",
    ".xml": "application/xml",
    ".json": "application/json",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".log": "text/x-log",
    ".txt": "text/plain",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".bmp": "image/bmp",
    ".gif": "image/gif",
}

# which detected kinds an extension accepts as "what it claims to be"
_EXPECTED_KINDS: dict[str, frozenset[str]] = {
    ".pdf": frozenset({"pdf"}),
    ".docx": frozenset({"docx"}),
    ".doc": frozenset({"doc"}),
    ".odt": frozenset({"odt"}),
    ".rtf": frozenset({"rtf"}),
    ".xlsx": frozenset({"xlsx"}),
    ".xlsm": frozenset({"xlsx"}),
    ".xls": frozenset({"xls"}),
    ".msg": frozenset({"msg"}),
    ".eml": frozenset({"email", "text"}),
    **{ext: frozenset({"image"}) for ext in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")},
}
_IMAGE_EXTENSIONS = frozenset(ext for ext, kinds in _EXPECTED_KINDS.items() if kinds == {"image"})
_TEXT_KINDS = frozenset({"text", "html", "xml", "json", "email", "rtf"})
#: Text kinds any configuration or source file has: they never make an unsupported extension a document.
_GENERIC_TEXT_KINDS = frozenset({"text", "html", "xml", "json"})
TEXT_EXTENSIONS = frozenset(
    {".txt", ".log", ".md", ".markdown", ".csv", ".json", ".jsonl", ".ndjson", ".xml", ".html", ".htm"}
)
_ZIP_EXTENSIONS = frozenset({".docx", ".xlsx", ".xlsm", ".odt"})
_OLE_EXTENSIONS = frozenset({".doc", ".xls", ".msg"})

_WHAT: dict[str, str] = {
    ".pdf": "a PDF",
    ".docx": "a Word (.docx) document",
    ".doc": "a Word 97-2003 (.doc) document",
    ".odt": "an OpenDocument text",
    ".rtf": "an RTF document",
    ".xlsx": "an Excel (.xlsx) workbook",
    ".xlsm": "an Excel (.xlsm) workbook",
    ".xls": "an Excel 97-2003 (.xls) workbook",
    ".msg": "an Outlook message",
    ".eml": "an e-mail message",
    ".png": "a PNG image",
    ".jpg": "a JPEG image",
    ".jpeg": "a JPEG image",
    ".tif": "a TIFF image",
    ".tiff": "a TIFF image",
    ".bmp": "a BMP image",
    ".gif": "a GIF image",
}

_ODF_MIMES: dict[str, tuple[str, str]] = {
    "application/vnd.oasis.opendocument.text": ("odt", ".odt"),
    "application/vnd.oasis.opendocument.spreadsheet": ("ods", ""),
    "application/vnd.oasis.opendocument.presentation": ("odp", ""),
}

#: Header names that mark a text as an e-mail message (also used by the mail extractor).
MAIL_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "received",
        "return-path",
        "reply-to",
        "sender",
        "delivered-to",
        "content-type",
        "in-reply-to",
        "references",
        "x-mailer",
    }
)
_HEADER_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]*):[ \t]?")
_HTML_START = re.compile(
    r"<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>]|meta\s|title>|div[\s>]|p[\s>]|table[\s>]|h[1-6][\s>]"
    r"|span[\s>]|ul[\s>]|ol[\s>]|br\s*/?>|img\s|script[\s>]|style[\s>]|link\s|form[\s>])",
    re.I,
)
_XML_START = re.compile(r"<[A-Za-z_][\w.:-]*[\s/>]")

__all__ = [
    "MIME_BY_EXTENSION",
    "TEXT_EXTENSIONS",
    "Detected",
    "resolve_extension",
    "sniff",
]


def sniff(path: Path | str) -> Detected:
    """Detect a file's type from its content (magic bytes, container members, text shape)."""
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
        more = bool(handle.read(1))
    if not head:
        return Detected("application/x-empty", "empty", "an empty file")
    image = _sniff_image(head)
    if image is not None:
        return image
    pdf_at = head.find(b"%PDF-", 0, 1024)
    if pdf_at >= 0:
        return Detected("application/pdf", "pdf", "a PDF document", ".pdf")
    if head.startswith(ZIP_MAGICS):
        return _sniff_zip(path)
    if head.startswith(OLE_MAGIC):
        return _sniff_ole(path)
    if _is_biff(head):
        return Detected(MIME_BY_EXTENSION[".xls"], "xls", "an Excel 2.x-4.x (BIFF) worksheet", ".xls")
    return _sniff_text(head, truncated=more)


# ------------------------------------------------------------------ images

#: (magic at offset 0, MIME type, description, extension)
_IMAGE_MAGICS = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "a PNG image", ".png"),
    (b"\xff\xd8\xff", "image/jpeg", "a JPEG image", ".jpg"),
    (b"II*\x00", "image/tiff", "a TIFF image", ".tif"),
    (b"MM\x00*", "image/tiff", "a TIFF image", ".tif"),
    (b"II+\x00", "image/tiff", "a BigTIFF image", ".tif"),
    (b"MM\x00+", "image/tiff", "a BigTIFF image", ".tif"),
    (b"GIF87a", "image/gif", "a GIF image", ".gif"),
    (b"GIF89a", "image/gif", "a GIF image", ".gif"),
)
#: sizes of the BMP info headers (OS/2 v1, v1-v5): "BM" alone is too common a start for text
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def _sniff_image(head: bytes) -> Detected | None:
    for magic, mime, description, extension in _IMAGE_MAGICS:
        if head.startswith(magic):
            return Detected(mime, "image", description, extension)
    if head.startswith(b"BM") and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return Detected("image/bmp", "image", "a BMP image", ".bmp")
    return None


# ------------------------------------------------------------------ containers


def _is_biff(head: bytes) -> bool:
    """Pre-OLE Excel (BIFF2/3/4) starts with a BOF record: type 0x0009/0x0209/0x0409, small length, known version."""
    if len(head) < 8 or head[:2] not in (b"\x09\x00", b"\x09\x02", b"\x09\x04"):
        return False
    length = int.from_bytes(head[2:4], "little")
    kind = int.from_bytes(head[6:8], "little")
    return 4 <= length <= 16 and kind in (0x0010, 0x0020, 0x0040, 0x0100)


def _sniff_zip(path: Path) -> Detected:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "mimetype" in names:
                info = zf.getinfo("mimetype")
                if info.file_size <= 200:
                    mime = zf.read(info).decode("ascii", "replace").strip()
                    if mime in _ODF_MIMES:
                        kind, ext = _ODF_MIMES[mime]
                        return Detected(mime, kind, f"an OpenDocument file ({kind})", ext)
                    if mime.startswith("application/vnd.oasis.opendocument"):
                        return Detected(mime, "odf", f"an OpenDocument file ({mime})")
                    if mime == "application/epub+zip":
                        return Detected(mime, "epub", "an EPUB e-book")
            content_types = ""
            if "[Content_Types].xml" in names:
                info = zf.getinfo("[Content_Types].xml")
                if info.file_size <= _CT_MAX_BYTES:
                    content_types = zf.read(info).decode("utf-8", "replace")
    except Exception as exc:  # zipfile raises BadZipFile, zlib.error, NotImplementedError... on damaged archives
        logger.debug("zip sniff failed for %s: %s", path, exc)
        return Detected("application/zip", "zip", "a damaged ZIP archive", damaged=True)
    if "word/document.xml" in names or "wordprocessingml.document.main" in content_types:
        return Detected(MIME_BY_EXTENSION[".docx"], "docx", "a Word (.docx) document", ".docx")
    if "xl/workbook.xml" in names or "spreadsheetml.sheet.main" in content_types:
        return Detected(MIME_BY_EXTENSION[".xlsx"], "xlsx", "an Excel (.xlsx) workbook", ".xlsx")
    if "ppt/presentation.xml" in names or "presentationml" in content_types:
        return Detected(
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "pptx",
            "a PowerPoint (.pptx) presentation",
        )
    if "xl/workbook.bin" in names:
        return Detected("application/vnd.ms-excel.sheet.binary.macroenabled.12", "xlsb", "an Excel binary workbook")
    if content_types:
        return Detected("application/vnd.openxmlformats-officedocument", "ooxml", "an Office Open XML package")
    return Detected("application/zip", "zip", "a ZIP archive")


def _sniff_ole(path: Path) -> Detected:
    try:
        import olefile
    except ImportError:  # pragma: no cover - olefile ships with extract-msg
        return Detected("application/x-ole-storage", "ole", "an OLE2 compound file")
    try:
        with olefile.OleFileIO(str(path)) as ole:
            streams = {"/".join(entry) for entry in ole.listdir(streams=True, storages=True)}
    except Exception as exc:  # olefile raises many types for damaged files
        logger.debug("OLE sniff failed for %s: %s", path, exc)
        return Detected("application/x-ole-storage", "ole", "a damaged OLE2 compound file", damaged=True)
    top = {name.split("/", 1)[0] for name in streams}
    if "EncryptedPackage" in top:
        return Detected(
            "application/x-ooxml-encrypted", "encrypted-ooxml", "a password-protected Office (OOXML) document"
        )
    if "WordDocument" in top:
        return Detected(MIME_BY_EXTENSION[".doc"], "doc", "a Word 97-2003 (.doc) document", ".doc")
    if "Workbook" in top or "Book" in top:
        return Detected(MIME_BY_EXTENSION[".xls"], "xls", "an Excel 97-2003 (.xls) workbook", ".xls")
    if "__properties_version1.0" in top or any(name.startswith("__substg1.0_") for name in top):
        return Detected(MIME_BY_EXTENSION[".msg"], "msg", "an Outlook message", ".msg")
    if "PowerPoint Document" in top:
        return Detected("application/vnd.ms-powerpoint", "ppt", "a PowerPoint 97-2003 presentation")
    return Detected("application/x-ole-storage", "ole", "an OLE2 compound file of unknown kind")


# ------------------------------------------------------------------ text


def _bom_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF32_LE) or head.startswith(codecs.BOM_UTF32_BE):
        return "utf-32"
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16"
    return ""


def _bomless_utf16(head: bytes) -> str:
    """UTF-16 without a BOM shows up as NUL in every other byte of mostly-ASCII text."""
    sample = head[:4096]
    if len(sample) < 8:
        return ""
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.4 * len(odd) and even.count(0) < 0.05 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.4 * len(even) and odd.count(0) < 0.05 * len(odd):
        return "utf-16-be"
    return ""


def _control_ratio(data: bytes) -> float:
    bad = sum(1 for b in data if b < 0x20 and b not in (0x09, 0x0A, 0x0C, 0x0D, 0x1B))
    return bad / max(len(data), 1)


def _decode_sample(head: bytes, truncated: bool) -> tuple[str, str] | None:
    """(text, encoding) when the sample is text, None when it looks binary."""
    encoding = _bom_encoding(head) or _bomless_utf16(head)
    if encoding:
        body = head
        if encoding.startswith("utf-16") and len(body) % 2:
            body = body[:-1]
        if encoding == "utf-32":
            body = body[: len(body) - len(body) % 4]
        text = body.decode(encoding, errors="replace")
        return (text, encoding) if _control_ratio(text.encode("utf-8", "replace")) < 0.01 else None
    if _control_ratio(head) > 0.01 or b"\x00" in head:
        return None
    try:
        return head.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if truncated and exc.start >= len(head) - 3:  # a multi-byte character cut by the sample end
            return head[: exc.start].decode("utf-8"), "utf-8"
    # legacy 8-bit text: printable ASCII plus high bytes, no control characters
    return head.decode("cp1252", errors="replace"), "8bit"


def _looks_like_email(text: str) -> bool:
    known = 0
    lines = text.splitlines()[:200]
    if lines and lines[0].startswith("From "):  # mbox separator line
        lines = lines[1:]
    if not lines or not _HEADER_LINE.match(lines[0]):
        return False
    for line in lines:
        if not line.strip():
            break
        if line[:1] in (" ", "\t"):
            continue
        match = _HEADER_LINE.match(line)
        if not match:
            return False
        if match.group(1).lower() in MAIL_HEADERS:
            known += 1
    return known >= 2


def _sniff_text(head: bytes, truncated: bool) -> Detected:
    decoded = _decode_sample(head, truncated)
    if decoded is None:
        return Detected("application/octet-stream", "binary", "random binary data")
    text, encoding = decoded
    start = text.lstrip("\ufeff \t\r\n")
    lowered = start[:2048].lower()
    if start.startswith("{\\rtf"):
        return Detected("application/rtf", "rtf", "an RTF document", ".rtf", encoding=encoding)
    if lowered.startswith("<?xml"):
        if _HTML_START.search(lowered[:2048]) and "<html" in lowered:
            return Detected("text/html", "html", "an HTML (XHTML) page", ".html", encoding=encoding)
        return Detected("application/xml", "xml", "an XML document", ".xml", encoding=encoding)
    if lowered.startswith("<") and _HTML_START.match(lowered):
        return Detected("text/html", "html", "an HTML page", ".html", encoding=encoding)
    if lowered.startswith("<!--") and "<html" in lowered:
        return Detected("text/html", "html", "an HTML page", ".html", encoding=encoding)
    if lowered.startswith("<!doctype") or (lowered.startswith("<") and _XML_START.match(start)):
        return Detected("application/xml", "xml", "an XML document", ".xml", encoding=encoding)
    if (start[:1] == "{" or (start[:1] == "[" and not truncated)) and _json_like(start, truncated):
        return Detected("application/json", "json", "a JSON document", ".json", encoding=encoding)
    if _looks_like_email(start):
        return Detected("message/rfc822", "email", "an e-mail message", ".eml", encoding=encoding)
    return Detected("text/plain", "text", "plain text", ".txt", encoding=encoding)


def _json_like(text: str, truncated: bool) -> bool:
    if not truncated:
        try:
            json.loads(text)
            return True
        except ValueError:
            pass
    return bool(re.match(r'\{\s*("|\})', text))


# ------------------------------------------------------------------ resolution


def resolve_extension(path: Path | str, extension: str) -> tuple[str, str]:
    """(extension to process the file as, MIME type), or ``TypeMismatch``/``UnsupportedFileType``/``EmptyDocument``.

    The extension wins when the content agrees with it (text-ish extensions
    accept any text). When the content is another supported type, that type
    wins (a ``.doc`` that is RTF is processed as ``.rtf``). Damaged containers
    keep their extension so the extractor can report what is wrong.
    """
    path = Path(path)
    ext = extension.lower()
    if ext and not ext.startswith("."):
        ext = "." + ext
    detected = sniff(path)
    name = path.name
    if detected.kind == "empty":
        raise EmptyDocument(f"{name}: file is empty (0 bytes)")
    if detected.kind == "encrypted-ooxml":
        raise EncryptedDocument(f"{name}: {detected.description}; no password is available")

    if ext in TEXT_EXTENSIONS:
        if detected.kind in _TEXT_KINDS:
            return ext, MIME_BY_EXTENSION.get(ext, detected.mime_type)
        if detected.extension:
            return _switch(name, ext, detected)
        raise TypeMismatch(f"{name}: content is not text (looks like {detected.description})")

    expected = _EXPECTED_KINDS.get(ext)
    if ext in _IMAGE_EXTENSIONS and detected.kind == "image":
        return ext, detected.mime_type  # any image format under any image extension: the bytes say which
    if expected is not None and detected.kind in expected:
        return ext, MIME_BY_EXTENSION.get(ext, detected.mime_type)
    if detected.damaged and (
        (ext in _ZIP_EXTENSIONS and detected.kind == "zip") or (ext in _OLE_EXTENSIONS and detected.kind == "ole")
    ):
        return ext, MIME_BY_EXTENSION[ext]
    what = _WHAT.get(ext, f"a {ext or 'extension-less'} file")
    if detected.kind == "text" and ext in _WHAT:
        # a "report.odt" that holds a line of plain text is a broken document, not a text file
        raise TypeMismatch(f"{name}: content is not {what} (it is plain text)")
    if not is_supported(ext) and detected.kind in _GENERIC_TEXT_KINDS:
        # A ".env", ".cfg" or extension-less text is configuration, not a document: it is never read as text.
        raise _unsupported(name, ext, detected)
    if detected.extension and is_supported(detected.extension):
        return _switch(name, ext, detected)
    if not is_supported(ext):
        # A ".pptx" that is a presentation, a ".zip": nothing contradicts the name, MIDAS just does not read it.
        raise _unsupported(name, ext, detected)
    if detected.kind == "binary":
        raise TypeMismatch(f"{name}: content is not {what} (looks like random binary data)")
    raise TypeMismatch(f"{name}: content is not {what} (it is {detected.description}, which is not supported)")


def _unsupported(name: str, ext: str, detected: Detected) -> UnsupportedFileType:
    return UnsupportedFileType(
        f"{name}: {ext or 'files without an extension'} is not a supported type "
        f"(the content is {detected.description}); supported: see the README"
    )


def is_supported(extension: str) -> bool:
    """An extension MIDAS extracts: one of ``MIME_BY_EXTENSION``, which lists the registry's extensions.

    Detection does not import the extractor registry: the registry (and the
    mail extractor in it) uses detection, and a test keeps the two lists equal.
    """
    return extension in MIME_BY_EXTENSION


def _switch(name: str, ext: str, detected: Detected) -> tuple[str, str]:
    logger.info(
        "%s: content is %s, processing as %s instead of %s", name, detected.description, detected.extension, ext
    )
    return detected.extension, detected.mime_type
