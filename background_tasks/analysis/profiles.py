"""Profiles of tabular data (CSV, XLSX, XLS, JSON records), read in bounded chunks.

Per table (a CSV file, a sheet, a list of records): row and column counts,
and per column its type, missing values, numeric summary (min, max, mean,
standard deviation, quartiles), most frequent values and, when the values
are dates, their range. ``table_readers`` streams the files, ``columns``
keeps the running profiles (exact moments, sampled quartiles beyond
``QUANTILE_SAMPLE`` numbers, pruned value counts beyond ``MAX_TRACKED_VALUES``),
so memory stays bounded whatever the file size. Everything returned is plain JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from background_tasks.analysis.columns import (
    DATE_SHARE,
    MAX_COLUMNS,
    MAX_TRACKED_VALUES,
    QUANTILE_SAMPLE,
    TOP_VALUES,
    ColumnProfile,
    TableProfile,
)
from background_tasks.analysis.table_readers import (
    CHUNK_ROWS,
    csv_tables,
    json_tables,
    row_frames,
    xls_tables,
    xlsx_tables,
)
from background_tasks.errors import (
    CorruptDocument,
    EmptyDocument,
    MidasError,
    ResourceLimitExceeded,
    UnsupportedFileType,
)
from background_tasks.extraction.extractors.base import Limits

DATA_EXTENSIONS = frozenset({".csv", ".xlsx", ".xlsm", ".xls", ".json", ".jsonl", ".ndjson"})


def profile_file(path: str, extension: str, limits: Limits) -> dict[str, Any]:
    """Profile every table of a data file. Runs in an isolated child; returns plain JSON."""
    file = Path(path)
    extension = extension.lower()
    notes: list[str] = []
    if extension == ".csv":
        tables = csv_tables(file, limits, notes)
    elif extension in (".xlsx", ".xlsm"):
        tables = xlsx_tables(file, limits, notes)
    elif extension == ".xls":
        tables = xls_tables(file, limits, notes)
    elif extension in (".json", ".jsonl", ".ndjson"):
        tables = json_tables(file, extension, limits, notes)
    else:
        raise UnsupportedFileType(f"{file.name}: data analysis handles CSV, XLSX, XLS and JSON records")
    results = []
    for name, source in tables:
        table = TableProfile(name)
        frames = source if extension in (".csv", ".json", ".jsonl", ".ndjson") else row_frames(source, table)
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


__all__ = [
    "CHUNK_ROWS",
    "DATA_EXTENSIONS",
    "DATE_SHARE",
    "MAX_COLUMNS",
    "MAX_TRACKED_VALUES",
    "QUANTILE_SAMPLE",
    "TOP_VALUES",
    "ColumnProfile",
    "TableProfile",
    "profile_file",
]
