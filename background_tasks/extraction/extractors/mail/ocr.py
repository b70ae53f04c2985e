"""OCR of an e-mail's picture attachments (images, scanned PDFs) within the message's own limits.

A photographed receipt or a scanned letter sent as an attachment is often all
the text a message has. The pipeline OCRs only a file's own pages, so the
mail extractor OCRs its attachments' pages without a text layer itself, in
the same isolated child: at most ``InnerOcr.max_images`` pages and
``InnerOcr.budget_s`` seconds of Tesseract per message, attached messages
included (they share the outer message's ``AttachmentOcr``), each page at
most ``MIDAS_OCR_PAGE_TIMEOUT``. Pictures over the pixel limits are refused
by the image reader before any OCR. Without Tesseract, or with OCR turned
off, attachments are listed as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path

from background_tasks.errors import MidasError, MissingDependency
from background_tasks.extraction.extractors.base import Extraction, InnerOcr, Limits
from background_tasks.extraction.extractors.pdf import is_text_layer_warning
from background_tasks.extraction.tesseract import ocr_document_pages, resolve_languages

logger = logging.getLogger(__name__)

#: a page is started only while at least this many seconds of the budget are left
MIN_PAGE_SECONDS = 2.0

_CURRENT: ContextVar[AttachmentOcr | None] = ContextVar("midas_attachment_ocr", default=None)


class AttachmentOcr:
    """The OCR budget of one message (and the messages attached to it)."""

    def __init__(self, settings: InnerOcr | None) -> None:
        self.settings = settings
        self.started = time.monotonic()
        self.pages_left = settings.max_images if settings else 0
        self.languages: str | None = None
        self.unavailable: str | None = None  # why OCR cannot run at all (said once per message)

    def read(self, display: str, target: Path, extension: str, extraction: Extraction) -> tuple[Extraction, list[str]]:
        """The attachment's extraction with its pages without text OCR'd, and warnings for the message."""
        pages = [int(p) for p in extraction.metadata.get("pages_without_text") or ()]
        if self.settings is None or not pages:
            return extraction, []
        notes: list[str] = []
        if not self._ready(notes):
            return extraction, notes
        left = self.settings.budget_s - (time.monotonic() - self.started)
        todo = pages[: self.pages_left]
        if not todo or left < MIN_PAGE_SECONDS:
            return extraction, [f"attachment {display!r} not OCR'd: the message's OCR limit was reached"]
        options = replace(
            self.settings.options,
            languages=self.languages or self.settings.options.languages,
            page_timeout=min(self.settings.options.page_timeout, left),
        )
        try:
            payload = ocr_document_pages(str(target), extension, todo, options, left)
        except MidasError as exc:
            return extraction, [f"attachment {display!r} not OCR'd: {exc.message}"]
        self.pages_left -= len(payload["pages"])
        done = [r for r in payload["pages"] if "error" not in r]
        for failed in (r for r in payload["pages"] if "error" in r):
            notes.append(f"attachment {display!r}: page {failed['page']}: OCR failed ({failed['error']})")
        if len(done) < len(pages):
            notes.append(f"attachment {display!r}: {len(done)} of {len(pages)} page(s) without text OCR'd")
        if not done:
            return extraction, notes
        words = sum(int(r.get("words") or 0) for r in done)
        if words:
            notes.append(f"attachment {display!r}: OCR read {words} words; recognised text may contain errors")
        else:
            notes.append(f"attachment {display!r}: OCR found no text")
        texts = [str(r.get("text") or "").strip() for r in done]
        text = "\n\n".join(t for t in (extraction.text.strip(), *texts) if t)
        warnings = tuple(w for w in extraction.warnings if not is_text_layer_warning(w))
        return Extraction(text, extraction.metadata, extraction.pages, warnings), notes

    def _ready(self, notes: list[str]) -> bool:
        """Tesseract and a language are there (found out once per message)."""
        if self.unavailable is None and self.languages is None and self.settings is not None:
            options = self.settings.options
            try:
                self.languages, missing = resolve_languages(options.languages, options.command)
                notes.extend(missing)
            except MissingDependency as exc:
                self.unavailable = exc.message
                notes.append(f"attachments not OCR'd: {exc.message}")
        return self.unavailable is None


@contextmanager
def attachment_ocr(limits: Limits) -> Iterator[AttachmentOcr]:
    """The OCR budget of the message being read: the enclosing message's when this one is attached to it."""
    current = _CURRENT.get()
    if current is not None:
        yield current
        return
    fresh = AttachmentOcr(limits.inner_ocr)
    token = _CURRENT.set(fresh)
    try:
        yield fresh
    finally:
        _CURRENT.reset(token)
