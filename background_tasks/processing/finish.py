"""The last step of processing a document: its text normalised and counted, chunked, and recorded.

Used by the pipeline (after extraction and inline OCR) and by the OCR
continuation (after the last page range), so a document is finished the same
way whichever queue finished it. Two calls, so that the caller can let go of
the raw extraction between them: large documents keep one copy of their text
at a time (raw, then normalised, then chunks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from background_tasks.extraction.extractors.base import Extraction, PageSpan
from background_tasks.processing.chunking import chunk_text, normalize_with_pages
from background_tasks.processing.textstats import detect_language, word_count
from background_tasks.settings import Settings
from background_tasks.storage.store import DocumentStore, InTransaction

NO_TEXT_WARNING = "no text found in the document"


@dataclass(frozen=True)
class Body:
    """A document's text ready to chunk: normalised, with its page spans, full metadata and warnings."""

    text: str
    pages: tuple[PageSpan, ...]
    metadata: dict[str, Any]
    warnings: tuple[str, ...]

    def page_count(self, file_type: str | None) -> int | None:
        """What the format declares, else for a PDF the pages that have text."""
        return self.metadata.get("page_count") or (len(self.pages) if self.pages and file_type == "pdf" else None)


@dataclass(frozen=True)
class Finished:
    """What was recorded."""

    chunks: int
    text_chars: int
    page_count: int | None
    duration_s: float


def normalise(extraction: Extraction, metadata: Mapping[str, Any], *, recount: bool = False) -> Body:
    """The extraction's text normalised (page spans moved along), with ``word_count`` and ``language``.

    ``metadata`` is everything the document will carry. Counts it already has
    are kept unless ``recount`` (the text changed since they were made).
    """
    text, pages = normalize_with_pages(extraction.text, extraction.pages)
    warnings = list(extraction.warnings)
    if not text.strip() and not warnings:
        warnings.append(NO_TEXT_WARNING)
    metadata = dict(metadata)
    if recount:
        metadata["word_count"] = word_count(text)
        metadata["language"] = detect_language(text)
    else:
        metadata.setdefault("word_count", word_count(text))
        if not metadata.get("language"):
            metadata["language"] = detect_language(text)
    return Body(text, pages, metadata, tuple(warnings))


def finish(
    store: DocumentStore,
    document_id: int,
    body: Body,
    settings: Settings,
    *,
    page_count: int | None,
    elapsed: Callable[[], float],
    in_transaction: InTransaction | None = None,
) -> Finished:
    """Chunk the body and record it as the document's result (its old chunks replaced).

    ``elapsed`` is asked once the chunks are made, so the recorded duration
    covers chunking; ``in_transaction`` runs in the transaction that records it.
    """
    chunks = chunk_text(body.text, settings.chunk_size, settings.chunk_overlap, body.pages)
    duration = elapsed()
    store.record_success(
        document_id,
        metadata=body.metadata,
        chunks=chunks,
        text_chars=len(body.text),
        page_count=page_count,
        warnings=list(body.warnings),
        duration_s=duration,
        in_transaction=in_transaction,
    )
    return Finished(len(chunks), len(body.text), page_count, duration)
