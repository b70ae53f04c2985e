"""The last step of processing a document: its text normalised and counted, chunked, and recorded.

Used by the pipeline (after extraction and inline OCR) and by the OCR
continuation (after the last page range), so a document is finished the same
way whichever queue finished it. Two calls, so that the caller can let go of
the raw extraction between them: large documents keep one copy of their text
at a time (raw, then normalised, then chunks). A small document's chunks are
embedded here and recorded with it, in its one transaction (``embed_now``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from background_tasks.extraction.extractors.base import Extraction, PageSpan
from background_tasks.processing.chunking import Chunk, chunk_text, normalize_with_pages
from background_tasks.processing.textstats import detect_language, word_count
from background_tasks.settings import Settings
from background_tasks.storage.store import DocumentStore, InTransaction
from background_tasks.storage.vectors import METADATA_KEY as EMBEDDING_KEY

log = logging.getLogger(__name__)

NO_TEXT_WARNING = "no text found in the document"
#: A document of at most this many chunks is embedded as it is recorded when the model is the built-in one
#: (numpy only, loaded once in 0.2 s, ~1 ms for a few chunks): an embedding task of its own (publish,
#: ledger, results, history, three transactions) would cost more than processing it, and tiny documents
#: come by the thousand. Larger ones, and other models, are embedded on the analysis queue.
INLINE_EMBED_MAX_CHUNKS = 16


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
    """What was recorded (``metadata`` names the embedding model when the chunks were embedded with it)."""

    chunks: int
    text_chars: int
    page_count: int | None
    duration_s: float
    metadata: dict[str, Any]


def embed_now(chunks: Sequence[Chunk], settings: Settings) -> tuple[dict[str, Any], list[bytes]] | None:
    """A small document's chunk embeddings with the built-in model: (what ``metadata["embedding"]`` says, one
    vector per chunk); None when it is not small, embeddings are off or another model is set, or it fails."""
    if not settings.embeddings_enabled or settings.embed_model or not 0 < len(chunks) <= INLINE_EMBED_MAX_CHUNKS:
        return None
    try:
        from background_tasks.analysis.embeddings import configured_embedder
        from background_tasks.storage.vectors import to_bytes

        embedder = configured_embedder(settings)
        matrix = embedder.embed([chunk.text for chunk in chunks])
    except Exception as exc:  # the analysis queue will embed it instead
        log.warning("embedding %d chunk(s) as they are recorded failed: %s", len(chunks), exc)
        return None
    info = embedder.info
    model = {"model": info.name, "version": info.version, "dim": info.dim, "key": info.key}
    return model, [to_bytes(vector) for vector in matrix]


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

    ``elapsed`` is asked once the chunks are made (and a small document's embedded), so the
    recorded duration covers them; ``in_transaction`` runs in the transaction that records it.
    """
    chunks = chunk_text(body.text, settings.chunk_size, settings.chunk_overlap, body.pages)
    embedded = embed_now(chunks, settings)
    metadata = body.metadata if embedded is None else {**body.metadata, EMBEDDING_KEY: embedded[0]}
    duration = elapsed()
    store.record_success(
        document_id,
        metadata=metadata,
        chunks=chunks,
        text_chars=len(body.text),
        page_count=page_count,
        warnings=list(body.warnings),
        duration_s=duration,
        in_transaction=in_transaction,
        embeddings=embedded,
    )
    return Finished(len(chunks), len(body.text), page_count, duration, metadata)
