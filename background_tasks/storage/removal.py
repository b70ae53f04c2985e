"""Deleting one document's rows: the document, the paths it was seen at, its chunks (and with them
their full-text entries), their embeddings, its OCR pages and its analyses.

Only database rows: which files MIDAS may remove with it is ``processing.manage``'s business.
Chunks go in transactions of ``CHUNK_WRITE_BATCH`` (each with its embeddings; SQLite's FTS5
triggers remove their search entries, PostgreSQL's ``tsv`` column goes with the row), so a long
document never holds SQLite's one write lock for long; the rest goes in one last transaction.
The rows are deleted explicitly rather than left to ``ON DELETE CASCADE``, so the counts are
known and nothing depends on SQLite's ``foreign_keys`` pragma.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, or_, select

from background_tasks.storage.db import read_scope, session_scope
from background_tasks.storage.documents import CHUNK_WRITE_BATCH
from background_tasks.storage.models import (
    AnalysisRow,
    ChunkEmbeddingRow,
    ChunkRow,
    DocumentPathRow,
    DocumentRow,
    OcrPageRow,
)
from background_tasks.storage.values import clean_path, db_call, path_hash


@dataclass(frozen=True)
class RemovedRows:
    """What deleting one document removed from the database."""

    document_id: int
    sha256: str | None
    status: str
    paths: tuple[str, ...]
    chunks: int
    embeddings: int
    ocr_pages: int
    analyses: int


def _count(result: object) -> int:
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


@db_call
def delete_document(url: str, document_id: int, batch: int = CHUNK_WRITE_BATCH) -> RemovedRows | None:
    """Delete one document and everything recorded about it; None when there is no such document."""
    with read_scope(url) as s:
        found = s.execute(
            select(DocumentRow.sha256, DocumentRow.status).where(DocumentRow.id == document_id)
        ).one_or_none()
    if found is None:
        return None
    chunks = embeddings = 0
    while True:
        with read_scope(url) as s:
            ids = list(
                s.execute(
                    select(ChunkRow.id).where(ChunkRow.document_id == document_id).order_by(ChunkRow.id).limit(batch)
                ).scalars()
            )
        if len(ids) < batch:
            break  # the rest goes with the row
        with session_scope(url) as s:
            embeddings += _count(s.execute(delete(ChunkEmbeddingRow).where(ChunkEmbeddingRow.chunk_id.in_(ids))))
            chunks += _count(s.execute(delete(ChunkRow).where(ChunkRow.id.in_(ids))))
    with session_scope(url) as s:
        row = s.execute(
            select(DocumentRow.sha256, DocumentRow.status).where(DocumentRow.id == document_id)
        ).one_or_none()
        if row is None:  # deleted by someone else meanwhile
            return None
        paths = tuple(
            s.execute(
                select(DocumentPathRow.path)
                .where(DocumentPathRow.document_id == document_id)
                .order_by(DocumentPathRow.last_seen.desc(), DocumentPathRow.id.desc())
            ).scalars()
        )
        embeddings += _count(s.execute(delete(ChunkEmbeddingRow).where(ChunkEmbeddingRow.document_id == document_id)))
        chunks += _count(s.execute(delete(ChunkRow).where(ChunkRow.document_id == document_id)))
        ocr = _count(s.execute(delete(OcrPageRow).where(OcrPageRow.document_id == document_id)))
        # an analysis made before the file was processed is linked by content only: it goes too
        linked = AnalysisRow.document_id == document_id
        if row.sha256:
            linked = or_(linked, AnalysisRow.sha256 == row.sha256)
        analyses = _count(s.execute(delete(AnalysisRow).where(linked)))
        s.execute(delete(DocumentPathRow).where(DocumentPathRow.document_id == document_id))
        s.execute(delete(DocumentRow).where(DocumentRow.id == document_id))
    return RemovedRows(document_id, row.sha256, row.status, paths, chunks, embeddings, ocr, analyses)


@db_call
def paths_of_other_documents(url: str, document_id: int, paths: list[str]) -> set[str]:
    """Those of ``paths`` at which a document other than ``document_id`` was seen too."""
    if not paths:
        return set()
    by_hash = {path_hash(clean_path(p)): p for p in paths}
    with read_scope(url) as s:
        hashes = s.execute(
            select(DocumentPathRow.path_hash).where(
                DocumentPathRow.path_hash.in_(list(by_hash)), DocumentPathRow.document_id != document_id
            )
        ).scalars()
        return {by_hash[h] for h in hashes}
