"""What every extractor is and returns.

An extractor turns one file of its format family into plain text plus the
metadata the format carries. It never writes anywhere, never touches the
network, and raises only ``background_tasks.errors`` types for bad input.
Optional third-party libraries are imported inside ``extract`` so that a
missing one fails only the files that need it (``MissingDependency``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from background_tasks.errors import ResourceLimitExceeded
from background_tasks.extraction.tesseract import OcrOptions

if TYPE_CHECKING:
    from background_tasks.settings import Settings


class NestingGuard:
    """Stops a recursive walk of document elements at ``limit`` levels, so a nesting bomb costs
    no more than the limit (and never Python's recursion limit, which would crash the parser).

    ``with guard:`` is one level deeper for the block. A plain ``__enter__``/``__exit__`` pair, not
    ``contextlib.contextmanager``: it runs once per element of large documents.
    """

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.depth = 0

    def __enter__(self) -> None:
        if self.depth >= self.limit:
            raise ResourceLimitExceeded(f"{self.what} nested deeper than {self.limit} levels")
        self.depth += 1

    def __exit__(self, *_: object) -> None:
        self.depth -= 1


@dataclass(frozen=True)
class InnerOcr:
    """OCR of the pictures an extractor finds inside a file (an e-mail's image attachments).

    The pipeline OCRs a file's own pages after extraction; pictures inside a
    container are OCR'd by its extractor, in the same isolated child, so they
    share the file's time limit: at most ``max_images`` pictures (pages) and
    ``budget_s`` seconds of Tesseract per file.
    """

    options: OcrOptions
    max_images: int = 10
    budget_s: float = 60.0


@dataclass(frozen=True)
class Limits:
    """Resource limits every extractor must honour."""

    max_decompressed_bytes: int = 500 * 1024 * 1024
    max_nesting: int = 200
    max_text_chars: int = 200 * 1024 * 1024
    max_line_chars: int = 10 * 1024 * 1024
    #: None: pictures inside files are not OCR'd (OCR turned off, or a caller that did not ask)
    inner_ocr: InnerOcr | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        inner_ocr = None
        if settings.ocr_enabled:
            # half the per-file limit: the file's own parsing keeps the other half
            budget = settings.extract_timeout / 2
            inner_ocr = InnerOcr(OcrOptions.from_settings(settings), settings.ocr_max_pages_per_task, budget)
        return cls(
            max_decompressed_bytes=settings.max_decompressed_bytes,
            max_nesting=settings.max_nesting,
            max_text_chars=settings.max_text_chars,
            inner_ocr=inner_ocr,
        )


@dataclass(frozen=True)
class PageSpan:
    """Characters ``start:end`` of ``Extraction.text`` belong to page ``number`` (1-based)."""

    number: int
    start: int
    end: int


@dataclass(frozen=True)
class Extraction:
    """The result of extracting one file."""

    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    pages: tuple[PageSpan, ...] = ()
    warnings: tuple[str, ...] = ()


class TextBuilder:
    """Joins page (or part) texts and records each page's character span."""

    def __init__(self, separator: str = "\n\n") -> None:
        self._parts: list[str] = []
        self._pages: list[PageSpan] = []
        self._length = 0
        self._sep = separator

    def add(self, text: str, page: int | None = None) -> None:
        if not text:
            return
        if self._parts:
            self._parts.append(self._sep)
            self._length += len(self._sep)
        start = self._length
        self._parts.append(text)
        self._length += len(text)
        if page is not None:
            self._pages.append(PageSpan(page, start, self._length))

    @property
    def length(self) -> int:
        return self._length

    def text(self) -> str:
        return "".join(self._parts)

    def pages(self) -> tuple[PageSpan, ...]:
        return tuple(self._pages)


class Extractor(ABC):
    """One format family. Subclasses declare what they accept."""

    #: short name recorded as ``file_type`` family, e.g. "pdf", "spreadsheet"
    name: ClassVar[str]
    #: lower-case extensions with the dot, e.g. frozenset({".pdf"})
    extensions: ClassVar[frozenset[str]]
    #: MIME types this extractor handles (used with content detection)
    mime_types: ClassVar[frozenset[str]] = frozenset()
    #: False for pure-Python parsers of plain text that cannot hang or crash the process; small
    #: files of such formats skip the parser process (sending the text back costs more than the parse).
    needs_isolation: ClassVar[bool] = True

    def accepts(self, extension: str, mime_type: str | None = None) -> bool:
        return extension.lower() in self.extensions or (mime_type is not None and mime_type in self.mime_types)

    @abstractmethod
    def extract(self, path: Path, limits: Limits) -> Extraction:
        """Full text and metadata. Raises MidasError subclasses for bad input."""

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """Document metadata, quickly. Override where the format allows skipping the text."""
        return dict(self.extract(path, limits).metadata)


#: The registry's ``extractor_for(extension, mime_type)``, handed to container extractors for what they hold.
ExtractorLookup = Callable[[str, str | None], Extractor]


class ContainerExtractor(Extractor):
    """A format whose files hold other files: e-mail attachments, objects embedded in RTF and Word documents.

    The registry hands in its ``extractor_for`` (a container module must not
    import the registry, which imports it); without it the contained files are
    listed, not read. ``depth`` counts how deep inside other files this one
    is, so a file embedded in itself over and over ends at a fixed depth.
    """

    def __init__(self, extractor_for: ExtractorLookup | None = None) -> None:
        self.extractor_for = extractor_for

    def extract(self, path: Path, limits: Limits) -> Extraction:
        return self.extract_nested(path, limits, 0)

    @abstractmethod
    def extract_nested(self, path: Path, limits: Limits, depth: int) -> Extraction:
        """``extract`` for a file found ``depth`` levels inside other files."""
