"""PDF text with PDFium (pypdfium2), structure and metadata with pypdf.

Page text comes from PDFium's text layer (``PdfTextPage.get_text_range``),
page by page: its C++ parser is far faster than pypdf's pure-Python
``extract_text`` (GeoTopo-komprimiert.pdf, 117 pages: the whole extraction
takes about 0.5 s instead of 7.4 s) and it joins words hyphenated across lines.
pypdf still does everything else: opening and the decryption check
(EncryptedDocument), document info, the page count and page loop, the per-page
accounting, and the image check that lists OCR candidates.

PDFium is optional. A page's text comes from pypdf, as before PDFium, when
pypdfium2 is not installed, PDFium cannot open the file or fails on the page,
the page has (almost) no text (pypdf's is kept unless PDFium found more), or
it is in a right-to-left script (PDFium returns Arabic/Hebrew in visual,
reversed order). A page pypdf cannot parse but PDFium can is no longer a
failed page: PDFium's text is kept (for a damaged page it may be partial).
PDFium's output is normalised: CRLF line ends become LF, the markers it puts
where a word was hyphenated at a line end (U+FFFE, U+0002, soft hyphen) are
removed so the word is whole again, then ``_clean`` drops control characters
and splits ligatures.

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
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits, TextBuilder
from background_tasks.extraction.extractors.metadata import iso_utc, split_authors, split_keywords

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
        with _PdfiumText(path, len(pages)) as pdfium_text:
            for number, page in enumerate(pages, start=1):
                try:
                    text = _page_text(pdfium_text.page(number), page)
                except MidasError:
                    raise
                except Exception as exc:  # pypdf raises many types on broken pages
                    failed.append(number)
                    warnings.append(f"page {number}: text could not be extracted ({_short(exc)})")
                    continue
                if _alnum(text) < _MIN_CHARS_PER_PAGE and _has_images(page):
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
        letters = _alnum(full)
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


def _page_text(pdfium: str | None, page: Any) -> str:
    """One page's text: PDFium's, or pypdf's where PDFium has none, (almost) nothing, or right-to-left script.

    PDFium gives Arabic/Hebrew in visual (reversed) order where pypdf keeps the logical order, so such
    pages keep pypdf's text. When pypdf fails on such a page, PDFium's text stays if it has at least
    ``_MIN_CHARS_PER_PAGE`` letters/digits; otherwise pypdf's exception propagates and the page counts as
    failed, as it did before PDFium.
    """
    if pdfium is not None and _alnum(pdfium) >= _MIN_CHARS_PER_PAGE and not _RTL.search(pdfium):
        return pdfium
    try:
        text = _clean(page.extract_text() or "")
    except MidasError:
        raise
    except Exception:
        if pdfium is None or _alnum(pdfium) < _MIN_CHARS_PER_PAGE:
            raise
        return pdfium
    if pdfium is not None and _alnum(pdfium) > _alnum(text) and (not _RTL.search(pdfium) or not _alnum(text)):
        return pdfium  # a near-empty page where PDFium found more
    return text


class _PdfiumText:
    """Page texts from PDFium for one document, read page by page; ``None`` where pypdf must do it.

    Opened with the empty password (pypdf has already refused files that need a real one).
    Every PDFium object is closed as soon as its text is out: the document on exit, each page and
    text page right after use, so a long PDF never holds more than one page.
    """

    def __init__(self, path: Path, pypdf_pages: int) -> None:
        self._path = path
        self._document: Any = None
        self._count = 0
        try:
            import pypdfium2 as pdfium
        except ImportError:  # optional: pypdf extracts the text alone
            return
        try:
            self._document = pdfium.PdfDocument(str(path), password="")
            self._count = len(self._document)
        except Exception as exc:  # PdfiumError for damaged or unsupported files
            logger.info("%s: PDFium cannot open (%s); page text from pypdf", path.name, _short(exc))
            self.close()
            return
        if self._count != pypdf_pages:
            logger.info(
                "%s: PDFium counts %d pages, pypdf %d; PDFium text only for pages it has",
                path.name,
                self._count,
                pypdf_pages,
            )

    def __enter__(self) -> _PdfiumText:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._document is not None:
            document, self._document = self._document, None
            document.close()

    def page(self, number: int) -> str | None:
        """The normalised text of page ``number`` (1-based), or None when PDFium cannot give it."""
        if self._document is None or not 1 <= number <= self._count:
            return None
        try:
            page = self._document[number - 1]
            try:
                textpage = page.get_textpage()
                try:
                    raw = textpage.get_text_range()
                finally:
                    textpage.close()
            finally:
                page.close()
        except Exception as exc:
            logger.info("%s: PDFium failed on page %d (%s); using pypdf", self._path.name, number, _short(exc))
            return None
        return _normalise_pdfium(raw)


#: PDFium marks a word hyphenated at a line end with U+FFFE and keeps it on one line (U+0002 is treated
#: the same); a soft hyphen (U+00AD) is the document's own marker for a possible break
_HYPHEN_BREAK = re.compile(r"(?<=\w)[\ufffe\x02\u00ad][ \t]*\n?[ \t]*(?=\w)")
_PDFIUM_MARKERS = re.compile(r"[\ufffe\uffff\x02\u00ad]")
#: Hebrew, Arabic and the other right-to-left scripts, with their presentation forms
_RTL = re.compile(r"[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")


def _normalise_pdfium(text: str) -> str:
    """PDFium text in the form pypdf's had: LF line ends, hyphenated words joined, no marker characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _PDFIUM_MARKERS.sub("", _HYPHEN_BREAK.sub("", text))
    return _clean(text)


def _alnum(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


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
    # The PDF's Creator is the program the document was made in, its Producer the library that wrote the PDF.
    for key, attr in (("title", "title"), ("subject", "subject"), ("producer", "producer"), ("application", "creator")):
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
        metadata["authors"] = split_authors(author)
    try:
        keywords = split_keywords(_text(info.get("/Keywords")))
    except Exception:
        keywords = []
    if keywords:
        metadata["keywords"] = keywords
    for key, attr, raw in (
        ("created", "creation_date", "creation_date_raw"),
        ("modified", "modification_date", "modification_date_raw"),
    ):
        try:
            value = iso_utc(getattr(info, attr))
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
