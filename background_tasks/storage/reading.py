"""Reading documents back: one or a page of them with their paths, their chunks, counts and stats.

Only plain dicts leave this module (never ORM rows), with times in UTC; every
read runs in a read-only session, so on SQLite it never takes the write lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from background_tasks.storage.db import read_scope
from background_tasks.storage.models import ChunkRow, DocumentPathRow, DocumentRow
from background_tasks.storage.task_figures import document_counts
from background_tasks.storage.values import as_utc, clean_path, db_call, file_type_of, path_hash

STATUSES = ("processing", "success", "failed", "rejected")


def _doc_dict(row: DocumentRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "sha256": row.sha256,
        "file_type": row.file_type,
        "mime_type": row.mime_type,
        "size_bytes": row.size_bytes,
        "status": row.status,
        "error_type": row.error_type,
        "error": row.error,
        "metadata": dict(row.metadata_json or {}),
        "warnings": list(row.warnings_json or []),
        "text_chars": row.text_chars,
        "page_count": row.page_count,
        "chunk_count": row.chunk_count,
        "attempts": row.attempts,
        "created_at": as_utc(row.created_at),
        "updated_at": as_utc(row.updated_at),
        "started_at": as_utc(row.started_at),
        "finished_at": as_utc(row.finished_at),
        "duration_s": row.duration_s,
        "task_id": row.task_id,
    }


def _paths_of(s: Session, ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    rows = s.execute(
        select(DocumentPathRow)
        .where(DocumentPathRow.document_id.in_(ids))
        .order_by(DocumentPathRow.last_seen.desc(), DocumentPathRow.id.desc())
    ).scalars()
    for p in rows:
        out[p.document_id].append(
            {"path": p.path, "first_seen": as_utc(p.first_seen), "last_seen": as_utc(p.last_seen)}
        )
    return out


def _with_paths(s: Session, docs: Sequence[DocumentRow]) -> list[dict[str, Any]]:
    paths = _paths_of(s, [d.id for d in docs])
    out = []
    for d in docs:
        item = _doc_dict(d)
        item["paths"] = paths[d.id]
        item["path"] = paths[d.id][0]["path"] if paths[d.id] else None
        out.append(item)
    return out


@db_call
def get_document(url: str, document_id: int) -> dict[str, Any] | None:
    """Everything known about one document, with all its paths (most recent first)."""
    with read_scope(url) as s:
        doc = s.get(DocumentRow, document_id)
        return _with_paths(s, [doc])[0] if doc else None


@db_call
def document_id_by_sha(url: str, sha256: str) -> int | None:
    """The id of the document holding this content, if one does."""
    with read_scope(url) as s:
        return s.execute(select(DocumentRow.id).where(DocumentRow.sha256 == sha256)).scalar_one_or_none()


@db_call
def list_documents(
    url: str, limit: int = 50, offset: int = 0, status: str | None = None, file_type: str | None = None
) -> list[dict[str, Any]]:
    """Documents, newest first, each with ``path`` (most recent) and ``paths``."""
    stmt = select(DocumentRow).order_by(DocumentRow.created_at.desc(), DocumentRow.id.desc())
    if status:
        stmt = stmt.where(DocumentRow.status == status)
    if file_type:
        stmt = stmt.where(DocumentRow.file_type == file_type_of(file_type))
    stmt = stmt.limit(max(0, int(limit))).offset(max(0, int(offset)))
    with read_scope(url) as s:
        return _with_paths(s, list(s.execute(stmt).scalars()))


@db_call
def count_documents(url: str, status: str | None = None, file_type: str | None = None) -> int:
    stmt = select(func.count(DocumentRow.id))
    if status:
        stmt = stmt.where(DocumentRow.status == status)
    if file_type:
        stmt = stmt.where(DocumentRow.file_type == file_type_of(file_type))
    with read_scope(url) as s:
        return int(s.execute(stmt).scalar_one())


@db_call
def get_chunks(url: str, document_id: int, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """The chunks of one document, in order; a page of them from ``offset`` when ``limit`` is given."""
    stmt = select(ChunkRow).where(ChunkRow.document_id == document_id).order_by(ChunkRow.chunk_index)
    if limit is not None:
        stmt = stmt.limit(max(0, int(limit)))
    if offset:
        stmt = stmt.offset(max(0, int(offset)))
    with read_scope(url) as s:
        rows = s.execute(stmt).scalars()
        return [
            {
                "chunk_index": c.chunk_index,
                "text": c.text,
                "start_char": c.start_char,
                "end_char": c.end_char,
                "page": c.page,
            }
            for c in rows
        ]


@db_call
def find_by_path(url: str, path: Any) -> list[dict[str, Any]]:
    """Documents seen at ``path``, most recently seen first (a file edited over time has several)."""
    stored = clean_path(path)
    with read_scope(url) as s:
        docs = list(
            s.execute(
                select(DocumentRow)
                .join(DocumentPathRow, DocumentPathRow.document_id == DocumentRow.id)
                .where(DocumentPathRow.path_hash == path_hash(stored))
                .order_by(DocumentPathRow.last_seen.desc(), DocumentRow.id.desc())
            ).scalars()
        )
        return _with_paths(s, docs)


@db_call
def stats(url: str) -> dict[str, Any]:
    """Counts per status and per file type, with chunk totals."""
    by_status: dict[str, int] = {}
    by_type: dict[str, dict[str, int]] = {}
    for count in document_counts(url):
        by_status[count.status] = by_status.get(count.status, 0) + count.documents
        entry = by_type.setdefault(count.file_type or "unknown", {"documents": 0, "chunks": 0})
        entry["documents"] += count.documents
        entry["chunks"] += count.chunks
        entry[count.status] = entry.get(count.status, 0) + count.documents
    with read_scope(url) as s:
        total_chunks = int(s.execute(select(func.count(ChunkRow.id))).scalar_one())
    return {
        "documents": sum(by_status.values()),
        "chunks": total_chunks,
        "by_status": {status: by_status.get(status, 0) for status in STATUSES},
        "by_file_type": by_type,
    }
