"""The searchable document store: what was processed, its chunks, and full-text search.

``DocumentStore`` is the face the rest of MIDAS uses; the work is done in
``storage.documents`` (claiming and recording), ``storage.reading`` (reading
back, stats) and ``storage.search`` (queries, FTS5, PostgreSQL tsvector,
substring fallback). The Python API is the same on SQLite and PostgreSQL,
and only plain dicts and frozen dataclasses leave it.

The user's files are never touched here: only database rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from sqlalchemy.orm import Session

from background_tasks.errors import DocumentNotFound, InvalidQuery
from background_tasks.processing.chunking import Chunk
from background_tasks.storage import (
    documents,
    fulltext,
    reading,
    related,
    removal,
    search,
    search_results,
    semantic_search,
)
from background_tasks.storage.db import is_sqlite
from background_tasks.storage.documents import (
    CHUNK_WRITE_BATCH,
    FAILURE_STATUSES,
    Claim,
    InTransaction,
)
from background_tasks.storage.models import ChunkRow, DocumentPathRow, DocumentRow
from background_tasks.storage.reading import STATUSES
from background_tasks.storage.related import RelatedDocument
from background_tasks.storage.removal import RemovedRows
from background_tasks.storage.schema import create_schema
from background_tasks.storage.search import (
    DEFAULT_MARKS,
    MAX_PHRASE_WORDS,
    MAX_QUERY_CHARS,
    MAX_QUERY_TERMS,
    SearchHit,
    fts5_query,
    parse_query,
    websearch_query,
)
from background_tasks.storage.search_filters import SearchFilters
from background_tasks.storage.search_results import SearchResults
from background_tasks.storage.values import clean_path, db_call

#: passages of one document a grouped search fetches (the others are counted): enough to find overlapping twins
PASSAGES_PER_DOCUMENT = 3


class DocumentStore:
    """Documents, their paths and chunks, and search over them, in one database.

    ``stale_after_s``: a ``processing`` row claimed by another task that has
    not been updated for this long is considered abandoned and may be resumed.
    """

    def __init__(self, url: str, stale_after_s: float = 3600.0, embedder: Any | None = None) -> None:
        self.url = url
        self.stale_after = timedelta(seconds=stale_after_s)
        self._sqlite = is_sqlite(url)
        self._fts: bool | None = None
        self._embedder = embedder

    # -- schema ------------------------------------------------------------

    @db_call
    def create_schema(self) -> None:
        """Create every table and the full-text index if missing (idempotent, safe to race)."""
        self._fts = create_schema(self.url)

    def _has_fts(self, session: Session) -> bool:
        if self._fts is None:
            self._fts = search.sqlite_has_fts(session) if self._sqlite else True
        return self._fts

    # -- claiming and recording --------------------------------------------

    def claim(
        self,
        sha256: str,
        path: Any,
        file_type: str | None = None,
        mime_type: str | None = None,
        size_bytes: int | None = None,
        task_id: str | None = None,
        force: bool = False,
    ) -> Claim:
        """Decide who processes the content ``sha256`` (see ``Claim``; ``force``: process known content again)."""
        return documents.claim(
            self.url, self.stale_after, sha256, path, file_type, mime_type, size_bytes, task_id, force
        )

    def record_success(
        self,
        document_id: int,
        metadata: Mapping[str, Any] | None,
        chunks: Sequence[Chunk],
        text_chars: int,
        page_count: int | None = None,
        warnings: Iterable[str] = (),
        duration_s: float | None = None,
        in_transaction: InTransaction | None = None,
        embeddings: tuple[Mapping[str, Any], Sequence[bytes]] | None = None,
    ) -> None:
        """Store the result: old chunks replaced, then status ``success`` (see ``documents.record_success``)."""
        documents.record_success(
            self.url,
            document_id,
            metadata,
            chunks,
            text_chars,
            page_count,
            warnings,
            duration_s,
            in_transaction,
            embeddings,
        )

    def record_failure(
        self,
        path: Any,
        status: str,
        error_type: str,
        error: str,
        sha256: str | None = None,
        document_id: int | None = None,
        file_type: str | None = None,
        size_bytes: int | None = None,
        duration_s: float | None = None,
        task_id: str | None = None,
        in_transaction: InTransaction | None = None,
    ) -> int:
        """Record a failed or rejected file; returns the document id (see ``documents.record_failure``)."""
        return documents.record_failure(
            self.url,
            path,
            status,
            error_type,
            error,
            sha256=sha256,
            document_id=document_id,
            file_type=file_type,
            size_bytes=size_bytes,
            duration_s=duration_s,
            task_id=task_id,
            in_transaction=in_transaction,
        )

    # -- search --------------------------------------------------------------

    @db_call
    def search(
        self,
        query: str,
        limit: int = 10,
        file_type: str | None = None,
        marks: tuple[str, str] = DEFAULT_MARKS,
        mode: str = "hybrid",
        group: bool = True,
        since: date | str | None = None,
        until: date | str | None = None,
        source: str | None = None,
        status: str | None = None,
    ) -> SearchResults:
        """The best passages for a web-search style query, best first, one per document (``group``).

        Words must all occur (``or`` between words relaxes that), "quoted
        phrases" must occur in order, ``-word`` excludes. Any input is safe:
        syntax characters are taken literally, and a query with no word, or
        only common words, answers with a ``notice`` (``SearchResults``).
        Matches in ``snippet`` are wrapped in ``marks``. A query over
        ``MAX_QUERY_CHARS``, a phrase over ``MAX_PHRASE_WORDS`` words or a
        malformed filter raises ``InvalidQuery`` with a message for the user.

        ``mode``: ``hybrid`` (default: the words and the meaning, fused), ``keyword`` (the
        full-text index) or ``semantic`` (nearest embeddings): ``storage.semantic_search``.
        Overlapping chunks that show the same text are one passage (``storage.search_results``);
        ``group`` keeps the best passage of each document, ``more`` counting its others
        (``group=False``: every passage). Filters (``storage.search_filters``): ``file_type``,
        the document's date ``since``/``until`` (inclusive), ``source`` (``mail``, ``mail:account``,
        a folder or ``s3://`` prefix) and ``status`` (``complete``, ``warnings``, ``ocr_pending``).
        """
        if mode not in semantic_search.MODES:
            raise InvalidQuery(f"search mode must be one of {', '.join(semantic_search.MODES)}, not {mode!r}")
        filters = SearchFilters.of(file_type, since, until, source, status)
        search.check_query(query)
        notice = search_results.no_word_notice(query)
        want = min(max(int(limit), 0), 1000)
        if notice or want == 0:
            return SearchResults([], notice)
        per_document = PASSAGES_PER_DOCUMENT if group else None
        meaningless = search_results.only_common_words(query)
        embedder = None if meaningless or mode == "keyword" else self.query_embedder()
        fetched: Counter[int] = Counter()  # keyword hits fetched per document

        def keyword(n: int, per_document: int | None) -> list[SearchHit]:
            hits = fulltext.search(self.url, query, n, filters, marks, self._has_fts, per_document)
            fetched.update(h.document_id for h in hits)
            return hits

        if mode == "keyword":
            hits = keyword((want + 2) * per_document if per_document else want + 20, per_document)
        elif mode == "semantic":
            hits = (
                semantic_search.semantic(self.url, embedder, query, want + 5, filters, marks, per_document)
                if embedder
                else []
            )
        else:
            hits = semantic_search.hybrid(self.url, embedder, query, want + 5, filters, marks, keyword, per_document)
        passages = search_results.collapse_overlaps(self.url, hits, marks)
        if group:
            found = search_results.group_by_document(passages, want)
            if fetched:
                counts = fulltext.count_matches(self.url, query, {h.document_id for h in found}, self._has_fts)
                found = search_results.count_unfetched(found, passages, counts, fetched)
        else:
            found = passages[:want]
        found = search.with_origins(self.url, found)
        return SearchResults(found, search_results.notice(mode, query, embedder, meaningless, found))

    @db_call
    def related(self, document_id: int, limit: int = 5) -> list[RelatedDocument] | None:
        """The ``limit`` documents nearest in meaning to ``document_id`` (document vectors), near-duplicates flagged.

        None when embeddings are off or the document is not embedded yet (``storage.related``);
        ``DocumentNotFound`` for an unknown id.
        """
        embedder = self.query_embedder()
        if embedder is None:
            if self.get_document(int(document_id)) is None:
                raise DocumentNotFound(f"no document {document_id} (deleted, or never there)")
            return None
        info = embedder.info
        return related.related(self.url, info.key, info.dim, int(document_id), max(0, min(int(limit), 100)))

    def query_embedder(self) -> Any | None:
        """The model queries are embedded with: the one given, else the configured one (None: embeddings off)."""
        if self._embedder is None:
            from background_tasks.analysis.embeddings import configured_embedder
            from background_tasks.settings import get_settings

            settings = get_settings()
            if not settings.embeddings_enabled:
                return None
            self._embedder = configured_embedder(settings)
        return self._embedder

    # -- reading ---------------------------------------------------------------

    def get_document(self, document_id: int) -> dict[str, Any] | None:
        """Everything known about one document, with all its paths (most recent first)."""
        return reading.get_document(self.url, document_id)

    def list_documents(
        self, limit: int = 50, offset: int = 0, status: str | None = None, file_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Documents, newest first, each with ``path`` (most recent) and ``paths``."""
        return reading.list_documents(self.url, limit, offset, status, file_type)

    def count_documents(self, status: str | None = None, file_type: str | None = None) -> int:
        return reading.count_documents(self.url, status, file_type)

    def get_chunks(self, document_id: int, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """The chunks of one document, in order; a page of them from ``offset`` when ``limit`` is given."""
        return reading.get_chunks(self.url, document_id, offset, limit)

    def find_by_path(self, path: Any) -> list[dict[str, Any]]:
        """Documents seen at ``path``, most recently seen first (a file edited over time has several)."""
        return reading.find_by_path(self.url, path)

    def stats(self) -> dict[str, Any]:
        """Counts per status and per file type, with chunk totals."""
        return reading.stats(self.url)

    # -- retention -------------------------------------------------------------

    def delete_document(self, document_id: int) -> RemovedRows | None:
        """Delete one document with its paths, chunks, embeddings, OCR pages and analyses (None: no such id).

        Rows only: files are ``processing.manage.delete_document``'s business."""
        return removal.delete_document(self.url, int(document_id))

    def delete_documents_older_than(self, days: float) -> int:
        """Delete rows created more than ``days`` ago (with their paths and chunks). Files are not touched."""
        return documents.delete_older_than(self.url, days)


__all__ = [
    "CHUNK_WRITE_BATCH",
    "DEFAULT_MARKS",
    "FAILURE_STATUSES",
    "MAX_PHRASE_WORDS",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_TERMS",
    "STATUSES",
    "ChunkRow",
    "Claim",
    "DocumentPathRow",
    "DocumentRow",
    "DocumentStore",
    "InTransaction",
    "RelatedDocument",
    "RemovedRows",
    "SearchFilters",
    "SearchHit",
    "SearchResults",
    "clean_path",
    "fts5_query",
    "parse_query",
    "websearch_query",
]
