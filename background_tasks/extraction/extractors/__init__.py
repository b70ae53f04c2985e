"""The explicit, ordered extractor registry.

Order matters: the first extractor that accepts a file's detected type wins.
Each module imports only the standard library at import time, so building the
registry is cheap and a missing optional library fails only its own files.
"""

from __future__ import annotations

from functools import lru_cache

from background_tasks.errors import UnsupportedFileType
from background_tasks.extraction.extractors.base import (
    ContainerExtractor,
    Extraction,
    Extractor,
    Limits,
    PageSpan,
    TextBuilder,
)
from background_tasks.extraction.extractors.html import HtmlExtractor
from background_tasks.extraction.extractors.image import ImageExtractor
from background_tasks.extraction.extractors.mail import EmlExtractor, MsgExtractor
from background_tasks.extraction.extractors.opendocument import OdtExtractor
from background_tasks.extraction.extractors.pdf import PdfExtractor
from background_tasks.extraction.extractors.rtf import RtfExtractor
from background_tasks.extraction.extractors.structured import JsonExtractor, XmlExtractor
from background_tasks.extraction.extractors.tabular import CsvExtractor, XlsExtractor, XlsxExtractor
from background_tasks.extraction.extractors.text import LogExtractor, MarkdownExtractor, PlainTextExtractor
from background_tasks.extraction.extractors.word import DocExtractor, DocxExtractor

REGISTRY: tuple[type[Extractor], ...] = (
    PdfExtractor,
    DocxExtractor,
    DocExtractor,
    OdtExtractor,
    RtfExtractor,
    XlsxExtractor,
    XlsExtractor,
    CsvExtractor,
    MsgExtractor,
    EmlExtractor,
    HtmlExtractor,
    XmlExtractor,
    JsonExtractor,
    MarkdownExtractor,
    LogExtractor,
    PlainTextExtractor,
    ImageExtractor,
)


@lru_cache(maxsize=1)
def all_extractors() -> tuple[Extractor, ...]:
    """One instance per registered class; containers (mail, RTF, .doc) get ``extractor_for`` for what they hold."""
    return tuple(cls(extractor_for) if issubclass(cls, ContainerExtractor) else cls() for cls in REGISTRY)


SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(ext for cls in REGISTRY for ext in cls.extensions)


def extractor_for(extension: str, mime_type: str | None = None) -> Extractor:
    """The first registered extractor for a MIME type (preferred) or an extension."""
    extractors = all_extractors()
    if mime_type:
        for extractor in extractors:
            if mime_type in extractor.mime_types:
                return extractor
    for extractor in extractors:
        if extension.lower() in extractor.extensions:
            return extractor
    raise UnsupportedFileType(
        f"no extractor for {extension or 'files without extension'} ({mime_type or 'unknown type'})"
    )


__all__ = [
    "REGISTRY",
    "SUPPORTED_EXTENSIONS",
    "Extraction",
    "Extractor",
    "Limits",
    "PageSpan",
    "TextBuilder",
    "all_extractors",
    "extractor_for",
]
