"""The extraction step: the registered extractor run on a working copy, in the parser process with
the per-file time limit (in-process for small files of formats that need no isolation).

Used by the pipeline and by the OCR continuation; neither imports the other for it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from background_tasks.extraction.extractors import Extraction, Limits, PageSpan, extractor_for
from background_tasks.extraction.isolation import run_isolated
from background_tasks.processing.textstats import load_language_profiles
from background_tasks.settings import Settings

#: Parser libraries imported once in the worker's main process, so every forked pool process and
#: parser process inherits them (a parser process also keeps what it imports, for its next files).
PRELOAD_MODULES = (
    "pypdf",
    "pypdfium2",  # PDF page text (and OCR rendering): importing it costs ~50 ms
    "docx",
    "openpyxl",
    "xlrd",
    "olefile",
    "extract_msg",
    "odf.opendocument",
    "striprtf.striprtf",
    "lxml.etree",
    "lxml.html",
    "charset_normalizer",
    "defusedxml",
)


def preload_parsers() -> list[str]:
    """Import the parser libraries (and langdetect's profiles) now; returns what could not be loaded."""
    missing = []
    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # an optional library: its files fail with a clear error when used
            missing.append(name)
    if not load_language_profiles():
        missing.append("langdetect")
    return missing


def _extract_payload(path: str, extension: str, mime_type: str | None, limits: Limits) -> dict[str, Any]:
    extraction = extractor_for(extension, mime_type).extract(Path(path), limits)
    return {
        "text": extraction.text,
        "metadata": dict(extraction.metadata),
        "pages": [[p.number, p.start, p.end] for p in extraction.pages],
        "warnings": list(extraction.warnings),
    }


def metadata_payload(path: str, extension: str, mime_type: str | None, limits: Limits) -> dict[str, Any]:
    return extractor_for(extension, mime_type).metadata(Path(path), limits)


#: Files of formats whose extractor ``needs_isolation`` is False run in-process below this size.
IN_PROCESS_MAX_BYTES = 1024 * 1024


def extract(path: Path, extension: str, mime_type: str | None, settings: Settings, label: str) -> Extraction:
    """Run the registered extractor on ``path`` in the parser process with the per-file time limit."""
    extractor = extractor_for(extension, mime_type)
    payload = run_isolated(
        _extract_payload,
        (str(path), extension, mime_type, Limits.from_settings(settings)),
        timeout=settings.extract_timeout,
        label=label,
        isolate=extractor.needs_isolation or path.stat().st_size > IN_PROCESS_MAX_BYTES,
    )
    return Extraction(
        text=payload["text"],
        metadata=payload["metadata"],
        pages=tuple(PageSpan(*p) for p in payload["pages"]),
        warnings=tuple(payload["warnings"]),
    )
