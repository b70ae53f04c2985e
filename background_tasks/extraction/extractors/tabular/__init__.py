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

Modules: ``table`` (cells, header detection, ``TableWriter``), ``delimited``
(CSV), ``workbook`` (what both spreadsheet formats share), ``xlsx_parts``
(SpreadsheetML read from the package), ``spreadsheets`` (the XLSX and XLS
extractors). The public names are re-exported here.
"""

from __future__ import annotations

from background_tasks.extraction.extractors.tabular.delimited import CsvExtractor, sniff_delimiter
from background_tasks.extraction.extractors.tabular.spreadsheets import XlsExtractor, XlsxExtractor
from background_tasks.extraction.extractors.tabular.table import (
    HEADER_SCAN_ROWS,
    TableWriter,
    find_header_row,
    format_value,
    is_header_row,
    iter_lines,
    leading_rows,
    looks_like_value,
)

__all__ = [
    "HEADER_SCAN_ROWS",
    "CsvExtractor",
    "TableWriter",
    "XlsExtractor",
    "XlsxExtractor",
    "find_header_row",
    "format_value",
    "is_header_row",
    "iter_lines",
    "leading_rows",
    "looks_like_value",
    "sniff_delimiter",
]
