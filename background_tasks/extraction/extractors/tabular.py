"""CSV, XLSX and XLS: tables as searchable text.

Every data row becomes one line of ``header: value`` pairs joined by `` | ``::

    Team: Blues | Location: STL | Stanley Cups: 1

A Markdown table would be shorter, but once the chunker cuts it, every chunk
after the first loses the header and "STL | 1" means nothing to a search. With
the header repeated per row, each chunk stands on its own. Lines above the
header row (a sheet title, notes) are kept as plain lines. Rows with no header
to name them are their cells joined by `` | ``.

Spreadsheets get one part per sheet, ``## Sheet: <name>`` followed by its rows,
recorded as a ``PageSpan`` whose number is the sheet's 1-based position in the
workbook, so chunks know their sheet.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import math
import posixpath
import re
import warnings as pywarnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from background_tasks.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    MidasError,
    MissingDependency,
    ResourceLimitExceeded,
    TypeMismatch,
)
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits, PageSpan, TextBuilder
from background_tasks.extraction.extractors.encoding import split_long_lines
from background_tasks.extraction.extractors.ole import summary_information
from background_tasks.extraction.extractors.text import load_text

log = logging.getLogger(__name__)

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK"
#: Excel's own limit; a sheet claiming more rows than this is lying.
_EXCEL_MAX_ROWS = 1_048_576
#: Rows looked at to find the header row (title lines may sit above it).
HEADER_SCAN_ROWS = 10
#: Charts and pictures described per sheet at most.
_MAX_DRAWINGS = 200
#: Column names kept in metadata at most (the text has them all).
_MAX_NAMES = 500
_NUMBER = re.compile(r"^[-+]?(\d[\d,. ]*)?(\.\d+)?([eE][-+]?\d+)?%?$")
_DATE_OR_TIME = re.compile(r"^\d{1,4}[-./]\d{1,2}[-./]\d{1,4}\b|^\d{1,2}:\d{2}(:\d{2})?\b")


# --------------------------------------------------------------------------
# Cells and rows -> text
# --------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """One cell as text: integral floats without ``.0``, dates as ISO dates, line breaks as spaces."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0, 0) and value.tzinfo is None:
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="milliseconds" if value.microsecond else "seconds")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    text = str(value)
    if "\n" in text or "\r" in text or "\t" in text:
        text = " ".join(text.split())
    return text.strip()


def _trim(cells: Sequence[str]) -> list[str]:
    end = len(cells)
    while end and not cells[end - 1]:
        end -= 1
    return list(cells[:end])


def looks_like_value(cell: Any) -> bool:
    """Numbers, dates, times and booleans are data, never column names (typed cells or their text)."""
    if cell is None:
        return False
    if not isinstance(cell, str):
        return True
    text = cell.strip()
    if not text or not any(ch.isdigit() for ch in text):
        return False
    return bool(_NUMBER.match(text) or _DATE_OR_TIME.match(text))


def is_header_row(cells: Sequence[Any], width: int) -> bool:
    """A header row names columns: text (no numbers or dates) in at least half of the table's width."""
    filled = [c for c in cells if c is not None and (not isinstance(c, str) or c.strip())]
    needed = 1 if width <= 1 else max(2, (width + 1) // 2)
    return len(filled) >= needed and not any(looks_like_value(c) for c in filled)


def find_header_row(head: Sequence[Sequence[Any]]) -> int | None:
    """Index of the header among a table's first non-empty rows (titles may sit above it), or None.

    The extracted text and the data profile both decide with this, so a table
    has the same columns in search results and in its analysis.
    """
    if len(head) < 2:
        return None
    width = max(len(row) for row in head)
    return next((i for i, row in enumerate(head[:-1]) if is_header_row(row, width)), None)


_BLOCK_LINES = 4096


def iter_lines(text: str) -> Iterator[str]:
    """The lines of ``text`` with their endings, lazily (csv.reader needs no copy of the whole text)."""
    pos, length = 0, len(text)
    while pos < length:
        end = text.find("\n", pos)
        end = length if end < 0 else end + 1
        yield text[pos:end]
        pos = end


class TableWriter:
    """Turns a stream of rows into ``header: value`` lines; counts rows and columns."""

    def __init__(self, max_chars: int) -> None:
        self._max_chars = max_chars
        self._lines: list[str] = []
        self._blocks: list[str] = []
        self._chars = 0
        self.header: list[str] | None = None
        self.data_rows = 0
        self.columns = 0

    def _emit(self, line: str) -> None:
        self._chars += len(line) + 1
        if self._chars > self._max_chars:
            raise ResourceLimitExceeded(f"table text exceeds the limit of {self._max_chars} characters")
        self._lines.append(line)
        if len(self._lines) >= _BLOCK_LINES:
            # millions of small line objects cost more than their text: keep joined blocks instead
            self._blocks.append("\n".join(self._lines))
            self._lines.clear()

    def write(self, rows: Iterable[Sequence[str]]) -> None:
        """Consume rows of cell strings (empty rows allowed and skipped)."""
        iterator = iter(rows)
        head: list[list[str]] = []
        for row in iterator:
            cells = _trim(row)
            if cells:
                head.append(cells)
                if len(head) >= HEADER_SCAN_ROWS:
                    break
        if not head:
            return
        header_index = find_header_row(head)
        if header_index is not None:
            for cells in head[:header_index]:
                self._plain(cells)
            self.header = head[header_index]
            self._emit(" | ".join(c for c in self.header if c))
            rest: Iterable[Sequence[str]] = head[header_index + 1 :]
        else:
            rest = head
        for cells in rest:
            self._row(cells)
        for row in iterator:
            cells = _trim(row)
            if cells:
                self._row(cells)

    def _plain(self, cells: list[str]) -> None:
        self.columns = max(self.columns, len(cells))
        self._emit(" | ".join(c for c in cells if c))

    def _row(self, cells: list[str]) -> None:
        self.data_rows += 1
        self.columns = max(self.columns, len(cells))
        header = self.header
        if header is None or cells == header:
            self._emit(" | ".join(c for c in cells if c))
            return
        parts = []
        for index, cell in enumerate(cells):
            if not cell:
                continue
            name = header[index] if index < len(header) else ""
            parts.append(f"{name}: {cell}" if name else cell)
        self._emit(" | ".join(parts))

    @property
    def chars(self) -> int:
        return self._chars

    def text(self) -> str:
        if self._lines:
            self._blocks.append("\n".join(self._lines))
            self._lines.clear()
        text = "\n".join(self._blocks)
        self._blocks = [text]
        return text


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------

_DELIMITERS = (",", "\t", ";", "|")
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def sniff_delimiter(sample: str) -> str:
    """The delimiter that splits the sample's lines into the most consistent number (> 1) of fields."""
    cut = sample.rfind("\n")
    if cut > 0:
        sample = sample[:cut]
    best, best_score = ",", (0.0, 0)
    for delimiter in _DELIMITERS:
        if delimiter not in sample:
            continue
        try:
            counts = [len(r) for r in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter) if any(r)]
        except csv.Error:
            continue
        if not counts:
            continue
        mode, frequency = Counter(counts).most_common(1)[0]
        if mode <= 1:
            continue
        score = (frequency / len(counts), mode)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _ensure_field_limit(limit: int) -> None:
    # csv's field limit is process-wide; it is only ever raised, never lowered.
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)


class CsvExtractor(Extractor):
    """``.csv``: encoding detected, delimiter sniffed (comma, tab, semicolon, pipe), quotes honoured."""

    name = "csv"
    extensions = frozenset({".csv"})
    mime_types = frozenset({"text/csv"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        text, base, warnings = load_text(path, limits, split_lines=False)
        delimiter = sniff_delimiter(text[:65536])
        _ensure_field_limit(max(limits.max_line_chars, 131072) + 1)
        writer = TableWriter(limits.max_text_chars)
        reader = csv.reader(iter_lines(text), delimiter=delimiter)
        try:
            writer.write([c.strip() if "\n" not in c else " ".join(c.split()) for c in row] for row in reader)
        except csv.Error as exc:
            if not writer.chars:
                raise CorruptDocument(f"malformed CSV: {exc}") from exc
            warnings.append(f"CSV parsing stopped at line {reader.line_num}: {exc}")
        del text, reader  # the decoded file is no longer needed; free it before building the body
        body = writer.text()
        if not body.strip():
            raise EmptyDocument("the CSV file has no values")
        body, broken = split_long_lines(body, limits.max_line_chars)
        if broken:
            warnings.append(f"{broken} row(s) longer than {limits.max_line_chars} characters were broken up")
        header = writer.header
        metadata = {
            "encoding": base["encoding"],
            "delimiter": _DELIMITER_NAMES.get(delimiter, delimiter),
            "has_header": header is not None,
            "columns": list(header)[:_MAX_NAMES] if header else [],
            "column_count": max(writer.columns, len(header or ())),
            "row_count": writer.data_rows,
        }
        return Extraction(text=body, metadata=metadata, warnings=tuple(warnings))


# --------------------------------------------------------------------------
# Spreadsheets (shared)
# --------------------------------------------------------------------------


class _Workbook:
    """Sheets rendered one by one into a TextBuilder, with per-sheet metadata."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.builder = TextBuilder()
        self.sheets: list[dict[str, Any]] = []
        self.warnings: list[str] = []

    def add_sheet(self, name: str, rows: Iterable[Sequence[str]], drawings: Sequence[str] = (), **extra: Any) -> None:
        """Render one sheet; ``drawings`` are lines describing its charts and pictures."""
        remaining = self.limits.max_text_chars - self.builder.length
        writer = TableWriter(max(remaining, 0))
        writer.write(rows)
        body = writer.text()
        if drawings:
            body = "\n".join([body, *drawings]) if body else "\n".join(drawings)
        number = len(self.sheets) + 1
        info: dict[str, Any] = {"name": name, "rows": writer.data_rows, "columns": writer.columns, **extra}
        if writer.header:
            info["header"] = [c for c in writer.header if c][:_MAX_NAMES]
        if drawings:
            info["drawings"] = len(drawings)
        self.sheets.append(info)
        if body.strip():
            self.builder.add(f"## Sheet: {name}\n\n{body}", page=number)

    def extraction(self, metadata: dict[str, Any]) -> Extraction:
        text = self.builder.text()
        if not text.strip():
            raise EmptyDocument(f"the workbook's {len(self.sheets)} sheet(s) hold no cell values")
        pages = self.builder.pages()
        # Breaking long lines changes offsets; only do it (and drop exact spans) when needed.
        if any(len(line) > self.limits.max_line_chars for line in text.split("\n")):
            text, broken = split_long_lines(text, self.limits.max_line_chars)
            self.warnings.append(f"{broken} row(s) longer than {self.limits.max_line_chars} characters were broken up")
            pages = _respan(text, [s["name"] for s in self.sheets])
        metadata = {**metadata, "sheets": self.sheets, "sheet_count": len(self.sheets)}
        return Extraction(text=text, metadata=metadata, pages=pages, warnings=tuple(self.warnings))


def _respan(text: str, names: list[str]) -> tuple[PageSpan, ...]:
    """Page spans recomputed from the ``## Sheet:`` headings after the text changed."""
    starts = []
    for number, name in enumerate(names, start=1):
        index = text.find(f"## Sheet: {name}\n", starts[-1][1] if starts else 0)
        if index >= 0:
            starts.append((number, index))
    spans = []
    for i, (number, start) in enumerate(starts):
        end = starts[i + 1][1] - 2 if i + 1 < len(starts) else len(text)
        spans.append(PageSpan(number, start, end))
    return tuple(spans)


def _sniff(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(8)


def _ole_is_encrypted(path: Path, limits: Limits) -> bool:
    """An OLE container holding ``EncryptedPackage``/``EncryptionInfo``: a password-protected OOXML file."""
    try:
        import olefile

        with olefile.OleFileIO(str(path)) as ole:
            return ole.exists("EncryptedPackage") or ole.exists("EncryptionInfo")
    except ImportError:
        pass
    except Exception as exc:  # a damaged directory: fall back to looking for the stream names
        log.debug("olefile cannot read %s: %s", path.name, exc)
    with open(path, "rb") as handle:
        data = handle.read(min(limits.max_decompressed_bytes, 256 * 1024 * 1024))
    return any(name.encode("utf-16-le") in data for name in ("EncryptedPackage", "EncryptionInfo"))


#: SummaryInformation names (``ole.SUMMARY_PROPERTIES``) -> workbook metadata keys, in output order
_SUMMARY_KEYS = {
    "title": "title",
    "subject": "subject",
    "author": "creator",
    "keywords": "keywords",
    "comments": "description",
    "last_saved_by": "last_modified_by",
    "create_time": "created",
    "last_saved_time": "modified",
}


def _ole_summary(path: Path) -> dict[str, Any]:
    """Title, author and dates from an OLE file's SummaryInformation (olefile comes with extract-msg).

    Read by ``ole.summary_information`` with bounds checks, never olefile's
    ``get_metadata``: that trusts vector counts and can loop on a hostile file.
    """
    try:
        import olefile
    except ImportError:
        return {}
    try:
        with olefile.OleFileIO(str(path)) as ole:
            summary = summary_information(ole, path.name)
    except Exception as exc:  # metadata is optional; the workbook itself may still be readable
        log.debug("no OLE summary for %s: %s", path.name, exc)
        return {}
    result: dict[str, Any] = {}
    for name, key in _SUMMARY_KEYS.items():
        value = summary.get(name)
        if key in ("created", "modified"):
            if isinstance(value, dt.datetime) and value.year > 1601:  # 1601-01-01 is a zero FILETIME
                result[key] = value.isoformat()
        elif isinstance(value, str):
            result[key] = value
    return result


# --------------------------------------------------------------------------
# XLSX
# --------------------------------------------------------------------------


def _iter_openpyxl_rows(ws: Any, warnings: list[str]) -> Iterator[list[str]]:
    # reset_dimensions: trust the rows present, not the declared used range, so an
    # "inflated" sheet (dimension A1:Z1048576, seven real rows) stays cheap.
    ws.reset_dimensions()
    for seen, row in enumerate(ws.iter_rows(values_only=True), start=1):
        if seen > _EXCEL_MAX_ROWS:
            warnings.append(f"sheet {ws.title!r}: stopped after {_EXCEL_MAX_ROWS} rows")
            return
        if row:
            yield [format_value(v) for v in row]


def _column_index(ref: str) -> int:
    index = 0
    for ch in ref:
        if "A" <= ch <= "Z":
            index = index * 26 + (ord(ch) - 64)
        elif "a" <= ch <= "z":
            index = index * 26 + (ord(ch) - 96)
        else:
            break
    return index


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


class _RawXlsxReader:
    """Namespace-agnostic SpreadsheetML reader for what openpyxl cannot open.

    openpyxl does not understand ISO/IEC 29500 *Strict* workbooks (different
    namespaces) and loads them with zero sheets. This reads workbook, shared
    strings and sheet XML directly with a hardened parser. Cell formats are
    not interpreted, so dates come out as Excel serial numbers.
    """

    def __init__(self, zf: zipfile.ZipFile, limits: Limits) -> None:
        self.zf = zf
        self.limits = limits
        self.names = set(zf.namelist())

    def _xml(self, name: str) -> Any:
        from lxml import etree

        from background_tasks.extraction.zipsafe import read_member

        data = read_member(self.zf, name, self.limits.max_decompressed_bytes)
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        try:
            return etree.fromstring(data, parser)
        except etree.XMLSyntaxError as exc:
            raise CorruptDocument(f"{name}: malformed XML ({exc})") from exc

    def rels(self, part: str) -> dict[str, tuple[str, str]]:
        """A part's relationships: id -> (type suffix such as "drawing", target part name)."""
        folder, _, name = part.rpartition("/")
        rels_name = f"{folder}/_rels/{name}.rels" if folder else f"_rels/{name}.rels"
        if rels_name not in self.names:
            return {}
        found = {}
        for rel in self._xml(rels_name):
            target = rel.get("Target", "")
            if rel.get("TargetMode") == "External" or not target:
                continue
            target = target.lstrip("/") if target.startswith("/") else posixpath.normpath(f"{folder}/{target}")
            found[rel.get("Id")] = (rel.get("Type", "").rsplit("/", 1)[-1], target)
        return found

    def sheets(self) -> list[tuple[str, str]]:
        root = self._xml("xl/workbook.xml")
        targets = {rid: target for rid, (_kind, target) in self.rels("xl/workbook.xml").items()}
        found = []
        for element in root.iter():
            if _local(element.tag) == "sheet":
                rid = next((v for k, v in element.attrib.items() if _local(k) == "id"), None)
                target = targets.get(rid)
                if target and target in self.names:
                    found.append((element.get("name", f"Sheet{len(found) + 1}"), target))
        return found

    def shared_strings(self) -> list[str]:
        name = next((n for n in ("xl/sharedStrings.xml", "xl/sharedstrings.xml") if n in self.names), None)
        if name is None:
            return []
        strings = []
        for item in self._xml(name):
            if _local(item.tag) == "si":
                strings.append("".join(t.text or "" for t in item.iter() if _local(t.tag) == "t"))
        return strings

    def rows(self, target: str, strings: list[str]) -> Iterator[list[str]]:
        root = self._xml(target)
        for row in root.iter():
            if _local(row.tag) != "row":
                continue
            cells: dict[int, str] = {}
            for cell in row:
                if _local(cell.tag) != "c":
                    continue
                column = _column_index(cell.get("r", "")) or (max(cells) + 1 if cells else 1)
                kind = cell.get("t", "n")
                value = ""
                for child in cell:
                    tag = _local(child.tag)
                    if tag == "v":
                        value = child.text or ""
                    elif tag == "is":
                        value = "".join(t.text or "" for t in child.iter() if _local(t.tag) == "t")
                if kind == "s" and value.strip().isdigit():
                    index = int(value)
                    value = strings[index] if index < len(strings) else ""
                elif kind == "b":
                    value = "TRUE" if value.strip() == "1" else "FALSE"
                elif kind == "n" and value:
                    try:
                        value = format_value(float(value))
                    except ValueError:
                        pass
                if column <= 16384:
                    cells[column] = format_value(value)
            if cells:
                width = max(cells)
                yield [cells.get(i, "") for i in range(1, width + 1)]

    def drawings(self, sheet_part: str) -> list[str]:
        """One line per chart or picture on the sheet: chart type, title, series, alt text."""
        lines: list[str] = []
        for kind, drawing in self.rels(sheet_part).values():
            if kind != "drawing" or drawing not in self.names:
                continue
            targets = self.rels(drawing)
            root = self._xml(drawing)
            for element in root.iter():
                tag = _local(element.tag)
                if tag not in ("graphicFrame", "pic") or len(lines) >= _MAX_DRAWINGS:
                    continue
                alt = ""
                chart_part = None
                for inner in element.iter():
                    inner_tag = _local(inner.tag)
                    if inner_tag == "cNvPr":
                        alt = " ".join((inner.get("descr") or inner.get("title") or "").split())
                    elif inner_tag == "chart":
                        rid = next((v for k, v in inner.attrib.items() if _local(k) == "id"), None)
                        chart_part = targets.get(rid, ("", None))[1]
                parts = []
                if chart_part and chart_part in self.names:
                    parts.extend(self._chart(chart_part))
                elif tag == "pic":
                    parts.append("Image")
                if alt:
                    parts.append(f"alt text: {alt}")
                if parts:
                    lines.append(f"[{' — '.join(parts)}]")
        return lines

    def _chart(self, part: str) -> list[str]:
        root = self._xml(part)
        kinds: list[str] = []
        series: list[str] = []
        title = ""
        for element in root.iter():
            tag = _local(element.tag)
            if tag.endswith("Chart") and tag not in ("chart",) and element.getparent() is not None:
                if _local(element.getparent().tag) == "plotArea":
                    kind = re.sub(r"3D$", "", tag[: -len("Chart")])
                    kind = re.sub(r"(?<!^)([A-Z])", r" \1", kind).lower()
                    if kind not in kinds:
                        kinds.append(kind)
            elif tag == "title" and not title and _local(element.getparent().tag) == "chart":
                title = " ".join("".join(t.text or "" for t in element.iter() if _local(t.tag) in ("t", "v")).split())
            elif tag == "ser":
                for child in element:
                    if _local(child.tag) == "tx":
                        name = " ".join(" ".join(v.text or "" for v in child.iter() if _local(v.tag) == "v").split())
                        if name:
                            series.append(name)
        parts = [f"{'/'.join(kinds).capitalize() or 'A'} chart"]
        if title:
            parts.append(f"title: {title}")
        if series:
            parts.append(f"series: {', '.join(series[:50])}")
        return parts


_CORE_KEYS = {
    "title": "title",
    "creator": "creator",
    "subject": "subject",
    "description": "description",
    "keywords": "keywords",
    "lastModifiedBy": "last_modified_by",
    "created": "created",
    "modified": "modified",
}


def _core_properties(zf: zipfile.ZipFile, limits: Limits) -> dict[str, Any]:
    """Title, creator, dates from ``docProps/core.xml`` as written (openpyxl invents defaults for missing ones)."""
    if "docProps/core.xml" not in zf.namelist():
        return {}
    from lxml import etree

    from background_tasks.extraction.zipsafe import read_member

    try:
        data = read_member(zf, "docProps/core.xml", min(limits.max_decompressed_bytes, 16 * 1024 * 1024))
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        root = etree.fromstring(data, parser)
    except (MidasError, etree.XMLSyntaxError) as exc:
        log.debug("unreadable core properties: %s", exc)
        return {}
    result: dict[str, Any] = {}
    for element in root:
        key = _CORE_KEYS.get(_local(element.tag))
        value = " ".join((element.text or "").split())
        if key and value:
            result[key] = value
    return result


class XlsxExtractor(Extractor):
    """``.xlsx``: every sheet via openpyxl (read-only, cached values); zip bombs rejected first."""

    name = "xlsx"
    extensions = frozenset({".xlsx", ".xlsm"})
    mime_types = frozenset(
        {
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.ms-excel.sheet.macroEnabled.12",
        }
    )

    def extract(self, path: Path, limits: Limits) -> Extraction:
        magic = _sniff(path)
        if magic.startswith(_OLE_MAGIC):
            if _ole_is_encrypted(path, limits):
                raise EncryptedDocument("the workbook is password-protected (encrypted OOXML package)")
            extraction = XlsExtractor().extract(path, limits)
            notice = "the .xlsx file is really a legacy .xls workbook"
            return Extraction(extraction.text, extraction.metadata, extraction.pages, (notice, *extraction.warnings))
        if not magic.startswith(_ZIP_MAGIC):
            if not magic:
                raise EmptyDocument("the file is empty")
            raise CorruptDocument("not an XLSX workbook (neither a ZIP nor an OLE container)")

        from background_tasks.extraction.zipsafe import check_zip, open_zip

        check_zip(path, limits.max_decompressed_bytes)
        try:
            import openpyxl
        except ImportError as exc:  # pragma: no cover - pinned in requirements
            raise MissingDependency("openpyxl is needed for .xlsx files") from exc

        with open_zip(path) as zf:
            names = set(zf.namelist())
            if "xl/workbook.xml" not in names:
                if "word/document.xml" in names or "ppt/presentation.xml" in names or "content.xml" in names:
                    raise TypeMismatch("the .xlsx file is another kind of office document")
                raise CorruptDocument("the ZIP archive has no xl/workbook.xml: not an XLSX workbook")
            if any(info.flag_bits & 0x1 for info in zf.infolist()):
                raise EncryptedDocument("the workbook's ZIP members are encrypted")
            metadata: dict[str, Any] = _core_properties(zf, limits)
            reader = _RawXlsxReader(zf, limits)
            try:
                parts = dict(reader.sheets())
            except MidasError as exc:
                raise CorruptDocument(f"the workbook part is unreadable: {exc.message}") from exc

            book = _Workbook(limits)
            try:
                with pywarnings.catch_warnings():
                    pywarnings.simplefilter("ignore")
                    wb = openpyxl.load_workbook(path, read_only=True, data_only=True, keep_links=False)
                    try:
                        for ws in wb.worksheets:
                            drawings = self._drawings(reader, parts.get(ws.title), book.warnings)
                            rows = _iter_openpyxl_rows(ws, book.warnings)
                            book.add_sheet(ws.title, rows, drawings, state=ws.sheet_state)
                    finally:
                        wb.close()
            except MidasError:
                raise
            except Exception as exc:
                log.info("openpyxl failed on %s (%s); trying the raw SpreadsheetML reader", path.name, exc)
                book = _Workbook(limits)
                book.warnings.append(f"openpyxl could not read the workbook ({type(exc).__name__}); read raw XML")
            if not book.sheets:
                self._raw(reader, parts, book)
        return book.extraction(metadata)

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """Core properties and sheet names from the package parts, without reading any cells."""
        magic = _sniff(path)
        if magic.startswith(_OLE_MAGIC):
            if _ole_is_encrypted(path, limits):
                raise EncryptedDocument("the workbook is password-protected (encrypted OOXML package)")
            return XlsExtractor().metadata(path, limits)
        if not magic.startswith(_ZIP_MAGIC):
            raise CorruptDocument("not an XLSX workbook (neither a ZIP nor an OLE container)")
        from background_tasks.extraction.zipsafe import check_zip, open_zip

        check_zip(path, limits.max_decompressed_bytes)
        with open_zip(path) as zf:
            if "xl/workbook.xml" not in zf.namelist():
                raise CorruptDocument("the ZIP archive has no xl/workbook.xml: not an XLSX workbook")
            metadata: dict[str, Any] = _core_properties(zf, limits)
            try:
                names = [name for name, _part in _RawXlsxReader(zf, limits).sheets()]
            except MidasError as exc:
                raise CorruptDocument(f"the workbook part is unreadable: {exc.message}") from exc
        metadata.update({"sheets": [{"name": name} for name in names], "sheet_count": len(names)})
        return metadata

    @staticmethod
    def _drawings(reader: _RawXlsxReader, part: str | None, warnings: list[str]) -> list[str]:
        """Chart and picture descriptions; a damaged drawing costs a warning, never the sheet."""
        if not part:
            return []
        try:
            return reader.drawings(part)
        except ResourceLimitExceeded:
            raise
        except Exception as exc:
            warnings.append(f"charts/pictures of {part} skipped: {exc}")
            return []

    @classmethod
    def _raw(cls, reader: _RawXlsxReader, parts: dict[str, str], book: _Workbook) -> None:
        try:
            strings = reader.shared_strings()
            for name, target in parts.items():
                book.add_sheet(name, reader.rows(target, strings), cls._drawings(reader, target, book.warnings))
        except MidasError:
            raise
        except Exception as exc:
            raise CorruptDocument(f"cannot read the workbook: {type(exc).__name__}: {exc}") from exc
        if book.sheets:
            book.warnings.append("read with the raw SpreadsheetML reader (e.g. Strict OOXML); dates are serial numbers")


# --------------------------------------------------------------------------
# XLS
# --------------------------------------------------------------------------


def _xls_rows(sheet: Any, datemode: int, xlrd: Any) -> Iterator[list[str]]:
    for index in range(sheet.nrows):
        cells = []
        for cell in sheet.row(index):
            ctype, value = cell.ctype, cell.value
            if ctype == xlrd.XL_CELL_DATE:
                try:
                    value = xlrd.xldate.xldate_as_datetime(value, datemode)
                except (ValueError, OverflowError, xlrd.xldate.XLDateError):
                    pass
            elif ctype == xlrd.XL_CELL_BOOLEAN:
                value = bool(value)
            elif ctype == xlrd.XL_CELL_ERROR:
                value = xlrd.error_text_from_code.get(value, "#ERR")
            elif ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
                value = None
            cells.append(format_value(value))
        yield cells


class XlsExtractor(Extractor):
    """``.xls`` (BIFF2-8) via xlrd: every sheet, dates as dates; encrypted and corrupt files get clear errors."""

    name = "xls"
    extensions = frozenset({".xls"})
    mime_types = frozenset({"application/vnd.ms-excel"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        magic = _sniff(path)
        if not magic:
            raise EmptyDocument("the file is empty")
        if magic.startswith(_ZIP_MAGIC):
            extraction = XlsxExtractor().extract(path, limits)
            notice = "the .xls file is really an .xlsx workbook"
            return Extraction(extraction.text, extraction.metadata, extraction.pages, (notice, *extraction.warnings))
        try:
            import xlrd
            from xlrd.compdoc import CompDocError
        except ImportError as exc:  # pragma: no cover - pinned in requirements
            raise MissingDependency("xlrd is needed for .xls files") from exc

        book = _Workbook(limits)
        sink = io.StringIO()
        try:
            try:
                wb = xlrd.open_workbook(str(path), on_demand=True, logfile=sink, ragged_rows=True)
            except CompDocError as exc:
                wb = xlrd.open_workbook(
                    str(path), on_demand=True, logfile=sink, ragged_rows=True, ignore_workbook_corruption=True
                )
                book.warnings.append(f"the workbook's container is damaged ({exc}); read what could be recovered")
            try:
                metadata: dict[str, Any] = {"biff_version": wb.biff_version, **_ole_summary(path)}
                if wb.user_name and "last_modified_by" not in metadata:
                    metadata["last_modified_by"] = wb.user_name.strip()
                for index in range(wb.nsheets):
                    sheet = wb.sheet_by_index(index)
                    book.add_sheet(sheet.name, _xls_rows(sheet, wb.datemode, xlrd))
                    wb.unload_sheet(index)
            finally:
                wb.release_resources()
        except MidasError:
            raise
        except xlrd.XLRDError as exc:
            message = str(exc)
            if "encrypted" in message.lower():
                raise EncryptedDocument("the workbook is password-protected") from exc
            if "xlsx" in message.lower():
                raise TypeMismatch(f"not a legacy .xls workbook: {message}") from exc
            raise CorruptDocument(f"cannot read the workbook: {message}") from exc
        except CompDocError as exc:
            raise CorruptDocument(f"the workbook is corrupt: {exc}") from exc
        except MemoryError as exc:
            raise ResourceLimitExceeded("the workbook needs more memory than available") from exc
        except Exception as exc:  # xlrd raises assorted low-level errors on damaged BIFF data
            raise CorruptDocument(f"cannot read the workbook: {type(exc).__name__}: {exc}") from exc
        return book.extraction(metadata)

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """Summary properties and sheet names without reading any cells."""
        if _sniff(path).startswith(_ZIP_MAGIC):
            return XlsxExtractor().metadata(path, limits)
        try:
            import xlrd
        except ImportError as exc:  # pragma: no cover - pinned in requirements
            raise MissingDependency("xlrd is needed for .xls files") from exc
        try:
            wb = xlrd.open_workbook(str(path), on_demand=True, logfile=io.StringIO(), ignore_workbook_corruption=True)
        except xlrd.XLRDError as exc:
            if "encrypted" in str(exc).lower():
                raise EncryptedDocument("the workbook is password-protected") from exc
            raise CorruptDocument(f"cannot read the workbook: {exc}") from exc
        except Exception as exc:
            raise CorruptDocument(f"cannot read the workbook: {type(exc).__name__}: {exc}") from exc
        try:
            names = wb.sheet_names()
            metadata: dict[str, Any] = {"biff_version": wb.biff_version, **_ole_summary(path)}
        finally:
            wb.release_resources()
        metadata.update({"sheets": [{"name": name} for name in names], "sheet_count": len(names)})
        return metadata
