"""PDF text and metadata with pypdf.

pypdf runs in non-strict mode so damaged files give whatever is readable:
a page that fails becomes a warning, not an error. When even the document
structure cannot be read (truncated file, broken cross-reference table) the
raw content streams are scanned as a last resort and the result is flagged as
partial. Scanned/image-only PDFs succeed with a warning, because "this file has
no text layer" is the honest answer, not a failure; the pages that need OCR
(little or no text, but a picture) are listed in ``pages_without_text`` for
the pipeline's OCR step.
"""

from __future__ import annotations

import logging
import re
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

from background_tasks.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    MidasError,
    MissingDependency,
    ResourceLimitExceeded,
)
from background_tasks.extractors.base import Extraction, Extractor, Limits, TextBuilder

logger = logging.getLogger(__name__)

NO_TEXT_LAYER = "no text layer (image-only or scanned PDF); OCR not applied"
#: fewer letters/digits than this per page on average means "no text layer"
_MIN_CHARS_PER_PAGE = 16


class PdfExtractor(Extractor):
    name = "pdf"
    extensions = frozenset({".pdf"})
    mime_types = frozenset({"application/pdf", "application/x-pdf"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        reader, warnings = _open(path)
        if reader is None:
            return _salvage(path, limits, warnings)
        metadata = _metadata(reader, path)
        try:
            pages = list(reader.pages)
        except MidasError:
            raise
        except Exception as exc:
            logger.info("%s: page tree unreadable (%s); scanning raw streams", path.name, exc)
            return _salvage(path, limits, [*warnings, f"page tree unreadable ({_short(exc)})"])
        metadata["page_count"] = len(pages)
        builder = TextBuilder()
        failed: list[int] = []
        ocr_candidates: list[int] = []  # pages with (almost) no text but a picture: scans to OCR
        empty_pages = 0
        truncated = False
        for number, page in enumerate(pages, start=1):
            try:
                text = page.extract_text() or ""
            except MidasError:
                raise
            except Exception as exc:  # pypdf raises many types on broken pages
                failed.append(number)
                warnings.append(f"page {number}: text could not be extracted ({_short(exc)})")
                continue
            text = _clean(text)
            if sum(ch.isalnum() for ch in text) < _MIN_CHARS_PER_PAGE and _has_images(page):
                ocr_candidates.append(number)
            if not text.strip():
                empty_pages += 1
                continue
            if builder.length + len(text) > limits.max_text_chars:
                text = text[: max(limits.max_text_chars - builder.length, 0)]
                truncated = True
            builder.add(text, page=number)
            if truncated:
                warnings.append(f"text truncated at {limits.max_text_chars} characters (page {number})")
                break
        full = builder.text()
        if ocr_candidates or failed:
            metadata["pages_without_text"] = sorted({*ocr_candidates, *failed})
        if pages and len(failed) == len(pages):
            raise CorruptDocument(f"{path.name}: no page could be read ({warnings[-1]})")
        letters = sum(ch.isalnum() for ch in full)
        if pages and letters < _MIN_CHARS_PER_PAGE * len(pages):
            warnings.append(NO_TEXT_LAYER)
            metadata["text_layer"] = False
        else:
            metadata["text_layer"] = True
            if empty_pages:
                warnings.append(f"{empty_pages} of {len(pages)} pages have no text layer (images only?)")
        return Extraction(text=full, metadata=metadata, pages=builder.pages(), warnings=tuple(warnings))

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """Document info and page count without extracting any page text."""
        reader, _warnings = _open(path)
        if reader is None:
            return {"page_count": None, "encrypted": False}
        metadata = _metadata(reader, path)
        try:
            metadata["page_count"] = len(reader.pages)
        except MidasError:
            raise
        except Exception:
            metadata["page_count"] = None
        return metadata


def _has_images(page: Any, max_depth: int = 4) -> bool:
    """Whether a page paints a raster image: an image XObject (also inside forms) or an inline image."""
    try:
        if _resources_have_images(page.get("/Resources"), max_depth, set()):
            return True
        contents = page.get_contents()
        return contents is not None and re.search(rb"(?:^|\s)BI\s", contents.get_data()) is not None
    except MidasError:
        raise
    except Exception:  # unreadable resources: let OCR look at the rendered page
        return True


def _resources_have_images(resources: Any, depth: int, seen: set[int]) -> bool:
    if resources is None or depth < 0:
        return False
    xobjects = resources.get_object().get("/XObject")
    if not xobjects:
        return False
    for ref in xobjects.get_object().values():
        number = getattr(ref, "idnum", None)
        if number is not None:
            if number in seen:
                continue
            seen.add(number)
        obj = ref.get_object()
        subtype = obj.get("/Subtype")
        if subtype == "/Image":
            return True
        if subtype == "/Form" and _resources_have_images(obj.get("/Resources"), depth - 1, seen):
            return True
    return False


def is_text_layer_warning(warning: str) -> bool:
    """The warnings this extractor gives for pages without text (OCR replaces them when it runs)."""
    return warning == NO_TEXT_LAYER or bool(_PARTIAL_TEXT_LAYER.fullmatch(warning))


_PARTIAL_TEXT_LAYER = re.compile(r"\d+ of \d+ pages have no text layer \(images only\?\)")


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 160 else text[:157] + "..."


_LIGATURES = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"}
)


def _clean(text: str) -> str:
    """Drop control characters (fonts without a usable encoding) and split typographic ligatures so words match."""
    return re.sub(r"[\x00-\x08\x0b\x0e-\x1f]", "", text).translate(_LIGATURES)


def _open(path: Path) -> tuple[Any, list[str]]:
    """A ready (decrypted) PdfReader, or (None, warnings) when the structure is unreadable."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import DependencyError, FileNotDecryptedError
    except ImportError as exc:  # pragma: no cover - pinned in requirements
        raise MissingDependency("pypdf is not installed (pip install pypdf)") from exc
    warnings: list[str] = []
    if path.stat().st_size == 0:
        raise EmptyDocument(f"{path.name}: file is empty (0 bytes)")
    try:
        reader = PdfReader(path, strict=False)
    except MidasError:
        raise
    except Exception as exc:
        logger.info("%s: pypdf cannot open (%s)", path.name, exc)
        warnings.append(f"PDF structure unreadable ({_short(exc)})")
        return None, warnings
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except DependencyError as exc:
            raise MissingDependency(f"{path.name}: decrypting needs the 'cryptography' package ({exc})") from exc
        except Exception as exc:
            raise EncryptedDocument(f"{path.name}: encrypted PDF, cannot decrypt ({_short(exc)})") from exc
        if not opened:
            raise EncryptedDocument(f"{path.name}: PDF is password-protected and the empty password does not open it")
        warnings.append("PDF is encrypted; opened with the empty password")
        try:
            len(reader.pages)
        except FileNotDecryptedError as exc:
            raise EncryptedDocument(f"{path.name}: PDF is password-protected") from exc
        except Exception:  # structural problems are handled by the caller
            pass
    return reader, warnings


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()
    return text or None


def _metadata(reader: Any, path: Path) -> dict[str, Any]:
    metadata: dict[str, Any] = {"encrypted": bool(reader.is_encrypted)}
    try:
        info = reader.metadata
    except Exception as exc:
        logger.info("%s: document info unreadable (%s)", path.name, exc)
        info = None
    if info is None:
        return metadata
    for key, attr in (("title", "title"), ("subject", "subject"), ("producer", "producer"), ("creator", "creator")):
        try:
            value = _text(getattr(info, attr))
        except Exception:
            value = None
        if value:
            metadata[key] = value
    try:
        author = _text(info.author)
    except Exception:
        author = None
    if author:
        metadata["authors"] = [a.strip() for a in re.split(r";", author) if a.strip()]
    for key, attr, raw in (
        ("created", "creation_date", "creation_date_raw"),
        ("modified", "modification_date", "modification_date_raw"),
    ):
        try:
            value = _iso(getattr(info, attr))
        except Exception:  # malformed date string: keep the raw value for a human
            value = None
            try:
                raw_value = _text(getattr(info, raw))
            except Exception:
                raw_value = None
            if raw_value:
                metadata[f"{key}_raw"] = raw_value
        if value:
            metadata[key] = value
    return metadata


# ------------------------------------------------------------------ last-resort salvage

_STREAM = re.compile(rb"stream\r?\n")
_TEXT_OP = re.compile(rb"\((?:\\.|[^\\)])*\)|\[(?:\\.|[^\]\\])*\]\s*TJ|T\*|Td|TD|ET|'|\"", re.S)
_STRING = re.compile(rb"\((?:\\.|[^\\)])*\)|(-?\d+(?:\.\d+)?)", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _unescape(raw: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i : i + 1]
        if ch == b"\\" and i + 1 < len(raw):
            nxt = raw[i + 1 : i + 2]
            if nxt in _ESCAPES:
                out += _ESCAPES[nxt]
                i += 2
                continue
            octal = re.match(rb"[0-7]{1,3}", raw[i + 1 : i + 4])
            if octal:
                out.append(int(octal.group(), 8) & 0xFF)
                i += 1 + len(octal.group())
                continue
            if nxt in (b"\n", b"\r"):
                i += 2
                continue
            out += nxt
            i += 2
            continue
        out += ch
        i += 1
    return bytes(out)


def _content_text(stream: bytes) -> str:
    """Very rough text of one content stream: the strings of Tj/TJ operators in order."""
    parts: list[str] = []
    for match in _TEXT_OP.finditer(stream):
        token = match.group()
        if token in (b"T*", b"Td", b"TD", b"'", b'"'):
            parts.append("\n" if token in (b"T*", b"'", b'"') else " ")
            continue
        if token == b"ET":
            parts.append("\n")
            continue
        if token.startswith(b"("):
            parts.append(_unescape(token[1:-1]).decode("latin-1"))
            continue
        for piece in _STRING.finditer(token[: token.rfind(b"]")]):
            if piece.group(1) is not None:
                if float(piece.group(1)) < -200:
                    parts.append(" ")
            else:
                parts.append(_unescape(piece.group()[1:-1]).decode("latin-1"))
    text = "".join(parts)
    text = re.sub(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]", "", text)
    return re.sub(r"[ \t]+", " ", re.sub(r"\n\s*\n+", "\n", text)).strip()


def _inflate(chunk: bytes, limit: int) -> bytes:
    """Inflate a (possibly truncated or unfiltered) stream piecewise, keeping whatever comes out before an error."""
    decompressor = zlib.decompressobj()
    out: list[bytes] = []
    size = 0
    for offset in range(0, len(chunk), 4096):
        try:
            piece = decompressor.decompress(chunk[offset : offset + 4096], limit - size)
        except zlib.error:
            break
        out.append(piece)
        size += len(piece)
        if size >= limit or decompressor.eof:
            break
    if not out or not any(out):  # not Flate-compressed: an unfiltered content stream is usable as is
        return chunk[:limit]
    return b"".join(out)


def _salvage(path: Path, limits: Limits, warnings: list[str]) -> Extraction:
    """Scan FlateDecode content streams of a structurally broken PDF for text operators."""
    data = path.read_bytes()
    if not data.strip():
        raise EmptyDocument(f"{path.name}: file has no content")
    if b"%PDF-" not in data[:1024]:
        raise CorruptDocument(f"{path.name}: not a PDF (no %PDF header)")
    if re.search(rb"/Encrypt\s", data[-4096:]) or re.search(rb"/Encrypt\s", data[:4096]):
        raise EncryptedDocument(f"{path.name}: encrypted PDF whose structure is also damaged")
    budget = limits.max_decompressed_bytes
    texts: list[str] = []
    total = 0
    for match in _STREAM.finditer(data):
        start = match.end()
        end = data.find(b"endstream", start)
        chunk = data[start : end if end >= 0 else len(data)]
        raw = _inflate(chunk, max(budget - total, 0) + 1)
        total += len(raw)
        if total > budget:
            raise ResourceLimitExceeded(f"{path.name}: content streams inflate past {budget} bytes")
        if b"BT" in raw and (b"Tj" in raw or b"TJ" in raw):
            text = _content_text(raw)
            if text:
                texts.append(text)
    if not texts:
        raise CorruptDocument(f"{path.name}: PDF is damaged and no text could be recovered ({'; '.join(warnings)})")
    full = "\n\n".join(texts)[: limits.max_text_chars]
    warnings = [
        *warnings,
        "PDF is damaged: text recovered from raw content streams; it may be incomplete, out of order "
        "or wrongly decoded",
    ]
    return Extraction(
        text=full,
        metadata={"page_count": None, "encrypted": False, "partial": True},
        warnings=tuple(warnings),
    )
