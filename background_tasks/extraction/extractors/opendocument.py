"""OpenDocument text (.odt) straight from the ZIP package with a hardened XML parser.

The package is checked with ``zipsafe`` before anything is inflated, parts are
read with a hard byte cap, and XML is parsed without DTDs, entity expansion or
network access. Paragraphs, headings, lists, tables, text boxes, notes and the
data tables of embedded objects (charts) are kept in document order; text of
tracked deletions is not. Encrypted packages (``manifest:encryption-data``)
are reported as ``EncryptedDocument``: ODF encryption always needs a password.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from background_tasks.errors import CorruptDocument, EmptyDocument, EncryptedDocument, MidasError, ResourceLimitExceeded
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits, NestingGuard
from background_tasks.extraction.extractors.metadata import put_date, split_authors
from background_tasks.extraction.zipsafe import check_zip, open_zip, read_member

logger = logging.getLogger(__name__)

TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
DRAW = "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
XLINK = "http://www.w3.org/1999/xlink"
META = "urn:oasis:names:tc:opendocument:xmlns:meta:1.0"
DC = "http://purl.org/dc/elements/1.1/"
MANIFEST = "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"


def _t(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


T_P, T_H, T_S, T_TAB, T_BR = (_t(TEXT, t) for t in ("p", "h", "s", "tab", "line-break"))
T_LIST, T_NOTE, T_NOTE_BODY = _t(TEXT, "list"), _t(TEXT, "note"), _t(TEXT, "note-body")
TB_TABLE, TB_ROW, TB_CELL, TB_COVERED = (
    _t(TABLE, t) for t in ("table", "table-row", "table-cell", "covered-table-cell")
)
SVG_TITLE = _t("urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0", "title")
D_FRAME, D_OBJECT, D_TEXTBOX = _t(DRAW, "frame"), _t(DRAW, "object"), _t(DRAW, "text-box")
_SKIP = frozenset(
    {
        _t(TEXT, "tracked-changes"),
        _t(TEXT, "note-citation"),
        _t(TEXT, "sequence-decls"),
        _t(TEXT, "variable-decls"),
        _t(TEXT, "user-field-decls"),
        _t(TEXT, "bookmark-ref"),
        _t(OFFICE, "annotation"),
        _t(OFFICE, "forms"),
        _t(OFFICE, "scripts"),
        _t(OFFICE, "font-face-decls"),
        _t(OFFICE, "automatic-styles"),
        _t(TABLE, "table-columns"),
        _t(TABLE, "table-column"),
        _t(DRAW, "image"),
    }
)
_BLOCKS = frozenset({T_P, T_H, T_LIST, TB_TABLE})
#: how often an empty repeated cell/row is emitted (spreadsheet-style padding)
_MAX_REPEAT = 64

_META_FIELDS = {
    _t(DC, "title"): "title",
    _t(DC, "subject"): "subject",
    _t(DC, "description"): "description",
    _t(DC, "language"): "language",
    _t(DC, "creator"): "last_modified_by",
    _t(META, "initial-creator"): "initial_creator",
    _t(META, "creation-date"): "created",
    _t(DC, "date"): "modified",
    _t(META, "editing-cycles"): "revision",
    _t(META, "generator"): "application",
}


def _parser() -> Any:
    from lxml import etree

    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _parse(data: bytes, what: str, path: Path) -> Any:
    from lxml import etree

    try:
        return etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        if "amplification" in str(exc) or ("entity" in str(exc).lower() and "loop" in str(exc).lower()):
            raise ResourceLimitExceeded(f"{path.name}: {what} uses entity expansion beyond limits ({exc})") from exc
        raise CorruptDocument(f"{path.name}: {what} is not well-formed XML ({exc})") from exc


class OdtExtractor(Extractor):
    name = "odt"
    extensions = frozenset({".odt"})
    mime_types = frozenset({"application/vnd.oasis.opendocument.text"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        warnings: list[str] = []
        with self._package(path, limits) as zf:
            names = set(zf.namelist())
            if "content.xml" not in names:
                raise CorruptDocument(f"{path.name}: OpenDocument package without content.xml")
            content = _parse(read_member(zf, "content.xml", limits.max_decompressed_bytes), "content.xml", path)
            walker = _Walker(limits, zf, names, path, warnings)
            body = content.find(_t(OFFICE, "body"))
            if body is None:
                raise CorruptDocument(f"{path.name}: content.xml has no office:body")
            lines = list(walker.blocks(body))
            if walker.notes:
                lines.append("")
                lines.extend(walker.notes)
            metadata = _meta(zf, names, path, limits)
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        if not text:
            warnings.append("document contains no text")
        if len(text) > limits.max_text_chars:
            warnings.append(f"text truncated at {limits.max_text_chars} characters")
            text = text[: limits.max_text_chars]
        return Extraction(text=text, metadata=metadata, warnings=tuple(warnings))

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """meta.xml only."""
        with self._package(path, limits) as zf:
            return _meta(zf, set(zf.namelist()), path, limits)

    @staticmethod
    def _package(path: Path, limits: Limits) -> Any:
        if path.stat().st_size == 0:
            raise EmptyDocument(f"{path.name}: file is empty (0 bytes)")
        check_zip(path, limits.max_decompressed_bytes)
        zf = open_zip(path)
        try:
            _reject_encrypted(zf, path)
        except BaseException:
            zf.close()
            raise
        return zf


def _reject_encrypted(zf: Any, path: Path) -> None:
    if "META-INF/manifest.xml" not in zf.namelist():
        return
    try:
        manifest = _parse(read_member(zf, "META-INF/manifest.xml", 4 * 1024 * 1024), "manifest", path)
    except CorruptDocument as exc:  # a broken manifest alone does not make the content unreadable
        logger.info("%s: manifest unreadable (%s)", path.name, exc)
        return
    if manifest.find(f".//{_t(MANIFEST, 'encryption-data')}") is not None:
        raise EncryptedDocument(f"{path.name}: OpenDocument file is password-protected")


class _Walker:
    def __init__(self, limits: Limits, zf: Any, names: set[str], path: Path, warnings: list[str]) -> None:
        self.nesting = NestingGuard(limits.max_nesting, f"{path.name}: elements")
        self.zf = zf
        self.names = names
        self.path = path
        self.limits = limits
        self.warnings = warnings
        self.notes: list[str] = []
        self.objects_seen: set[str] = set()

    def blocks(self, element: Any) -> Iterator[str]:
        """Lines of paragraphs, list items and table rows inside ``element``, in order."""
        with self.nesting:
            for child in element:
                tag = child.tag
                if not isinstance(tag, str) or tag in _SKIP:
                    continue
                if tag in (T_P, T_H):
                    yield from self.paragraph(child)
                elif tag == TB_TABLE:
                    yield from self.table(child)
                elif tag == D_FRAME:
                    yield from self.frame(child)
                else:  # list, list-item, section, index bodies, office:text, chart containers...
                    yield from self.blocks(child)

    def paragraph(self, p: Any) -> Iterator[str]:
        out: list[str] = []
        extra: list[str] = []
        self._inline(p, out, extra)
        yield "".join(out)
        yield from extra

    def _inline(self, element: Any, out: list[str], extra: list[str]) -> None:
        with self.nesting:
            if element.text:
                out.append(element.text)
            for child in element:
                tag = child.tag
                if not isinstance(tag, str) or tag in _SKIP:
                    pass
                elif tag == T_S:
                    out.append(" " * min(_int(child.get(_t(TEXT, "c")), 1), 1000))
                elif tag == T_TAB:
                    out.append("\t")
                elif tag == T_BR:
                    out.append("\n")
                elif tag == T_NOTE:
                    body = child.find(T_NOTE_BODY)
                    if body is not None:
                        note = " ".join(line for line in self.blocks(body) if line.strip())
                        if note:
                            self.notes.append(note)
                elif tag == D_FRAME:
                    extra.extend(self.frame(child))
                elif tag in _BLOCKS:
                    extra.extend(self.blocks_of(child))
                else:
                    self._inline(child, out, extra)
                if child.tail:
                    out.append(child.tail)

    def blocks_of(self, element: Any) -> Iterator[str]:
        if element.tag in (T_P, T_H):
            return self.paragraph(element)
        if element.tag == TB_TABLE:
            return self.table(element)
        return self.blocks(element)

    def table(self, table: Any) -> Iterator[str]:
        with self.nesting:
            for row in table.iter(TB_ROW):
                if _owner_table(row) is not table:
                    continue  # rows of nested tables are rendered inside their cell
                cells: list[str] = []
                for cell in row:
                    if cell.tag == TB_COVERED:
                        cells.append("")
                        continue
                    if cell.tag != TB_CELL:
                        continue
                    text = " ".join(line.strip() for line in self.blocks(cell) if line.strip())
                    repeat = _int(cell.get(_t(TABLE, "number-columns-repeated")), 1)
                    cells.extend([text] * (min(repeat, _MAX_REPEAT) if text else 1))
                while cells and not cells[-1]:
                    cells.pop()
                if cells:
                    yield " | ".join(cells)

    def frame(self, frame: Any) -> Iterator[str]:
        for child in frame:
            if child.tag == D_TEXTBOX:
                yield from self.blocks(child)
            elif child.tag == D_OBJECT:
                yield from self.embedded(child)
            elif child.tag == SVG_TITLE and child.text and child.text.strip():
                yield child.text.strip()

    def embedded(self, obj: Any) -> Iterator[str]:
        """Text of an embedded object (chart data table, formula) stored as ``Object N/content.xml``."""
        href = (obj.get(_t(XLINK, "href")) or "").strip()
        if not href or "://" in href:
            return
        folder = posixpath.normpath(href.removeprefix("./")).strip("/")
        member = f"{folder}/content.xml"
        if folder.startswith("..") or member not in self.names or member in self.objects_seen:
            return
        self.objects_seen.add(member)
        try:
            root = _parse(read_member(self.zf, member, self.limits.max_decompressed_bytes), member, self.path)
        except MidasError as exc:
            if isinstance(exc, ResourceLimitExceeded):
                raise
            self.warnings.append(f"embedded object {folder!r} unreadable ({exc.message})")
            return
        body = root.find(_t(OFFICE, "body"))
        if body is not None:
            yield from self.blocks(body)


def _owner_table(row: Any) -> Any:
    parent = row.getparent()
    while parent is not None and parent.tag != TB_TABLE:
        parent = parent.getparent()
    return parent


def _int(value: str | None, default: int) -> int:
    try:
        return max(int(value), 0) if value is not None else default
    except ValueError:
        return default


def _meta(zf: Any, names: set[str], path: Path, limits: Limits) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if "meta.xml" not in names:
        return metadata
    try:
        root = _parse(read_member(zf, "meta.xml", 4 * 1024 * 1024), "meta.xml", path)
    except CorruptDocument as exc:
        logger.info("%s: meta.xml unreadable (%s)", path.name, exc)
        return metadata
    office_meta = root.find(_t(OFFICE, "meta"))
    if office_meta is None:
        return metadata
    keywords: list[str] = []
    for child in office_meta:
        if not isinstance(child.tag, str):
            continue
        if child.tag == _t(META, "keyword") and child.text and child.text.strip():
            keywords.append(child.text.strip())
        elif child.tag == _t(META, "document-statistic"):
            pages = _int(child.get(_t(META, "page-count")), 0)
            if pages:
                metadata["page_count"] = pages
        key = _META_FIELDS.get(child.tag)
        value = (child.text or "").strip()
        if key in ("created", "modified"):
            put_date(metadata, key, value)
        elif key and value:
            metadata[key] = value
    author = metadata.pop("initial_creator", None) or metadata.get("last_modified_by")
    if author:
        metadata["authors"] = split_authors(author)
    if keywords:
        metadata["keywords"] = keywords
    return metadata
