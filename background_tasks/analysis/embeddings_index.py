"""The embedding step: a processed document's chunks embedded in batches, after it is stored.

It runs on the analysis queue (``analysis_tasks.embed_document``), so a document is
keyword-searchable as soon as it is recorded and semantically searchable moments
later. Only chunks the configured model has not embedded are embedded, so running
it twice, or after the model changed (``python -m background_tasks embeddings
rebuild``), does just the missing work.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from background_tasks.analysis.embeddings import Embedder, configured_embedder
from background_tasks.storage import vectors

log = logging.getLogger(__name__)

#: chunks embedded and written per batch (one transaction each)
BATCH = 256


@dataclass(frozen=True)
class EmbedResult:
    status: str  # "success", "skipped"
    document_id: int
    model: str | None = None
    embedded: int = 0
    seconds: float = 0.0
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def embed_chunks(url: str, document_id: int, embedder: Embedder, batch: int = BATCH) -> int:
    """Embed the chunks of ``document_id`` that ``embedder``'s model lacks; returns how many were written."""
    info = embedder.info
    todo = vectors.chunks_to_embed(url, document_id, info.key)
    written = 0
    for start in range(0, len(todo), batch):
        part = todo[start : start + batch]
        matrix = embedder.embed([text for _, text in part])
        blobs = [(cid, vectors.to_bytes(v)) for (cid, _), v in zip(part, matrix, strict=True)]
        written += vectors.save(url, document_id, info.key, info.dim, blobs)
    if written:
        vectors.record_model(
            url, document_id, {"model": info.name, "version": info.version, "dim": info.dim, "key": info.key}
        )
    return written


def embed_document(document_id: int, settings: Any, url: str) -> EmbedResult:
    """The task's work: skipped when embeddings are off (``MIDAS_EMBEDDINGS=false``)."""
    if not settings.embeddings_enabled:
        return EmbedResult("skipped", document_id, reason="embeddings are off (MIDAS_EMBEDDINGS=false)")
    started = time.monotonic()
    embedder = configured_embedder(settings)
    written = embed_chunks(url, document_id, embedder)
    seconds = round(time.monotonic() - started, 4)
    log.info("document %s: %d chunk(s) embedded by %s in %.2f s", document_id, written, embedder.info.key, seconds)
    return EmbedResult("success", document_id, embedder.info.key, written, seconds)


def documents_to_rebuild(settings: Any, url: str) -> tuple[str, list[int]]:
    """(model key, documents with chunks the configured model has not embedded)."""
    key = configured_embedder(settings).info.key
    return key, vectors.documents_to_embed(url, key)
