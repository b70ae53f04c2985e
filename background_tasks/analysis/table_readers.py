"""Readers of tabular files: each yields (table name, DataFrame chunks or rows of cells).

Files are streamed, so memory stays bounded whatever their size: CSV through
pandas' ``chunksize``, XLSX through openpyxl's read-only mode, XLS sheet by
sheet, JSON arrays through an incremental decoder. Title lines above a header
row are found and skipped; what a reader had to skip or guess goes to ``notes``.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import warnings as pywarnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from background_tasks.analysis.columns import MAX_COLUMNS, TableProfile, pandas
from background_tasks.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    MidasError,
    MissingDependency,
    ResourceLimitExceeded,
    UnsupportedFileType,
)
from background_tasks.extraction.extractors.base import Limits
from background_tasks.extraction.extractors.tabular import (
    HEADER_SCAN_ROWS,
    find_header_row,
    is_header_row,
    leading_rows,
)

#: rows per DataFrame chunk
CHUNK_ROWS = 50_000
_JSON_READ = 1024 * 1024


def _column_names(header: Sequence[Any] | None, width: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for index in range(width):
        raw = header[index] if header is not None and index < len(header) else None
        name = " ".join(str(raw).split()) if raw is not None and str(raw).strip() else f"column_{index + 1}"
        base, suffix = name, 2
        while name in seen:
            name = f"{base}_{suffix}"
            suffix += 1
        seen.add(name)
        names.append(name)
    return names


def row_frames(rows: Iterable[Sequence[Any]], table: TableProfile, batch: int = CHUNK_ROWS) -> Iterator[Any]:
    """Rows of cells -> DataFrame chunks: header found among the first rows, title lines above it skipped."""
    pd = pandas()

    def filled(row: Sequence[Any]) -> list[Any]:
        cells = [None if (isinstance(c, str) and not c.strip()) else c for c in row]
        while cells and cells[-1] is None:
            cells.pop()
        return cells

    head, iterator = leading_rows(rows, filled)
    if not head:
        return
    width = max(len(r) for r in head)
    header_index = find_header_row(head)
    if header_index:
        table.notes.append(f"{header_index} line(s) above the header row skipped")
    names = _column_names(head[header_index] if header_index is not None else None, width)
    pending = head[header_index + 1 :] if header_index is not None else head

    def frame(block: list[list[Any]]) -> Any:
        wide = max(len(r) for r in block)
        if wide > len(names):
            names.extend(_column_names(None, wide)[len(names) :])
        return pd.DataFrame([r + [None] * (len(names) - len(r)) for r in block], columns=list(names), dtype=object)

    block = list(pending)
    for row in iterator:
        cells = filled(row)
        if not cells:
            continue
        block.append(cells)
        if len(block) >= batch:
            yield frame(block)
            block = []
    if block:
        yield frame(block)


def _csv_header(sample: str, delimiter: str) -> tuple[int | None, int]:
    """(0 if there is a header row else None, physical lines above it): title lines may precede the header."""
    sample = sample.lstrip("\ufeff")
    cut = sample.rfind("\n")
    reader = csv.reader(io.StringIO(sample[: cut + 1] if cut > 0 else sample, newline=""), delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    start = 0
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                rows.append((start, cells))
                if len(rows) >= HEADER_SCAN_ROWS:
                    break
            start = reader.line_num
    except csv.Error:
        pass
    if not rows:
        return 0, 0
    if len(rows) == 1:  # a lone row of names is a header with no data yet
        width = len(rows[0][1])
        return (0, rows[0][0]) if width <= 1 or is_header_row(rows[0][1], width) else (None, rows[0][0])
    index = find_header_row([cells for _, cells in rows])
    return (0, rows[index][0]) if index is not None else (None, rows[0][0])


def csv_tables(path: Path, limits: Limits, notes: list[str]) -> Iterator[tuple[str, Any]]:
    from background_tasks.extraction.extractors.encoding import decode_bytes
    from background_tasks.extraction.extractors.tabular import sniff_delimiter

    pd = pandas()
    with path.open("rb") as handle:
        sample = handle.read(256 * 1024)
    if not sample.strip():
        raise EmptyDocument(f"{path.name}: the CSV file has no values")
    text, encoding, confidence = decode_bytes(sample)
    if sample.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    if confidence < 0.5:
        notes.append(f"text encoding uncertain: read as {encoding}")
    delimiter = sniff_delimiter(text[:65536])
    header, skip = _csv_header(text, delimiter)
    if header is None:
        notes.append("no header row: columns are named column_1, column_2, ...")
    elif skip:
        notes.append(f"{skip} line(s) above the header row skipped")

    def chunks() -> Iterator[Any]:
        with pywarnings.catch_warnings(record=True) as caught:
            pywarnings.simplefilter("always")
            try:
                reader = pd.read_csv(
                    path,
                    sep=delimiter,
                    dtype=str,
                    header=header,
                    skiprows=skip,
                    chunksize=CHUNK_ROWS,
                    encoding=encoding,
                    encoding_errors="replace",
                    on_bad_lines="warn",
                    skip_blank_lines=True,
                )
                with reader:
                    for index, chunk in enumerate(reader):
                        if header is None:
                            chunk.columns = _column_names(None, len(chunk.columns))
                        if index == 0 and len(chunk.columns) > MAX_COLUMNS:
                            raise ResourceLimitExceeded(f"{path.name}: more than {MAX_COLUMNS} columns")
                        yield chunk
            except pd.errors.EmptyDataError as exc:
                raise EmptyDocument(f"{path.name}: the CSV file has no values") from exc
            except (pd.errors.ParserError, UnicodeError, ValueError) as exc:
                raise CorruptDocument(f"{path.name}: malformed CSV ({exc})") from exc
            bad = sum(1 for w in caught if "Skipping line" in str(w.message))
            if bad:
                notes.append(f"{bad} malformed line(s) skipped")

    yield "data", chunks()


def xlsx_tables(path: Path, limits: Limits, notes: list[str]) -> Iterator[tuple[str, Any]]:
    from background_tasks.extraction.zipsafe import check_zip

    with path.open("rb") as handle:
        magic = handle.read(8)
    if magic.startswith(b"\xd0\xcf\x11\xe0"):
        yield from xls_tables(path, limits, notes)
        return
    check_zip(path, limits.max_decompressed_bytes)
    try:
        import openpyxl
    except ImportError as exc:  # pragma: no cover - pinned in requirements
        raise MissingDependency("openpyxl is needed for .xlsx files") from exc
    try:
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("ignore")
            workbook = openpyxl.load_workbook(path, read_only=True, data_only=True, keep_links=False)
    except MidasError:
        raise
    except Exception as exc:
        raise CorruptDocument(f"{path.name}: cannot open the workbook ({type(exc).__name__}: {exc})") from exc
    try:
        if not workbook.worksheets:
            raise CorruptDocument(f"{path.name}: the workbook has no readable worksheets")
        for sheet in workbook.worksheets:
            sheet.reset_dimensions()  # trust the rows present, not an inflated declared range
            yield sheet.title, sheet.iter_rows(values_only=True)
    finally:
        workbook.close()


def xls_tables(path: Path, limits: Limits, notes: list[str]) -> Iterator[tuple[str, Any]]:
    try:
        import xlrd
    except ImportError as exc:  # pragma: no cover - pinned in requirements
        raise MissingDependency("xlrd is needed for .xls files") from exc
    from xlrd.compdoc import CompDocError

    try:
        try:
            book = xlrd.open_workbook(str(path), on_demand=True, logfile=io.StringIO(), ragged_rows=True)
        except CompDocError as exc:
            book = xlrd.open_workbook(
                str(path), on_demand=True, logfile=io.StringIO(), ragged_rows=True, ignore_workbook_corruption=True
            )
            notes.append(f"the workbook's container is damaged ({exc}); read what could be recovered")
    except xlrd.XLRDError as exc:
        if "encrypted" in str(exc).lower():
            raise EncryptedDocument(f"{path.name}: the workbook is password-protected") from exc
        raise CorruptDocument(f"{path.name}: cannot read the workbook ({exc})") from exc
    except Exception as exc:
        raise CorruptDocument(f"{path.name}: cannot read the workbook ({type(exc).__name__}: {exc})") from exc

    def rows(sheet: Any) -> Iterator[list[Any]]:
        for index in range(sheet.nrows):
            out = []
            for cell in sheet.row(index):
                kind, value = cell.ctype, cell.value
                if kind in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK, xlrd.XL_CELL_ERROR):
                    value = None
                elif kind == xlrd.XL_CELL_DATE:
                    try:
                        value = xlrd.xldate.xldate_as_datetime(value, book.datemode)
                    except (ValueError, OverflowError, xlrd.xldate.XLDateError):
                        pass
                elif kind == xlrd.XL_CELL_BOOLEAN:
                    value = bool(value)
                elif kind == xlrd.XL_CELL_NUMBER and float(value).is_integer() and abs(value) < 2**53:
                    value = int(value)
                out.append(value)
            yield out

    try:
        for index in range(book.nsheets):
            sheet = book.sheet_by_index(index)
            yield sheet.name, rows(sheet)
            book.unload_sheet(index)
    finally:
        book.release_resources()


def _flatten(record: dict[str, Any], limits: Limits, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    if depth > limits.max_nesting:
        raise ResourceLimitExceeded("JSON records nested too deeply")
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_flatten(value, limits, name, depth + 1))
        elif isinstance(value, dict | list):
            out[name] = json.dumps(value, ensure_ascii=False, default=str)[:1000] if value else None
        else:
            out[name] = value
    return out


def _json_encoding(sample: bytes) -> str:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    for bom, name in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if sample.startswith(bom):
            return name
    if len(sample) >= 4 and sample[0] == 0 and sample[1] != 0:
        return "utf-16-be"
    if len(sample) >= 4 and sample[0] != 0 and sample[1] == 0:
        return "utf-16-le"
    return "utf-8"


def _iter_json_array(handle: Any, notes: list[str], max_element_chars: int) -> Iterator[Any]:
    """Elements of a top-level JSON array, decoded one at a time from a text stream."""
    decoder = json.JSONDecoder()
    buffer = handle.read(_JSON_READ)
    eof = not buffer
    pos = len(buffer) - len(buffer.lstrip("\ufeff \t\r\n"))
    if buffer[pos : pos + 1] != "[":
        raise CorruptDocument("not a JSON array")
    pos += 1
    expect_value = True
    count = 0
    while True:
        while pos < len(buffer) and buffer[pos] in " \t\r\n":
            pos += 1
        if pos >= len(buffer):
            if eof:
                if count:
                    notes.append(f"the JSON array is not closed (file truncated?); {count} record(s) read")
                    return
                raise CorruptDocument("the JSON array is not closed and holds no complete record")
            more = handle.read(max(_JSON_READ, len(buffer) - pos))
            eof = not more
            buffer, pos = buffer[pos:] + more, 0
            continue
        char = buffer[pos]
        if char == "]" and (not expect_value or count == 0):
            return
        if not expect_value:
            if char != ",":
                raise CorruptDocument(f"malformed JSON array after record {count}")
            pos += 1
            expect_value = True
            continue
        try:
            value, end = decoder.raw_decode(buffer, pos)
            complete = end < len(buffer) or eof
        except json.JSONDecodeError as exc:
            if eof:
                if count:
                    notes.append(f"JSON damaged after record {count} ({exc.msg}); {count} record(s) read")
                    return
                raise CorruptDocument(f"malformed JSON ({exc.msg})") from exc
            complete = False
        except RecursionError as exc:
            raise ResourceLimitExceeded("JSON nested too deeply") from exc
        if not complete:  # the value may continue beyond the buffer: read more (doubling, so it stays linear)
            if len(buffer) - pos > max_element_chars:
                raise ResourceLimitExceeded(f"a JSON record is larger than {max_element_chars} characters")
            more = handle.read(max(_JSON_READ, len(buffer) - pos))
            eof = not more
            buffer, pos = buffer[pos:] + more, 0
            continue
        yield value
        count += 1
        pos = end
        expect_value = False
        if pos > _JSON_READ:
            buffer, pos = buffer[pos:], 0


def _records_frames(records: Iterable[Any], limits: Limits, notes: list[str], label: str) -> Iterator[Any]:
    pd = pandas()
    block: list[dict[str, Any]] = []
    skipped = seen = 0
    for record in records:
        seen += 1
        if not isinstance(record, dict):
            skipped += 1
            if seen >= 100 and skipped == seen:
                break
            continue
        block.append(_flatten(record, limits))
        if len(block) >= CHUNK_ROWS:
            yield pd.DataFrame.from_records(block).astype(object)
            block = []
    if block:
        yield pd.DataFrame.from_records(block).astype(object)
    if seen == 0:
        raise EmptyDocument(f"{label}: the JSON array is empty")
    if skipped == seen:
        raise UnsupportedFileType(f"{label}: JSON is not an array of records (objects)")
    if skipped:
        notes.append(f"{skipped} element(s) that are not records skipped")


def json_tables(path: Path, extension: str, limits: Limits, notes: list[str]) -> Iterator[tuple[str, Any]]:
    with path.open("rb") as handle:
        sample = handle.read(4096)
    if not sample.strip():
        raise EmptyDocument(f"{path.name}: the JSON file is empty")
    encoding = _json_encoding(sample)
    start = sample.decode(encoding, errors="replace").lstrip("\ufeff \t\r\n")[:1]
    max_chars = limits.max_text_chars

    def lines() -> Iterator[Any]:
        bad = 0
        with path.open(encoding=encoding, errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    bad += 1
        if bad:
            notes.append(f"{bad} line(s) that are not JSON skipped")

    if extension in (".jsonl", ".ndjson") or (start == "{" and _multiple_values(path, encoding)):
        yield "records", _records_frames(lines(), limits, notes, path.name)
        return
    if start == "[":

        def elements() -> Iterator[Any]:
            with path.open(encoding=encoding, errors="replace") as handle:
                yield from _iter_json_array(handle, notes, max_chars)

        yield "records", _records_frames(elements(), limits, notes, path.name)
        return
    if start != "{":
        raise UnsupportedFileType(f"{path.name}: JSON is not an array of records")
    try:
        with path.open(encoding=encoding, errors="replace") as handle:
            document = json.load(handle)
    except json.JSONDecodeError as exc:
        raise CorruptDocument(f"{path.name}: malformed JSON ({exc.msg})") from exc
    except RecursionError as exc:
        raise ResourceLimitExceeded(f"{path.name}: JSON nested too deeply") from exc
    found = False
    for key, value in document.items() if isinstance(document, dict) else ():
        if isinstance(value, list) and any(isinstance(v, dict) for v in value[:100]):
            found = True
            yield str(key), _records_frames(value, limits, notes, f"{path.name}[{key}]")
    if not found:
        raise UnsupportedFileType(f"{path.name}: JSON holds no array of records")


def _multiple_values(path: Path, encoding: str) -> bool:
    """JSON Lines saved as .json: the first line is a complete object and more follows."""
    with path.open(encoding=encoding, errors="replace") as handle:
        first = handle.readline(1024 * 1024)
        rest = handle.read(4096).strip()
    try:
        return isinstance(json.loads(first), dict) and rest.startswith("{")
    except (json.JSONDecodeError, RecursionError):
        return False
