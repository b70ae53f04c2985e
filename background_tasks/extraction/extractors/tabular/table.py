"""Rows to text, shared by CSV and spreadsheets: cell formatting, header detection, ``TableWriter``.

The extracted text and the data profile (``analysis.profiles``) both decide
the header row with ``find_header_row``, so a table has the same columns in
search results and in its analysis.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from background_tasks.errors import ResourceLimitExceeded

#: Rows looked at to find the header row (title lines may sit above it).
HEADER_SCAN_ROWS = 10
#: Column names kept in metadata at most (the text has them all).
MAX_NAMES = 500
_NUMBER = re.compile(r"^[-+]?(\d[\d,. ]*)?(\.\d+)?([eE][-+]?\d+)?%?$")
_DATE_OR_TIME = re.compile(r"^\d{1,4}[-./]\d{1,2}[-./]\d{1,4}\b|^\d{1,2}:\d{2}(:\d{2})?\b")


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


def leading_rows(
    rows: Iterable[Sequence[Any]], trim: Callable[[Sequence[Any]], list[Any]]
) -> tuple[list[list[Any]], Iterator[Sequence[Any]]]:
    """The first ``HEADER_SCAN_ROWS`` non-empty rows (trimmed), where the header is looked for,
    and the iterator that goes on after them. Text extraction and data profiles share it, so
    both find the same header."""
    iterator = iter(rows)
    head: list[list[Any]] = []
    for row in iterator:
        cells = trim(row)
        if cells:
            head.append(cells)
            if len(head) >= HEADER_SCAN_ROWS:
                break
    return head, iterator


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
        head, iterator = leading_rows(rows, _trim)
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
