"""Word .docx: python-docx opens the package, the WordprocessingML is walked directly.

The package is checked first (``zipsafe.check_zip``). Walking the XML ourselves
keeps text in content controls, tracked insertions, hyperlinks, text boxes and
equations (as linear text with their structure, ``omml``) while deleted and
moved-away text is not. Strict OOXML packages (ISO
29500 namespaces, which python-docx does not know) are rewritten to
transitional namespaces in memory.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Iterator
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
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits, NestingGuard
from background_tasks.extraction.extractors.metadata import shaped
from background_tasks.extraction.extractors.word.common import OLE_MAGIC, clip, tidy
from background_tasks.extraction.extractors.word.omml import M_OMATH, M_OMATH_PARA, OmmlText
from background_tasks.extraction.zipsafe import check_zip, open_zip, read_member

logger = logging.getLogger(__name__)

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
        text = tidy("\n\n".join(p for p in parts if p.strip()))
        if not text.strip():
            warnings.append("document contains no text")
        metadata = _docx_metadata(path, limits)
        return Extraction(text=clip(text, limits, warnings), metadata=metadata, warnings=tuple(warnings))

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
        self.nesting = NestingGuard(limits.max_nesting, "document elements")
        self.math = OmmlText(self.nesting)

    def blocks(self, container: Any) -> str:
        """Paragraphs and tables of a body, cell, header, note or text box, in order."""
        with self.nesting:
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

    def paragraph(self, p: Any) -> str:
        pieces: list[str] = []
        self._inline(p, pieces)
        return "".join(pieces)

    def _inline(self, element: Any, out: list[str]) -> None:
        with self.nesting:
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
                elif tag == M_OMATH:
                    out.append(self.math.equation(child))
                elif tag == M_OMATH_PARA:
                    out.append(self.math.paragraph(child))
                else:
                    self._inline(child, out)

    def table(self, tbl: Any) -> str:
        with self.nesting:
            rows: list[str] = []
            for row in self._rows(tbl):
                cells = [
                    "" if _continues_merge(cell) else self.blocks(cell).replace("\n", " ").strip()
                    for cell in self._cells(row)
                ]
                if any(cells):
                    rows.append(" | ".join(cells))
            return "\n".join(rows)

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
    """OPC core properties (the same in Strict and transitional packages), the stored page count, the application."""
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
                core = {_CORE_FIELDS[child.tag]: child.text for child in root if child.tag in _CORE_FIELDS}
                metadata.update(shaped(core))
            except MidasError:
                raise
            except Exception as exc:
                logger.info("%s: core properties unreadable (%s)", path.name, exc)
        if app_name in names:
            try:
                root = etree.fromstring(read_member(zf, app_name, 4 * 1024 * 1024), parser)
                for child in root:
                    if not isinstance(child.tag, str):
                        continue
                    if child.tag.endswith("}Pages") and (child.text or "").isdigit():
                        metadata["page_count"] = int(child.text)
                    elif child.tag.endswith("}Application") and (child.text or "").strip():
                        metadata["application"] = child.text.strip()
            except MidasError:
                raise
            except Exception as exc:
                logger.info("%s: extended properties unreadable (%s)", path.name, exc)
    return metadata
