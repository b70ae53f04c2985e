"""What XLSX and XLS share: sheets rendered into one text with page spans, magic bytes, OLE checks."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from background_tasks.errors import EmptyDocument
from background_tasks.extraction.extractors.base import Extraction, Limits, PageSpan, TextBuilder
from background_tasks.extraction.extractors.encoding import split_long_lines
from background_tasks.extraction.extractors.ole import summary_metadata
from background_tasks.extraction.extractors.tabular.table import MAX_NAMES, TableWriter

log = logging.getLogger(__name__)

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK"


class Workbook:
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
            info["header"] = [c for c in writer.header if c][:MAX_NAMES]
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


def sniff_magic(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(8)


def ole_is_encrypted(path: Path, limits: Limits) -> bool:
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


def ole_summary(path: Path) -> dict[str, Any]:
    """Title, authors and dates from an OLE file's SummaryInformation (olefile comes with extract-msg).

    Read by ``ole.summary_information`` with bounds checks, never olefile's
    ``get_metadata``: that trusts vector counts and can loop on a hostile file.
    """
    try:
        import olefile
    except ImportError:
        return {}
    try:
        with olefile.OleFileIO(str(path)) as ole:
            return summary_metadata(ole, path.name)
    except Exception as exc:  # metadata is optional; the workbook itself may still be readable
        log.debug("no OLE summary for %s: %s", path.name, exc)
        return {}
