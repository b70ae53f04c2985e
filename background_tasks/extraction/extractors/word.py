"""Word documents: .docx (python-docx) and legacy .doc (antiword/catdoc).

DOCX: python-docx opens the package (after ``zipsafe.check_zip``) and the
WordprocessingML is walked directly, so that text in content controls, tracked
insertions, hyperlinks, text boxes and equations is kept while deleted and
moved-away text is not. Strict OOXML packages (ISO 29500 namespaces, which
python-docx does not know) are rewritten to transitional namespaces in memory.

DOC: ``antiword`` gives the best layout; ``catdoc`` is the fallback for files
antiword rejects (Word 6/95, tiny text streams). Neither tool can hide deleted
tracked changes, so Word 97+ files that contain revision marks are read by the
small built-in piece-table reader below, which drops deleted runs and field
codes. Metadata comes from the OLE summary information via olefile.
"""

from __future__ import annotations

import bisect
import io
import logging
import re
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from background_tasks.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    ExtractionTimeout,
    MidasError,
    MissingDependency,
    ResourceLimitExceeded,
)
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits
from background_tasks.extraction.zipsafe import check_zip, open_zip, read_member

logger = logging.getLogger(__name__)

#: seconds an external converter (antiword/catdoc) may run
TOOL_TIMEOUT = 30
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
M_NS = "http://schemas.openxmlformats.org/officeDocument/2006/math"
MC_NS = "http://schemas.openxmlformats.org/markup-compatibility/2006"
V_NS = "urn:schemas-microsoft-com:vml"


def _w(tag: str) -> str:
    return f"{{{W_NS}}}{tag}"


W_P, W_TBL, W_TR, W_TC, W_T, W_TAB, W_PTAB, W_BR, W_CR = (
    _w(t) for t in ("p", "tbl", "tr", "tc", "t", "tab", "ptab", "br", "cr")
)
W_SDT_CONTENT = _w("sdtContent")
W_TXBX = _w("txbxContent")
W_NOBREAK = _w("noBreakHyphen")
W_SYM = _w("sym")
M_T = f"{{{M_NS}}}t"
#: subtrees whose text is not part of the visible document
_SKIP = frozenset(
    {
        _w("del"),
        _w("moveFrom"),
        _w("delText"),
        _w("instrText"),
        _w("delInstrText"),
        _w("pPr"),
        _w("rPr"),
        _w("tblPr"),
        _w("tblGrid"),
        _w("trPr"),
        _w("tcPr"),
        _w("sectPr"),
        _w("sdtPr"),
        _w("sdtEndPr"),
        _w("fldData"),
        _w("commentReference"),
        f"{{{MC_NS}}}Fallback",
        f"{{{V_NS}}}imagedata",
    }
)

# Strict OOXML (ISO/IEC 29500 strict) namespaces -> the transitional ones python-docx knows
_STRICT_NAMESPACES = (
    (b"http://purl.oclc.org/ooxml/wordprocessingml/main", W_NS.encode()),
    (
        b"http://purl.oclc.org/ooxml/officeDocument/relationships/extendedProperties",
        b"http://schemas.openxmlformats.org/officeDocument/2006/relationships/extended-properties",
    ),
    (
        b"http://purl.oclc.org/ooxml/officeDocument/relationships",
        b"http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    ),
    (b"http://purl.oclc.org/ooxml/officeDocument/math", M_NS.encode()),
    (
        b"http://purl.oclc.org/ooxml/officeDocument/extendedProperties",
        b"http://schemas.openxmlformats.org/officeDocument/2006/extended-properties",
    ),
    (
        b"http://purl.oclc.org/ooxml/officeDocument/customProperties",
        b"http://schemas.openxmlformats.org/officeDocument/2006/custom-properties",
    ),
    (
        b"http://purl.oclc.org/ooxml/officeDocument/sharedTypes",
        b"http://schemas.openxmlformats.org/officeDocument/2006/sharedTypes",
    ),
    (
        b"http://purl.oclc.org/ooxml/drawingml/wordprocessingDrawing",
        b"http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing",
    ),
    (b"http://purl.oclc.org/ooxml/drawingml/main", b"http://schemas.openxmlformats.org/drawingml/2006/main"),
    (b"http://purl.oclc.org/ooxml/drawingml/picture", b"http://schemas.openxmlformats.org/drawingml/2006/picture"),
    (b"http://purl.oclc.org/ooxml/drawingml/chart", b"http://schemas.openxmlformats.org/drawingml/2006/chart"),
)
_DOCX_MAIN_CT = b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
_OTHER_MAIN_CTS = (
    b"application/vnd.ms-word.document.macroEnabled.main+xml",
    b"application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
    b"application/vnd.ms-word.template.macroEnabledTemplate.main+xml",
)


def _xml_parser() -> Any:
    from lxml import etree

    # no DTDs, no entity expansion, no network: XXE-safe
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _clip(text: str, limits: Limits, warnings: list[str]) -> str:
    if len(text) > limits.max_text_chars:
        warnings.append(f"text truncated at {limits.max_text_chars} characters")
        return text[: limits.max_text_chars]
    return text


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
        except ValueError:
            return text
    return None


def _authors(value: str | None) -> list[str]:
    if not value:
        return []
    return [a.strip() for a in value.split(";") if a.strip()]


# ====================================================================== DOCX


class DocxExtractor(Extractor):
    name = "docx"
    extensions = frozenset({".docx"})
    mime_types = frozenset({"application/vnd.openxmlformats-officedocument.wordprocessingml.document"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        _reject_ole_package(path)
        check_zip(path, limits.max_decompressed_bytes)
        warnings: list[str] = []
        document = _open_docx(path, limits, warnings)
        walker = _Walker(limits)
        parts: list[str] = []
        try:
            body = walker.blocks(document.element.body)
            parts.append(body)
            extra = _docx_extra_parts(document, walker, warnings)
        except RecursionError as exc:
            raise ResourceLimitExceeded(f"{path.name}: document nesting is too deep") from exc
        parts.extend(extra)
        text = _tidy("\n\n".join(p for p in parts if p.strip()))
        if not text.strip():
            warnings.append("document contains no text")
        metadata = _docx_metadata(path, limits)
        return Extraction(text=_clip(text, limits, warnings), metadata=metadata, warnings=tuple(warnings))

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """Core properties straight from docProps/core.xml, without loading the document."""
        _reject_ole_package(path)
        check_zip(path, limits.max_decompressed_bytes)
        return _docx_metadata(path, limits)


def _reject_ole_package(path: Path) -> None:
    """A password-protected .docx is an OLE2 file holding an encrypted package."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if not head:
        raise EmptyDocument(f"{path.name}: file is empty (0 bytes)")
    if head == OLE_MAGIC:
        try:
            import olefile

            with olefile.OleFileIO(str(path)) as ole:
                encrypted = ole.exists("EncryptedPackage")
        except Exception:
            encrypted = False
        if encrypted:
            raise EncryptedDocument(f"{path.name}: password-protected Office document; no password is available")
        raise CorruptDocument(f"{path.name}: an OLE2 file, not a .docx package (legacy .doc renamed?)")


def _open_docx(path: Path, limits: Limits, warnings: list[str]) -> Any:
    try:
        import docx
        from docx.opc.exceptions import PackageNotFoundError
    except ImportError as exc:  # pragma: no cover - pinned
        raise MissingDependency("python-docx is not installed (pip install python-docx)") from exc
    with open_zip(path) as zf:
        names = set(zf.namelist())
        rels = read_member(zf, "_rels/.rels", 1024 * 1024) if "_rels/.rels" in names else b""
        types = read_member(zf, "[Content_Types].xml", 1024 * 1024) if "[Content_Types].xml" in names else b""
    if not rels or not types:
        raise CorruptDocument(f"{path.name}: not a Word package (no _rels/.rels or [Content_Types].xml)")
    source: Any = path
    if b"purl.oclc.org/ooxml" in rels or any(ct in types for ct in _OTHER_MAIN_CTS):
        strict = b"purl.oclc.org/ooxml" in rels
        source = _normalized_package(path, limits)
        warnings.append(
            "Strict OOXML converted to transitional namespaces for reading"
            if strict
            else "macro-enabled/template package read as a plain document"
        )
    try:
        return docx.Document(source)
    except MidasError:
        raise
    except PackageNotFoundError as exc:
        raise CorruptDocument(f"{path.name}: not a readable Word package ({exc})") from exc
    except (zipfile.BadZipFile, KeyError, ValueError, AttributeError, TypeError, OSError, EOFError) as exc:
        raise CorruptDocument(f"{path.name}: damaged Word package ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # lxml.etree.XMLSyntaxError and friends
        if "amplification" in str(exc):
            raise ResourceLimitExceeded(f"{path.name}: entity expansion beyond limits ({exc})") from exc
        raise CorruptDocument(f"{path.name}: damaged Word package ({type(exc).__name__}: {exc})") from exc


def _normalized_package(path: Path, limits: Limits) -> io.BytesIO:
    """An in-memory copy with Strict namespaces and macro/template main types mapped to what python-docx reads."""
    out = io.BytesIO()
    budget = limits.max_decompressed_bytes
    with open_zip(path) as zf, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in zf.infolist():
            if info.is_dir():
                continue
            data = read_member(zf, info, budget)
            budget -= len(data)
            if info.filename.endswith((".xml", ".rels")):
                for old, new in _STRICT_NAMESPACES:
                    data = data.replace(old, new)
                if info.filename == "[Content_Types].xml":
                    for ct in _OTHER_MAIN_CTS:
                        data = data.replace(ct, _DOCX_MAIN_CT)
            target.writestr(info.filename, data)
    out.seek(0)
    return out


class _Walker:
    """Turns WordprocessingML elements into text, depth-limited."""

    def __init__(self, limits: Limits) -> None:
        self.max_depth = limits.max_nesting
        self.depth = 0

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise ResourceLimitExceeded(f"document elements nested deeper than {self.max_depth} levels")

    def blocks(self, container: Any) -> str:
        """Paragraphs and tables of a body, cell, header, note or text box, in order."""
        self._enter()
        try:
            out: list[str] = []
            for child in container:
                tag = child.tag
                if tag == W_P:
                    out.append(self.paragraph(child))
                elif tag == W_TBL:
                    out.append(self.table(child))
                elif tag in _SKIP or not isinstance(tag, str):
                    continue
                else:  # sdt, sdtContent, customXml, ins, moveTo, smartTag wrappers at block level
                    inner = self.blocks(child)
                    if inner:
                        out.append(inner)
            return "\n".join(out)
        finally:
            self.depth -= 1

    def paragraph(self, p: Any) -> str:
        pieces: list[str] = []
        self._inline(p, pieces)
        return "".join(pieces)

    def _inline(self, element: Any, out: list[str]) -> None:
        self._enter()
        try:
            for child in element:
                tag = child.tag
                if not isinstance(tag, str) or tag in _SKIP:
                    continue
                if tag in (W_T, M_T):
                    out.append(child.text or "")
                elif tag in (W_TAB, W_PTAB):
                    out.append("\t")
                elif tag in (W_BR, W_CR):
                    out.append("\n")
                elif tag == W_NOBREAK:
                    out.append("-")
                elif tag == W_TXBX:
                    inner = self.blocks(child)
                    if inner:
                        out.append("\n" + inner + "\n")
                elif tag == W_P:  # paragraphs nested in inline containers (shapes)
                    out.append("\n" + self.paragraph(child) + "\n")
                elif tag == W_TBL:
                    out.append("\n" + self.table(child) + "\n")
                else:
                    self._inline(child, out)
        finally:
            self.depth -= 1

    def table(self, tbl: Any) -> str:
        self._enter()
        try:
            rows: list[str] = []
            for row in self._rows(tbl):
                cells = [
                    "" if _continues_merge(cell) else self.blocks(cell).replace("\n", " ").strip()
                    for cell in self._cells(row)
                ]
                if any(cells):
                    rows.append(" | ".join(cells))
            return "\n".join(rows)
        finally:
            self.depth -= 1

    def _rows(self, element: Any) -> Iterator[Any]:
        for child in element:
            if child.tag == W_TR:
                yield child
            elif isinstance(child.tag, str) and child.tag not in _SKIP and child.tag != W_TC:
                yield from self._rows(child)  # rows wrapped in sdt/customXml

    def _cells(self, row: Any) -> Iterator[Any]:
        for child in row:
            if child.tag == W_TC:
                yield child
            elif isinstance(child.tag, str) and child.tag not in _SKIP:
                yield from self._cells(child)


def _continues_merge(cell: Any) -> bool:
    """A vertically merged continuation cell: Word shows the cell above instead of its content."""
    props = cell.find(_w("tcPr"))
    if props is None:
        return False
    merge = props.find(_w("vMerge"))
    return merge is not None and merge.get(_w("val"), "continue") == "continue"


def _docx_extra_parts(document: Any, walker: _Walker, warnings: list[str]) -> list[str]:
    """Headers/footers of all sections, then footnotes, endnotes and comments."""
    from lxml import etree

    parser = _xml_parser()
    wanted = ("header", "footer", "footnotes", "endnotes", "comments")
    found: dict[str, list[tuple[str, Any]]] = {kind: [] for kind in wanted}
    seen: set[str] = set()
    for rel in document.part.rels.values():
        if rel.is_external:
            continue
        kind = rel.reltype.rsplit("/", 1)[-1]
        if kind not in found:
            continue
        try:
            part = rel.target_part
            name = str(part.partname)
            if name in seen:
                continue
            seen.add(name)
            root = etree.fromstring(part.blob, parser)
        except Exception as exc:
            warnings.append(f"{kind} part unreadable ({type(exc).__name__}: {exc})")
            continue
        found[kind].append((name, root))
    out: list[str] = []
    header_texts: list[str] = []
    for kind in ("header", "footer"):
        for _name, root in sorted(found[kind], key=lambda item: _natural(item[0])):
            text = walker.blocks(root).strip()
            if text and text not in header_texts:
                header_texts.append(text)
    if header_texts:
        out.append("\n".join(header_texts))
    for kind in ("footnotes", "endnotes", "comments"):
        notes: list[str] = []
        for _name, root in found[kind]:
            for note in root:
                if note.get(_w("type")) in ("separator", "continuationSeparator", "continuationNotice"):
                    continue
                text = walker.blocks(note).strip()
                if text:
                    notes.append(text)
        if notes:
            out.append("\n".join(notes))
    return out


def _natural(name: str) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def _tidy(text: str) -> str:
    text = text.replace("\r", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


_CORE_FIELDS = {
    "{http://purl.org/dc/elements/1.1/}title": "title",
    "{http://purl.org/dc/elements/1.1/}creator": "authors",
    "{http://purl.org/dc/elements/1.1/}subject": "subject",
    "{http://purl.org/dc/elements/1.1/}description": "description",
    "{http://purl.org/dc/elements/1.1/}language": "language",
    "{http://purl.org/dc/terms/}created": "created",
    "{http://purl.org/dc/terms/}modified": "modified",
    "{http://schemas.openxmlformats.org/package/2006/metadata/core-properties}revision": "revision",
    "{http://schemas.openxmlformats.org/package/2006/metadata/core-properties}lastModifiedBy": "last_modified_by",
    "{http://schemas.openxmlformats.org/package/2006/metadata/core-properties}keywords": "keywords",
}


def _docx_metadata(path: Path, limits: Limits) -> dict[str, Any]:
    """OPC core properties (same namespaces in Strict and transitional packages) plus the stored page count."""
    from lxml import etree

    metadata: dict[str, Any] = {}
    parser = _xml_parser()
    with open_zip(path) as zf:
        names = set(zf.namelist())
        core_name, app_name = "docProps/core.xml", "docProps/app.xml"
        if "_rels/.rels" in names:
            try:
                rels = etree.fromstring(read_member(zf, "_rels/.rels", 1024 * 1024), parser)
                for rel in rels:
                    rtype, target = rel.get("Type", ""), rel.get("Target", "").lstrip("/")
                    if rtype.endswith("/core-properties"):
                        core_name = target
                    elif rtype.endswith(("/extended-properties", "/extendedProperties")):
                        app_name = target
            except Exception as exc:
                logger.info("%s: package relationships unreadable (%s)", path.name, exc)
        if core_name in names:
            try:
                root = etree.fromstring(read_member(zf, core_name, 4 * 1024 * 1024), parser)
                for child in root:
                    key = _CORE_FIELDS.get(child.tag)
                    value = (child.text or "").strip()
                    if not key or not value:
                        continue
                    if key == "authors":
                        metadata[key] = _authors(value)
                    elif key in ("created", "modified"):
                        metadata[key] = _iso(value)
                    else:
                        metadata[key] = value
            except MidasError:
                raise
            except Exception as exc:
                logger.info("%s: core properties unreadable (%s)", path.name, exc)
        if app_name in names:
            try:
                root = etree.fromstring(read_member(zf, app_name, 4 * 1024 * 1024), parser)
                for child in root:
                    if isinstance(child.tag, str) and child.tag.endswith("}Pages") and (child.text or "").isdigit():
                        metadata["page_count"] = int(child.text)
            except MidasError:
                raise
            except Exception as exc:
                logger.info("%s: extended properties unreadable (%s)", path.name, exc)
    return metadata


# ====================================================================== DOC


class DocExtractor(Extractor):
    """Legacy Word (.doc, Word 6 to 2003).

    Needs the Debian package ``antiword`` (preferred) or ``catdoc``; Word 97+
    files can also be read by the built-in reader when neither is installed.
    Deleted tracked changes are never part of the text.
    """

    name = "doc"
    extensions = frozenset({".doc"})
    mime_types = frozenset({"application/msword"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        info = _inspect_doc(path)
        warnings: list[str] = []
        text: str | None = None
        if info.reader_error:
            logger.info("%s: built-in reader unavailable (%s)", path.name, info.reader_error)
        if info.reader is not None and info.reader.has_revisions:
            text = info.reader.text()
            warnings.append("tracked changes present: deleted text omitted, insertions kept")
        if text is None:
            text, tool_warnings = _run_tools(path, limits, info)
            warnings.extend(tool_warnings)
        text = _tidy(text)
        if not text.strip():
            warnings.append("document contains no text")
        return Extraction(text=_clip(text, limits, warnings), metadata=info.metadata, warnings=tuple(warnings))

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """OLE summary information only; the text is not converted."""
        return _inspect_doc(path, with_reader=False).metadata


@dataclass
class _DocInfo:
    metadata: dict[str, Any]
    reader: _Word97Reader | None
    reader_error: str
    word97: bool


def _inspect_doc(path: Path, with_reader: bool = True) -> _DocInfo:
    try:
        import olefile
    except ImportError as exc:  # pragma: no cover - comes with extract-msg
        raise MissingDependency("olefile is not installed (pip install olefile)") from exc
    if path.stat().st_size == 0:
        raise EmptyDocument(f"{path.name}: file is empty (0 bytes)")
    if not olefile.isOleFile(str(path)):
        raise CorruptDocument(f"{path.name}: not a Word 97-2003 document (no OLE2 signature)")
    try:
        ole = olefile.OleFileIO(str(path))
    except Exception as exc:
        raise CorruptDocument(f"{path.name}: damaged OLE2 container ({type(exc).__name__}: {exc})") from exc
    with ole:
        if not ole.exists("WordDocument"):
            raise CorruptDocument(f"{path.name}: OLE2 file without a WordDocument stream (not a Word document)")
        try:
            fib_head = ole.openstream("WordDocument").read(32)
        except Exception as exc:
            raise CorruptDocument(f"{path.name}: WordDocument stream unreadable ({exc})") from exc
        if len(fib_head) < 32:
            raise CorruptDocument(f"{path.name}: WordDocument stream is truncated")
        ident, nfib = struct.unpack_from("<HH", fib_head, 0)
        flags = struct.unpack_from("<H", fib_head, 0x0A)[0]
        if flags & 0x0100 or flags & 0x8000:  # fEncrypted / fObfuscated
            raise EncryptedDocument(f"{path.name}: Word document is password-protected")
        metadata = _ole_metadata(ole, path)
        word97 = ident == 0xA5EC and nfib >= 0x00C1
        reader: _Word97Reader | None = None
        error = ""
        if with_reader and word97:
            try:
                reader = _Word97Reader(ole)
            except MidasError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
    return _DocInfo(metadata=metadata, reader=reader, reader_error=error, word97=word97)


def _codec(codepage: int | None) -> str:
    if codepage is None:
        return "cp1252"
    codepage &= 0xFFFF
    known = {65001: "utf-8", 1200: "utf-16-le", 1201: "utf-16-be", 10000: "mac_roman", 20127: "ascii"}
    name = known.get(codepage, f"cp{codepage}")
    try:
        "".encode(name)
    except LookupError:
        return "cp1252"
    return name


#: SummaryInformation property ids -> metadata keys (MS-OLEPS PIDSI_*)
_PIDSI = {
    2: "title",
    3: "subject",
    4: "authors",
    5: "keywords",
    8: "last_modified_by",
    9: "revision",
    12: "created",
    13: "modified",
    14: "page_count",
    18: "application",
}
_VT_I2, _VT_I4, _VT_LPSTR, _VT_LPWSTR, _VT_FILETIME = 2, 3, 30, 31, 64
_MAX_SUMMARY_BYTES = 1024 * 1024


def _ole_metadata(ole: Any, path: Path) -> dict[str, Any]:
    """Title, authors, subject, dates and page count from the OLE SummaryInformation stream.

    Parsed here with bounds checks on every offset and length: olefile's own
    property parser trusts vector counts and can loop for minutes on a damaged file.
    """
    try:
        if not ole.exists("\x05SummaryInformation"):
            return {}
        stream = ole.openstream("\x05SummaryInformation").read(_MAX_SUMMARY_BYTES)
        raw = _property_set(stream)
    except Exception as exc:
        logger.info("%s: summary information unreadable (%s)", path.name, exc)
        return {}
    codec = _codec(raw.pop(1, None) if isinstance(raw.get(1), int) else None)
    metadata: dict[str, Any] = {}
    for pid, key in _PIDSI.items():
        value = raw.get(pid)
        if isinstance(value, bytes):
            value = value.decode(codec, errors="replace")
        if isinstance(value, str):
            value = value.replace("\x00", "").strip()
            if not value:
                continue
            if key == "authors":
                metadata[key] = _authors(value)
            elif key not in ("created", "modified", "page_count"):
                metadata[key] = value
        elif isinstance(value, datetime) and key in ("created", "modified"):
            metadata[key] = value.isoformat()
        elif isinstance(value, int) and key == "page_count" and value > 0:
            metadata[key] = value
    return {k: v for k, v in metadata.items() if v}


def _property_set(stream: bytes) -> dict[int, Any]:
    """Property id -> value (bytes, str, int or datetime) of the first section of a property set stream."""
    if len(stream) < 48 or stream[:2] != b"\xfe\xff":
        return {}
    (section,) = struct.unpack_from("<I", stream, 44)
    if section + 8 > len(stream):
        return {}
    size, count = struct.unpack_from("<II", stream, section)
    end = min(len(stream), section + size)
    count = min(count, (end - section - 8) // 8)
    values: dict[int, Any] = {}
    for i in range(count):
        pid, offset = struct.unpack_from("<II", stream, section + 8 + 8 * i)
        at = section + offset
        if at + 4 > end:
            continue
        vtype = struct.unpack_from("<H", stream, at)[0]
        body = at + 4
        try:
            if vtype == _VT_I2:
                values[pid] = struct.unpack_from("<h", stream, body)[0]
            elif vtype == _VT_I4:
                values[pid] = struct.unpack_from("<i", stream, body)[0]
            elif vtype == _VT_LPSTR:
                (length,) = struct.unpack_from("<I", stream, body)
                values[pid] = stream[body + 4 : min(body + 4 + length, end)].split(b"\x00", 1)[0]
            elif vtype == _VT_LPWSTR:
                (length,) = struct.unpack_from("<I", stream, body)
                data = stream[body + 4 : min(body + 4 + 2 * length, end)]
                values[pid] = data.decode("utf-16-le", errors="replace").split("\x00", 1)[0]
            elif vtype == _VT_FILETIME:
                (ticks,) = struct.unpack_from("<Q", stream, body)
                if ticks:
                    values[pid] = datetime(1601, 1, 1) + timedelta(microseconds=ticks // 10)
        except (struct.error, OverflowError, ValueError):
            continue
    return values


def _run_tools(path: Path, limits: Limits, info: _DocInfo) -> tuple[str, list[str]]:
    """antiword, then the built-in reader (Word 97+), then catdoc; MissingDependency when nothing can read the file.

    catdoc comes last because it loops forever on some damaged files (it is stopped after ``TOOL_TIMEOUT``).
    """
    failures: list[str] = []
    timed_out: list[str] = []
    installed: list[str] = []

    def tool(name: str, args: list[str]) -> str | None:
        exe = shutil.which(name)
        if exe is None:
            return None
        installed.append(name)
        status, output = _run(exe, [*args, str(path)], limits)
        if status == "ok" and output.strip():
            return output
        if re.search(r"encrypt", output, re.I):
            raise EncryptedDocument(f"{path.name}: Word document is password-protected ({name})")
        if status == "timeout":
            timed_out.append(name)
        failures.append(f"{name} failed ({output.strip()[:120] or 'no output'})")
        return None

    def done(text: str, used: str) -> tuple[str, list[str]]:
        return text, ([f"{'; '.join(failures)}; used {used}"] if failures else [])

    # -w 0: no wrapping; no -r, so text marked as removed stays hidden
    text = tool("antiword", ["-m", "UTF-8.txt", "-w", "0"])
    if text is not None:
        return done(text, "antiword")
    if info.reader is not None:
        text = info.reader.text()
        if text.strip():
            if not installed:
                return text, ["antiword not installed; used the built-in Word 97 reader"]
            return done(text, "the built-in Word 97 reader")
    text = tool("catdoc", ["-d", "utf-8", "-w"])
    if text is not None:
        return done(text, "catdoc")
    if not installed and info.reader is None:
        raise MissingDependency(
            f"{path.name}: reading .doc needs 'antiword' or 'catdoc' (Debian packages: antiword, catdoc)"
        )
    if timed_out and info.reader is None:
        raise ExtractionTimeout(f"{path.name}: {' and '.join(timed_out)} did not finish within {TOOL_TIMEOUT} s")
    if info.reader is not None or all("no output" in f for f in failures):
        return "", failures  # readable, but there is no text in it
    raise CorruptDocument(f"{path.name}: Word document could not be converted ({'; '.join(failures)})")


def _run(exe: str, args: list[str], limits: Limits) -> tuple[str, str]:
    """("ok" | "error" | "timeout", output or error text) of one converter run; no shell, bounded time."""
    try:
        proc = subprocess.run(
            [exe, *args],
            capture_output=True,
            timeout=TOOL_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return "timeout", f"timed out after {TOOL_TIMEOUT} s"
    except OSError as exc:
        return "error", f"cannot run {exe}: {exc}"
    out = proc.stdout[: limits.max_text_chars * 4].decode("utf-8", errors="replace")
    err = proc.stderr[:2000].decode("utf-8", errors="replace")
    if proc.returncode != 0:
        return "error", (err or out).strip()
    return "ok", out


# ---------------------------------------------------------------------- built-in Word 97 reader


class _DocFormatError(ValueError):
    """The FIB/piece table does not make sense; the caller falls back to the external tools."""


def _sprm_operand_size(sprm: int, data: bytes, pos: int) -> int:
    spra = (sprm >> 13) & 7
    if spra in (0, 1):
        return 1
    if spra in (2, 4, 5):
        return 2
    if spra == 3:
        return 4
    if spra == 7:
        return 3
    if pos >= len(data):
        return 1
    if sprm == 0xD608:  # sprmTDefTable: two-byte length
        return struct.unpack_from("<H", data, pos)[0] + 1 if pos + 2 <= len(data) else len(data)
    return data[pos] + 1


def _sprms(grpprl: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 2 < len(grpprl):
        sprm = struct.unpack_from("<H", grpprl, pos)[0]
        pos += 2
        size = _sprm_operand_size(sprm, grpprl, pos)
        yield sprm, grpprl[pos : pos + size]
        pos += size


_SPRM_DELETED = 0x0800  # sprmCFRMarkDel
_SPRM_HIDDEN = 0x083C  # sprmCFVanish
_CHAR_MAP = {
    "\r": "\n",
    "\x0b": "\n",
    "\x0c": "\n",
    "\x0e": "\n",
    "\x07": "\t",
    "\x1e": "-",
    "\xa0": " ",
}
_DROP = re.compile(r"[\x00-\x06\x08\x0f-\x12\x16-\x1d\x1f]")


class _Word97Reader:
    """Main text of a Word 97-2003 file from the piece table, minus deleted/hidden runs and field codes."""

    def __init__(self, ole: Any) -> None:
        wd = ole.openstream("WordDocument").read()
        flags = struct.unpack_from("<H", wd, 0x0A)[0]
        table_name = "1Table" if flags & 0x0200 else "0Table"
        if not ole.exists(table_name):
            raise _DocFormatError(f"{table_name} stream missing")
        tbl = ole.openstream(table_name).read()
        if len(wd) < 0x1AA:
            raise _DocFormatError("FIB too short")
        self._wd = wd
        self._ccp = struct.unpack_from("<8I", wd, 0x4C)
        fc_clx, lcb_clx = struct.unpack_from("<II", wd, 0x1A2)
        fc_chpx, lcb_chpx = struct.unpack_from("<II", wd, 0xFA)
        if fc_clx + lcb_clx > len(tbl) or fc_chpx + lcb_chpx > len(tbl):
            raise _DocFormatError("FIB points outside the table stream")
        self._pieces = self._read_pieces(tbl[fc_clx : fc_clx + lcb_clx], len(wd))
        self._runs, self.has_revisions = self._read_runs(tbl, fc_chpx, lcb_chpx, wd)
        self._run_starts = [r[0] for r in self._runs]

    @staticmethod
    def _read_pieces(clx: bytes, stream_len: int) -> list[tuple[int, int, int, bool]]:
        pos = 0
        while pos < len(clx) and clx[pos] == 0x01:  # Prc blocks before the piece table
            cb = struct.unpack_from("<h", clx, pos + 1)[0]
            pos += 3 + max(cb, 0)
        if pos >= len(clx) or clx[pos] != 0x02:
            raise _DocFormatError("no piece table")
        lcb = struct.unpack_from("<I", clx, pos + 1)[0]
        plc = clx[pos + 5 : pos + 5 + lcb]
        if lcb < 16 or (lcb - 4) % 12 or len(plc) < lcb:
            raise _DocFormatError("malformed piece table")
        count = (lcb - 4) // 12
        cps = struct.unpack_from(f"<{count + 1}I", plc, 0)
        pieces = []
        for i in range(count):
            fc = struct.unpack_from("<I", plc, 4 * (count + 1) + 8 * i + 2)[0]
            compressed = bool(fc & 0x40000000)
            fc &= 0x3FFFFFFF
            if compressed:
                fc //= 2
            start, end = cps[i], cps[i + 1]
            if end < start or fc + (end - start) * (1 if compressed else 2) > stream_len:
                raise _DocFormatError("piece outside the document stream")
            pieces.append((start, end, fc, compressed))
        return pieces

    @staticmethod
    def _read_runs(tbl: bytes, fc: int, lcb: int, wd: bytes) -> tuple[list[tuple[int, int, bool]], bool]:
        """(fcStart, fcEnd, skip) for every character run; skip = deleted or hidden."""
        if lcb < 12:
            return [], False
        count = (lcb - 4) // 8
        pns = struct.unpack_from(f"<{count}I", tbl, fc + 4 * (count + 1))
        runs: list[tuple[int, int, bool]] = []
        revisions = False
        for pn in pns:
            offset = (pn & 0x3FFFFF) * 512
            page = wd[offset : offset + 512]
            if len(page) < 512:
                raise _DocFormatError("character property page outside the stream")
            crun = page[511]
            if 4 * (crun + 1) + crun > 511:
                raise _DocFormatError("malformed character property page")
            fcs = struct.unpack_from(f"<{crun + 1}I", page, 0)
            for k in range(crun):
                where = page[4 * (crun + 1) + k] * 2
                skip = False
                if where:
                    size = page[where]
                    for sprm, operand in _sprms(page[where + 1 : where + 1 + size]):
                        if sprm == _SPRM_DELETED and operand[:1] in (b"\x01", b"\x81"):
                            skip = revisions = True
                        elif sprm == _SPRM_HIDDEN and operand[:1] in (b"\x01", b"\x81"):
                            skip = True
                runs.append((fcs[k], fcs[k + 1], skip))
        runs.sort()
        return runs, revisions

    def _raw(self, cp_start: int, cp_end: int) -> str:
        out: list[str] = []
        for start, end, fc, compressed in self._pieces:
            lo, hi = max(start, cp_start), min(end, cp_end)
            if lo >= hi:
                continue
            width = 1 if compressed else 2
            fc_lo = fc + (lo - start) * width
            fc_hi = fc + (hi - start) * width
            pos = fc_lo
            while pos < fc_hi:
                i = bisect.bisect_right(self._run_starts, pos) - 1
                skip = False
                seg_end = fc_hi
                if i >= 0 and self._runs[i][0] <= pos < self._runs[i][1]:
                    skip = self._runs[i][2]
                    seg_end = min(fc_hi, self._runs[i][1])
                elif i + 1 < len(self._runs):
                    seg_end = min(fc_hi, max(self._runs[i + 1][0], pos + width))
                seg_end = pos + ((seg_end - pos + width - 1) // width) * width
                if not skip:
                    chunk = self._wd[pos:seg_end]
                    out.append(
                        chunk.decode("cp1252", "replace") if compressed else chunk.decode("utf-16-le", "replace")
                    )
                pos = seg_end
        return "".join(out)

    def text(self) -> str:
        ccp_text, ccp_ftn, ccp_hdd, ccp_mcr, ccp_atn, ccp_edn, ccp_txbx, ccp_hdr_txbx = self._ccp
        bounds: list[tuple[str, int, int]] = []
        cp = 0
        for name, length in (
            ("main", ccp_text),
            ("footnotes", ccp_ftn),
            ("headers", ccp_hdd),
            ("macro", ccp_mcr),
            ("comments", ccp_atn),
            ("endnotes", ccp_edn),
            ("textboxes", ccp_txbx),
            ("header textboxes", ccp_hdr_txbx),
        ):
            bounds.append((name, cp, cp + length))
            cp += length
        stories = {name: _strip_fields(self._raw(a, b)) for name, a, b in bounds if b > a and name != "macro"}
        order = ("main", "textboxes", "footnotes", "endnotes", "comments", "headers", "header textboxes")
        parts = []
        for name in order:
            story = stories.get(name, "")
            story = _DROP.sub("", story.translate(str.maketrans(_CHAR_MAP)))
            if name == "headers":  # header story repeats separators and identical headers per section
                lines: list[str] = []
                for line in story.splitlines():
                    if line.strip() and line.strip() not in lines:
                        lines.append(line.strip())
                story = "\n".join(lines)
            if story.strip():
                parts.append(story.strip("\n"))
        return "\n\n".join(parts)


def _strip_fields(text: str) -> str:
    """Keep field results (between 0x14 and 0x15), drop field codes (between 0x13 and 0x14)."""
    if "\x13" not in text:
        return text.replace("\x14", "").replace("\x15", "")
    out: list[str] = []
    stack: list[bool] = []  # per open field: True while in its code part
    for piece in re.split(r"([\x13\x14\x15])", text):
        if piece == "\x13":
            stack.append(True)
        elif piece == "\x14":
            if stack:
                stack[-1] = False
        elif piece == "\x15":
            if stack:
                stack.pop()
        elif not any(stack):
            out.append(piece)
    return "".join(out)
