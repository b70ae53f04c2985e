"""Profiles of tabular data (CSV, XLSX, XLS, JSON records), read in bounded chunks.

Per table (a CSV file, a sheet, a list of records): row and column counts,
and per column its type, missing values, numeric summary (min, max, mean,
standard deviation, quartiles), most frequent values and, when the values
are dates, their range. Files are streamed: CSV through pandas' ``chunksize``,
XLSX through openpyxl's read-only mode, JSON arrays through an incremental
decoder, so memory stays bounded whatever the file size:

* mean and standard deviation are exact (chunk-wise merged moments);
* quartiles are exact up to ``QUANTILE_SAMPLE`` numbers per column, then
  computed from a uniform reservoir sample (flagged ``quartiles_exact: false``);
* value counts are exact until a column has ``MAX_TRACKED_VALUES`` distinct
  values, then the rarest are pruned (flagged ``top_values_exact: false``).

"Missing" means what pandas reads as missing (empty, ``NA``, ``null``…) plus
cells that hold only whitespace. Everything returned is plain JSON.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import math
import warnings as pywarnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

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
from background_tasks.extraction.extractors.tabular import HEADER_SCAN_ROWS, find_header_row, is_header_row

log = logging.getLogger(__name__)

DATA_EXTENSIONS = frozenset({".csv", ".xlsx", ".xlsm", ".xls", ".json", ".jsonl", ".ndjson"})
CHUNK_ROWS = 50_000
QUANTILE_SAMPLE = 200_000
MAX_TRACKED_VALUES = 20_000
TOP_VALUES = 10
MAX_COLUMNS = 5_000
#: a column whose values are dates in at least this share is a possible date column
DATE_SHARE = 0.8
_JSON_READ = 1024 * 1024
_BOOL_WORDS = frozenset({"true", "false"})


def _pd() -> Any:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pinned in requirements
        raise MissingDependency("pandas is needed for data analysis") from exc
    return pd


def _plain(value: Any) -> Any:
    """JSON-safe scalar: numpy numbers to Python, NaN/inf to None, dates to ISO text."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "isoformat"):
        try:
            return value.isoformat()
        except ValueError:  # NaT
            return None
    if hasattr(value, "item"):
        return _plain(value.item())
    return str(value)


# --------------------------------------------------------------------------
# Column and table accumulators
# --------------------------------------------------------------------------


class ColumnProfile:
    """Everything known about one column, updated chunk by chunk."""

    def __init__(self, name: str, seed: int = 0) -> None:
        import numpy as np

        self.name = name
        self.rows = 0
        self.missing = 0
        self.numeric = 0
        self.integral = True
        self.booleans = 0
        self.dates = 0
        self.texts = 0
        self.n = 0  # finite numbers
        self.mean = 0.0
        self.m2 = 0.0
        self.min: float | None = None
        self.max: float | None = None
        self.sample = np.empty(0, dtype=np.float64)
        self.seen = 0  # finite numbers offered to the reservoir
        self.counts: dict[str, int] = {}
        self.counts_exact = True
        self.date_format: str | None = None
        self.date_min: Any = None
        self.date_max: Any = None
        self.date_has_time = False
        self._rng = np.random.default_rng(seed)

    # -- updates -----------------------------------------------------------

    def add_missing(self, count: int) -> None:
        self.rows += count
        self.missing += count

    def update(self, values: Any) -> None:
        """Take one chunk of the column (a pandas Series of strings and/or native values)."""
        pd = _pd()
        self.rows += len(values)
        present = values[~values.isna()]
        if present.empty:
            self.missing += len(values)
            return
        if pd.api.types.is_string_dtype(present.dtype) and not pd.api.types.is_object_dtype(present.dtype):
            strings, natives = present, present.iloc[0:0]
        else:
            is_text = present.map(lambda v: isinstance(v, str)).astype(bool)
            strings, natives = present[is_text], present[~is_text]
        strings = strings.astype(str).str.strip()
        blank = strings == ""
        self.missing += len(values) - len(present) + int(blank.sum())
        strings = strings[~blank]
        if len(natives):
            self._natives(natives)
        if len(strings):
            self._strings(strings)

    def _natives(self, values: Any) -> None:
        pd = _pd()
        kinds = values.map(_native_kind)
        bools = values[kinds == "bool"]
        if len(bools):
            self.booleans += len(bools)
            self._count(bools.map(lambda v: "true" if v else "false"))
        numbers = values[kinds == "number"]
        if len(numbers):
            floats = pd.to_numeric(numbers, errors="coerce").astype("float64")
            self.numeric += len(numbers)
            if self.integral and not numbers.map(lambda v: isinstance(v, int) or float(v).is_integer()).all():
                self.integral = False
            self._numbers(floats.to_numpy())
        dates = values[kinds == "date"]
        if len(dates):
            stamps = pd.to_datetime(dates.map(_as_datetime), errors="coerce")
            self._dates(stamps[stamps.notna()], has_time=bool((dates.map(_has_time)).any()))
        other = values[kinds == "other"]
        if len(other):
            self._strings(other.map(_as_text).str.strip())

    def _strings(self, strings: Any) -> None:
        pd = _pd()
        lowered = strings.str.lower()
        is_bool = lowered.isin(_BOOL_WORDS)
        if is_bool.any():
            self.booleans += int(is_bool.sum())
            self._count(lowered[is_bool])
            strings = strings[~is_bool]
        if strings.empty:
            return
        numbers = pd.to_numeric(strings, errors="coerce")
        is_number = numbers.notna()
        if is_number.any():
            found = strings[is_number]
            self.numeric += len(found)
            if self.integral and found.str.contains(r"[.eE]", regex=True).any():
                self.integral = False
            self._numbers(numbers[is_number].astype("float64").to_numpy())
        rest = strings[~is_number]
        if rest.empty:
            return
        stamps = self._parse_dates(rest)
        is_date = stamps.notna()
        if is_date.any():
            self._dates(stamps[is_date], has_time=self.date_has_time)
        texts = rest[~is_date]
        self.texts += len(texts)
        if len(texts):
            self._count(texts)

    def _parse_dates(self, strings: Any) -> Any:
        pd = _pd()
        if self.date_format is None:
            self.date_format = _guess_date_format(strings.head(50).tolist()) or "ISO8601"
            self.date_has_time = "%H" in self.date_format or self.date_format == "ISO8601"
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("ignore")
            try:
                stamps = pd.to_datetime(strings, format=self.date_format, errors="coerce")
            except (ValueError, TypeError):  # mixed time zones
                stamps = pd.to_datetime(strings, format=self.date_format, errors="coerce", utc=True)
        if self.date_format == "ISO8601" and stamps.notna().any():
            valid = stamps[stamps.notna()]
            self.date_has_time = bool(((valid - valid.dt.normalize()) != pd.Timedelta(0)).any())
        return stamps

    def _numbers(self, array: Any) -> None:
        import numpy as np

        finite = array[np.isfinite(array)]
        count = len(finite)
        if not count:
            return
        chunk_mean = float(finite.mean())
        chunk_m2 = float(((finite - chunk_mean) ** 2).sum())
        total = self.n + count
        delta = chunk_mean - self.mean
        self.mean += delta * count / total
        self.m2 += chunk_m2 + delta * delta * self.n * count / total
        self.n = total
        low, high = float(finite.min()), float(finite.max())
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)
        self._reservoir(finite)

    def _reservoir(self, finite: Any) -> None:
        import numpy as np

        room = QUANTILE_SAMPLE - len(self.sample)
        if room > 0:
            self.sample = np.concatenate([self.sample, finite[:room]])
            self.seen += min(room, len(finite))
            finite = finite[room:]
        if not len(finite):
            return
        # Algorithm R, vectorised: item i (0-based overall) replaces a random slot with probability R/(i+1).
        positions = np.arange(self.seen, self.seen + len(finite))
        slots = self._rng.integers(0, positions + 1)
        keep = slots < QUANTILE_SAMPLE
        self.sample[slots[keep]] = finite[keep]
        self.seen += len(finite)

    def _dates(self, stamps: Any, has_time: bool) -> None:
        if stamps.empty:
            return
        self.dates += len(stamps)
        self.date_has_time = self.date_has_time or has_time
        low, high = stamps.min(), stamps.max()
        try:
            self.date_min = low if self.date_min is None else min(self.date_min, low)
            self.date_max = high if self.date_max is None else max(self.date_max, high)
        except TypeError:  # time-zone aware against naive: keep the first range
            pass

    def _count(self, values: Any) -> None:
        for value, count in values.value_counts().items():
            key = str(value)[:200]
            self.counts[key] = self.counts.get(key, 0) + int(count)
        if len(self.counts) > MAX_TRACKED_VALUES:
            kept = sorted(self.counts.items(), key=lambda kv: -kv[1])[: MAX_TRACKED_VALUES // 2]
            self.counts = dict(kept)
            self.counts_exact = False

    # -- result ------------------------------------------------------------

    @property
    def present(self) -> int:
        return self.rows - self.missing

    def kind(self) -> str:
        present = self.present
        if present == 0:
            return "empty"
        if self.numeric == present:
            return "integer" if self.integral else "float"
        if self.booleans == present:
            return "boolean"
        if self.dates == present:
            return "datetime" if self.date_has_time else "date"
        return "text"

    def result(self) -> dict[str, Any]:
        import numpy as np

        present = self.present
        kind = self.kind()
        out: dict[str, Any] = {
            "name": self.name,
            "type": kind,
            "count": present,
            "missing": self.missing,
            "missing_ratio": round(self.missing / self.rows, 4) if self.rows else 0.0,
        }
        kinds = {"number": self.numeric, "boolean": self.booleans, "date": self.dates, "text": self.texts}
        if sum(1 for v in kinds.values() if v) > 1:
            out["value_kinds"] = {k: v for k, v in kinds.items() if v}
        if self.n and self.numeric * 2 >= present:
            q25, q50, q75 = (float(v) for v in np.percentile(self.sample, [25, 50, 75]))
            out["numeric"] = {
                "count": self.n,
                "min": _plain(self.min),
                "max": _plain(self.max),
                "mean": _plain(self.mean),
                "std": _plain(math.sqrt(self.m2 / (self.n - 1))) if self.n > 1 else None,
                "q25": _plain(q25),
                "median": _plain(q50),
                "q75": _plain(q75),
                "quartiles_exact": self.seen <= QUANTILE_SAMPLE,
            }
        if self.counts and kind not in ("integer", "float"):
            top = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_VALUES]
            out["top_values"] = [{"value": value, "count": count} for value, count in top]
            out["top_values_exact"] = self.counts_exact
            if self.counts_exact and self.numeric == 0:
                out["distinct"] = len(self.counts)
        if self.dates:
            out["dates"] = {
                "count": self.dates,
                "min": _plain(self.date_min),
                "max": _plain(self.date_max),
                "format": self.date_format if self.date_format != "ISO8601" else "ISO 8601",
            }
            out["possible_date"] = self.dates >= DATE_SHARE * present
        return out


def _native_kind(value: Any) -> str:
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "bool"
    if isinstance(value, int | float) or type(value).__module__ == "numpy":
        return "number"
    if isinstance(value, datetime | date):
        return "date"
    return "other"


def _as_datetime(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo else value
    return datetime(value.year, value.month, value.day)


def _has_time(value: Any) -> bool:
    return isinstance(value, datetime) and (value.hour, value.minute, value.second, value.microsecond) != (0, 0, 0, 0)


def _as_text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)[:1000]
    return str(value)


def _guess_date_format(samples: Sequence[str]) -> str | None:
    """The most common strftime format pandas guesses for the samples (None if none looks like a date)."""
    try:
        from pandas.tseries.api import guess_datetime_format
    except ImportError:  # pragma: no cover - pandas < 2.2
        return None
    formats: Counter[str] = Counter()
    with pywarnings.catch_warnings():
        pywarnings.simplefilter("ignore")
        for sample in samples:
            if not isinstance(sample, str) or not any(ch.isdigit() for ch in sample) or len(sample) > 40:
                continue
            try:
                guessed = guess_datetime_format(sample)
            except (ValueError, TypeError):
                guessed = None
            if guessed:
                formats[guessed] += 1
    return formats.most_common(1)[0][0] if formats else None


class TableProfile:
    """One table: its columns' profiles, updated with DataFrame chunks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows = 0
        self.columns: dict[str, ColumnProfile] = {}
        self.notes: list[str] = []

    def update(self, frame: Any) -> None:
        for column in frame.columns:
            key = str(column)
            if key not in self.columns:
                if len(self.columns) >= MAX_COLUMNS:
                    raise ResourceLimitExceeded(f"table {self.name!r} has more than {MAX_COLUMNS} columns")
                profile = ColumnProfile(key, seed=len(self.columns))
                profile.add_missing(self.rows)
                self.columns[key] = profile
        for key, profile in self.columns.items():
            if key in frame.columns:
                profile.update(frame[key])
            else:
                profile.add_missing(len(frame))
        self.rows += len(frame)

    def result(self) -> dict[str, Any]:
        columns = [c.result() for c in self.columns.values()]
        out: dict[str, Any] = {
            "name": self.name,
            "row_count": self.rows,
            "column_count": len(columns),
            "column_types": {c["name"]: c["type"] for c in columns},
            "missing_cells": sum(c["missing"] for c in columns),
            "numeric_columns": [c["name"] for c in columns if c["type"] in ("integer", "float")],
            "text_columns": [c["name"] for c in columns if c["type"] == "text"],
            "date_columns": [c["name"] for c in columns if c.get("possible_date")],
            "columns": columns,
        }
        if self.notes:
            out["notes"] = list(self.notes)
        return out


# --------------------------------------------------------------------------
# Readers: each yields (table name, iterator of DataFrame chunks, notes)
# --------------------------------------------------------------------------


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


def _row_frames(rows: Iterable[Sequence[Any]], table: TableProfile, batch: int = CHUNK_ROWS) -> Iterator[Any]:
    """Rows of cells -> DataFrame chunks: header found among the first rows, title lines above it skipped."""
    pd = _pd()

    def filled(row: Sequence[Any]) -> list[Any]:
        cells = [None if (isinstance(c, str) and not c.strip()) else c for c in row]
        while cells and cells[-1] is None:
            cells.pop()
        return cells

    iterator = iter(rows)
    head: list[list[Any]] = []
    for row in iterator:
        cells = filled(row)
        if cells:
            head.append(cells)
            if len(head) >= HEADER_SCAN_ROWS:
                break
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


def _csv_tables(path: Path, limits: Limits, notes: list[str]) -> Iterator[tuple[str, Any]]:
    from background_tasks.extraction.extractors.encoding import decode_bytes
    from background_tasks.extraction.extractors.tabular import sniff_delimiter

    pd = _pd()
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


def _xlsx_tables(path: Path, limits: Limits, notes: list[str]) -> Iterator[tuple[str, Any]]:
    from background_tasks.extraction.zipsafe import check_zip

    with path.open("rb") as handle:
        magic = handle.read(8)
    if magic.startswith(b"\xd0\xcf\x11\xe0"):
        yield from _xls_tables(path, limits, notes)
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


def _xls_tables(path: Path, limits: Limits, notes: list[str]) -> Iterator[tuple[str, Any]]:
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
    pd = _pd()
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


def _json_tables(path: Path, extension: str, limits: Limits, notes: list[str]) -> Iterator[tuple[str, Any]]:
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


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def profile_file(path: str, extension: str, limits: Limits) -> dict[str, Any]:
    """Profile every table of a data file. Runs in an isolated child; returns plain JSON."""
    file = Path(path)
    extension = extension.lower()
    notes: list[str] = []
    if extension == ".csv":
        tables = _csv_tables(file, limits, notes)
    elif extension in (".xlsx", ".xlsm"):
        tables = _xlsx_tables(file, limits, notes)
    elif extension == ".xls":
        tables = _xls_tables(file, limits, notes)
    elif extension in (".json", ".jsonl", ".ndjson"):
        tables = _json_tables(file, extension, limits, notes)
    else:
        raise UnsupportedFileType(f"{file.name}: data analysis handles CSV, XLSX, XLS and JSON records")
    results = []
    for name, source in tables:
        table = TableProfile(name)
        frames = source if extension in (".csv", ".json", ".jsonl", ".ndjson") else _row_frames(source, table)
        try:
            for frame in frames:
                table.update(frame)
        except MidasError:
            raise
        except MemoryError as exc:
            raise ResourceLimitExceeded(f"{file.name}: table {name!r} needs more memory than allowed") from exc
        except Exception as exc:  # a parser's own error on damaged content
            raise CorruptDocument(f"{file.name}: table {name!r} unreadable ({type(exc).__name__}: {exc})") from exc
        results.append(table.result())
    if not results or all(t["row_count"] == 0 and t["column_count"] == 0 for t in results):
        raise EmptyDocument(f"{file.name}: no table with values")
    return {"tables": results, "table_count": len(results), "warnings": notes}
