"""``.csv``: encoding detected, delimiter sniffed, every row through ``TableWriter``."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from background_tasks.errors import CorruptDocument, EmptyDocument
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits
from background_tasks.extraction.extractors.encoding import split_long_lines
from background_tasks.extraction.extractors.tabular.table import MAX_NAMES, TableWriter, iter_lines
from background_tasks.extraction.extractors.text import load_text

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
            "columns": list(header)[:MAX_NAMES] if header else [],
            "column_count": max(writer.columns, len(header or ())),
            "row_count": writer.data_rows,
        }
        return Extraction(text=body, metadata=metadata, warnings=tuple(warnings))
