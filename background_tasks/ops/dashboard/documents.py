"""The Documents section: pages of documents, the store's figures, search with safe highlights, chunks,
and one document's actions (delete, process again, its original: ``processing.manage``).

Every read goes through the document store (``storage.store.DocumentStore``).
"""

from __future__ import annotations

import html
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from background_tasks.ops.dashboard.common import human_size, utc_series
from background_tasks.processing import manage
from background_tasks.processing.manage import DeleteReport
from background_tasks.processing.origin import describe_origin
from background_tasks.settings import Settings
from background_tasks.storage.schema import create_schema
from background_tasks.storage.store import DocumentStore

_MARK_START = "\ue010"
_MARK_END = "\ue011"

DOCUMENT_COLUMNS = ("id", "name", "type", "size", "chunks", "status", "error", "created", "path")


def documents_page(
    url: str, page: int = 1, page_size: int = 50, status: str | None = None, file_type: str | None = None
) -> tuple[pd.DataFrame, int]:
    """One page of documents, newest first, and the number matching."""
    create_schema(url)
    store = DocumentStore(url)
    page_size = max(1, min(int(page_size), 500))
    docs = store.list_documents(
        limit=page_size, offset=(max(1, int(page)) - 1) * page_size, status=status, file_type=file_type
    )
    total = store.count_documents(status=status, file_type=file_type)
    rows = [
        {
            "id": d["id"],
            "name": Path(d["path"]).name if d.get("path") else "",
            "type": d.get("file_type") or "",
            "size": human_size(d.get("size_bytes")),
            "chunks": d.get("chunk_count") or 0,
            "status": d["status"],
            "error": d.get("error") or "",
            "created": d.get("created_at"),
            "path": d.get("path") or "",
        }
        for d in docs
    ]
    frame = pd.DataFrame(rows, columns=list(DOCUMENT_COLUMNS))
    frame["created"] = utc_series(frame["created"])
    return frame, total


def document_stats(url: str) -> dict[str, Any]:
    """Documents and chunks per status and file type (the store's own figures)."""
    create_schema(url)
    return DocumentStore(url).stats()


def highlight_html(snippet: str, start: str = _MARK_START, end: str = _MARK_END) -> str:
    """A search snippet as safe HTML: the text escaped, the matches in <mark>."""
    escaped = html.escape(snippet, quote=True)
    return escaped.replace(html.escape(start), "<mark>").replace(html.escape(end), "</mark>")


class FoundDocuments(list[dict[str, Any]]):
    """Search hits as the page shows them, and the store's ``notice`` about the query (None: nothing to say)."""

    def __init__(self, hits: list[dict[str, Any]], notice: str | None = None) -> None:
        super().__init__(hits)
        self.notice = notice


def search_documents(
    url: str,
    query: str,
    limit: int = 20,
    file_type: str | None = None,
    mode: str = "hybrid",
    since: date | None = None,
    until: date | None = None,
    source: str | None = None,
    status: str | None = None,
) -> FoundDocuments:
    """Search by words and meaning (``mode``); each hit with ``snippet_html`` (escaped, matches in <mark>).

    One hit per document: its best passage (``chunks``, ``pages``), ``more`` counting its other matching
    passages. The filters are the store's (``DocumentStore.search``); a malformed one is ``InvalidQuery``.
    """
    create_schema(url)
    hits = DocumentStore(url).search(
        query,
        limit=limit,
        file_type=file_type,
        marks=(_MARK_START, _MARK_END),
        mode=mode,
        since=since,
        until=until,
        source=source or None,
        status=status,
    )
    rows = [
        {
            "document_id": h.document_id,
            "name": Path(h.path).name if h.path else "",
            "path": h.path,
            "file_type": h.file_type,
            "page": h.page,
            "pages": list(h.pages),
            "chunk_index": h.chunk_index,
            "chunks": list(h.chunks),
            "score": h.score,
            "more": h.more,
            "snippet_html": highlight_html(h.snippet),
            "origin": h.origin,
            "origin_text": describe_origin(h.origin),
        }
        for h in hits
    ]
    return FoundDocuments(rows, hits.notice)


def related_documents(url: str, document_id: int, limit: int = 5) -> list[dict[str, Any]] | None:
    """The documents nearest in meaning to one (``DocumentStore.related``); None while it is not embedded."""
    create_schema(url)
    found = DocumentStore(url).related(int(document_id), limit=limit)
    if found is None:
        return None
    return [
        {
            "document_id": r.document_id,
            "name": Path(r.path).name if r.path else "",
            "path": r.path,
            "file_type": r.file_type,
            "similarity": r.similarity,
            "near_duplicate": r.near_duplicate,
        }
        for r in found
    ]


def document_detail(url: str, document_id: int) -> dict[str, Any] | None:
    create_schema(url)
    return DocumentStore(url).get_document(int(document_id))


def document_chunks(url: str, document_id: int, offset: int = 0, limit: int = 50) -> pd.DataFrame:
    """A page of one document's chunks, in order (unique index on document_id, chunk_index)."""
    create_schema(url)
    chunks = DocumentStore(url).get_chunks(
        int(document_id), offset=max(0, int(offset)), limit=max(1, min(int(limit), 500))
    )
    rows = [(c["chunk_index"], c["page"], c["start_char"], c["end_char"], c["text"]) for c in chunks]
    return pd.DataFrame(rows, columns=["chunk", "page", "start", "end", "text"])


def failed_documents(url: str, limit: int = 200) -> pd.DataFrame:
    """Documents whose processing failed (not rejected: a rejection repeats), newest first."""
    frame, _total = documents_page(url, page=1, page_size=limit, status="failed")
    return frame


def delete_document(settings: Settings, document_id: int) -> DeleteReport:
    """Delete one document and MIDAS's copies of it (never the user's file): ``processing.manage``."""
    return manage.delete_document(settings, int(document_id))


def reprocess_document(settings: Settings, document_id: int, app: Any = None) -> str:
    """Send one document's content to be processed again, replacing its result; returns the task id."""
    return manage.reprocess_document(settings, int(document_id), app=app)


def original_bytes(settings: Settings, document_id: int) -> tuple[bytes, str, str]:
    """A document's original file for a download button: (its bytes, file name, MIME type).

    At most MIDAS_MAX_FILE_MB, as every document (intake refuses a larger copy)."""
    with manage.open_original(settings, int(document_id)) as (handle, name, mime):
        return handle.read(), name, mime
