"""The searchable document store: what was processed, its chunks, and full-text search.

One row per distinct content (``sha256``), however many paths it was seen
at; failures and rejections are recorded too, so every file the user dropped
in has an answer. Chunks are indexed for full-text search: SQLite FTS5 with
BM25 ranking (an external-content table kept in sync by triggers), or on
PostgreSQL a stored, GIN-indexed ``to_tsvector('simple', text)`` column queried with
``websearch_to_tsquery`` so any language works. The Python API is the same
on both, and only plain dicts and frozen dataclasses leave this module.

The user's files are never touched here: only database rows.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import (
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from background_tasks.errors import InvalidQuery, TransientError
from background_tasks.processing.chunking import Chunk, normalize_text
from background_tasks.storage.db import (
    is_sqlite,
    read_scope,
    session_scope,
    transient_db_errors,
)
from background_tasks.storage.models import ChunkRow, DocumentPathRow, DocumentRow
from background_tasks.storage.schema import create_schema

logger = logging.getLogger(__name__)

STATUSES = ("processing", "success", "failed", "rejected")
#: Chunks written per transaction: keeps SQLite's write lock short for documents with thousands of chunks.
CHUNK_WRITE_BATCH = 500
FAILURE_STATUSES = ("failed", "rejected")
CLAIM_STATES = ("new", "duplicate", "resume", "busy")
MAX_QUERY_TERMS = 32
#: Longest query searched: PostgreSQL refuses a phrase of ~13,000 words ("statement too complex").
MAX_QUERY_CHARS = 1000
#: Most words in one "quoted phrase".
MAX_PHRASE_WORDS = 64

#: highlight markers used inside the database; replaced by the caller's marks
_HL_START = "\ue000"
_HL_END = "\ue001"
DEFAULT_MARKS = ("**", "**")

_MAX_ERROR_CHARS = 20_000
_MAX_META_STRING = 100_000
_MAX_META_DEPTH = 40


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """Outcome of ``DocumentStore.claim``.

    ``state`` is one of:

    * ``new``: a row was created in ``processing``; process the file;
    * ``resume``: a ``processing``/``failed``/``rejected`` row was taken over
      (a redelivered task, or a retry); process the file;
    * ``duplicate``: the content was already processed successfully; the path
      was recorded, nothing else changed; do not process;
    * ``busy``: another live task is processing the same content right now;
      the path was recorded; do not process.
    """

    document_id: int
    state: str
    attempts: int = 1

    @property
    def should_process(self) -> bool:
        return self.state in ("new", "resume")


@dataclass(frozen=True)
class SearchHit:
    """One matching chunk. ``score``: higher is better (comparable within one search)."""

    document_id: int
    path: str | None
    file_type: str | None
    page: int | None
    chunk_index: int
    snippet: str
    score: float


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(value: str | None, limit: int | None = None) -> str | None:
    """Text a database accepts: no NUL (PostgreSQL refuses it), no lone surrogates."""
    if value is None:
        return None
    value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "")
    if _LONE_SURROGATE.search(value):
        value = _LONE_SURROGATE.sub("\ufffd", value)
    if limit is not None and len(value) > limit:
        value = value[:limit] + "…"
    return value


def clean_path(path: Any) -> str:
    """A path as stored: undecodable bytes (surrogate escapes) shown as ``\\xNN``."""
    value = str(path)
    if _LONE_SURROGATE.search(value):
        try:
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            value = _LONE_SURROGATE.sub("\ufffd", value)
    return value.replace("\x00", "")


def _path_hash(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


def _file_type(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().lstrip(".").lower()
    return _clean(value[:32]) or None


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Metadata as JSON both databases accept (no NaN, no NUL, no bytes, bounded depth)."""
    if depth > _MAX_META_DEPTH:
        return _clean(repr(value), 1000)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _clean(value, _MAX_META_STRING)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {_clean(str(k), 1000): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, depth + 1) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return _clean(str(value), _MAX_META_STRING)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything is stored in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


_QUERY_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


@dataclass(frozen=True)
class _ParsedQuery:
    groups: tuple[tuple[str, ...], ...]  # OR of AND-groups of phrases
    negatives: tuple[str, ...]

    @property
    def terms(self) -> list[str]:
        return [t for g in self.groups for t in g]


def parse_query(query: str) -> _ParsedQuery:
    """Web-search syntax: words, "quoted phrases", ``or``, ``-excluded``. Never fails.

    Terms without a letter or digit are dropped, since they cannot match
    anything; repeated terms are dropped and at most ``MAX_QUERY_TERMS`` are
    kept, since highlighting cost grows with the number of terms.
    """
    groups: list[list[str]] = [[]]
    negatives: list[str] = []
    seen: set[tuple[int, bool, str]] = set()
    or_pending = False
    for match in _QUERY_TOKEN.finditer(query or ""):
        if len(seen) >= MAX_QUERY_TERMS:
            break
        negative = match.group(1) == "-"
        if match.group(2) is not None:
            term = match.group(2)
        else:
            term = match.group(3)
            if term.lower() == "or":
                or_pending = bool(groups[-1])
                continue
            if term.startswith("-") and len(term) > 1:
                negative, term = True, term[1:]
        term = " ".join(term.replace('"', " ").split())
        if not any(ch.isalnum() for ch in term):
            continue
        key = (len(groups) if not (or_pending or negative) else len(groups) + 1, negative, term.casefold())
        if key in seen:
            continue
        seen.add(key)
        if negative:
            negatives.append(term)
        elif or_pending:
            groups.append([term])
        else:
            groups[-1].append(term)
        or_pending = False
    return _ParsedQuery(tuple(tuple(g) for g in groups if g), tuple(negatives))


def websearch_query(parsed: _ParsedQuery) -> str:
    """The parsed query written back in ``websearch_to_tsquery`` syntax (PostgreSQL)."""
    groups = [" ".join(f'"{t}"' for t in group) for group in parsed.groups]
    return " or ".join(groups) + "".join(f' -"{t}"' for t in parsed.negatives)


def _fts5_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def fts5_query(parsed: _ParsedQuery) -> str | None:
    """An FTS5 MATCH expression in which every user term is a quoted string (no syntax leaks)."""
    if not parsed.groups:
        return None
    ors = ["(" + " AND ".join(_fts5_phrase(t) for t in group) + ")" for group in parsed.groups]
    expr = "(" + " OR ".join(ors) + ")"
    for term in parsed.negatives:
        expr += " NOT " + _fts5_phrase(term)
    return expr


P = ParamSpec("P")
R = TypeVar("R")


def _db_call(method: Callable[P, R]) -> Callable[P, R]:
    """Retryable database errors leave the store as ``TransientError``."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with transient_db_errors():
            return method(*args, **kwargs)

    return wrapper


class _Conflict(Exception):
    """Another process changed the row between our read and our write."""


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------


class DocumentStore:
    """Documents, their paths and chunks, and search over them, in one database.

    ``stale_after_s``: a ``processing`` row claimed by another task that has
    not been updated for this long is considered abandoned and may be resumed.
    """

    def __init__(self, url: str, stale_after_s: float = 3600.0) -> None:
        self.url = url
        self.stale_after = timedelta(seconds=stale_after_s)
        self._sqlite = is_sqlite(url)
        self._fts: bool | None = None

    # -- schema ------------------------------------------------------------

    @_db_call
    def create_schema(self) -> None:
        """Create every table and the full-text index if missing (idempotent, safe to race)."""
        self._fts = create_schema(self.url)

    def _has_fts(self, session: Session) -> bool:
        if self._fts is None:
            if self._sqlite:
                found = session.execute(
                    text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chunks_fts'")
                ).first()
                self._fts = found is not None
            else:
                self._fts = True
        return self._fts

    # -- paths -------------------------------------------------------------

    def _add_path(self, session: Session, document_id: int, path: Any, now: datetime) -> None:
        """Record (or refresh) that ``document_id`` was seen at ``path``."""
        if path is None:
            return
        stored = clean_path(path)
        values = {
            "document_id": document_id,
            "path": stored,
            "path_hash": _path_hash(stored),
            "first_seen": now,
            "last_seen": now,
        }
        if self._sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        stmt = dialect_insert(DocumentPathRow).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["document_id", "path_hash"], set_={"last_seen": now, "path": stored}
        )
        session.execute(stmt)

    # -- claiming and recording --------------------------------------------

    @_db_call
    def claim(
        self,
        sha256: str,
        path: Any,
        file_type: str | None = None,
        mime_type: str | None = None,
        size_bytes: int | None = None,
        task_id: str | None = None,
    ) -> Claim:
        """Decide who processes the content ``sha256`` (see ``Claim``). Race-safe.

        Of several processes claiming the same content at once exactly one
        gets ``new`` or ``resume``; the unique constraint on ``sha256`` and a
        compare-and-set on ``attempts`` decide, the losers re-read and retry.
        """
        sha256 = _check_sha(sha256)
        task_id = _clean(task_id[:255]) if task_id else None
        for _ in range(20):
            try:
                return self._try_claim(sha256, path, _file_type(file_type), mime_type, size_bytes, task_id)
            except (IntegrityError, _Conflict) as error:
                logger.debug("claim of %s raced with another process, re-reading: %s", sha256[:12], error)
        raise TransientError(f"could not claim document {sha256[:12]}: too many concurrent changes")

    def _try_claim(
        self,
        sha256: str,
        path: Any,
        file_type: str | None,
        mime_type: str | None,
        size_bytes: int | None,
        task_id: str | None,
    ) -> Claim:
        now = _now()
        mime_type = _clean(mime_type[:255]) if mime_type else None
        with session_scope(self.url) as s:
            row = s.execute(
                select(
                    DocumentRow.id,
                    DocumentRow.status,
                    DocumentRow.attempts,
                    DocumentRow.task_id,
                    DocumentRow.updated_at,
                ).where(DocumentRow.sha256 == sha256)
            ).one_or_none()
            if row is None:
                doc = DocumentRow(
                    sha256=sha256,
                    file_type=file_type,
                    mime_type=mime_type,
                    size_bytes=size_bytes,
                    status="processing",
                    attempts=1,
                    chunk_count=0,
                    created_at=now,
                    updated_at=now,
                    started_at=now,
                    task_id=task_id,
                )
                s.add(doc)
                s.flush()
                self._add_path(s, doc.id, path, now)
                return Claim(doc.id, "new", 1)
            if row.status == "success":
                self._add_path(s, row.id, path, now)
                return Claim(row.id, "duplicate", row.attempts)
            same_task = task_id is not None and row.task_id == task_id
            stale = (_aware(row.updated_at) or now) < now - self.stale_after
            if row.status == "processing" and not same_task and not stale:
                self._add_path(s, row.id, path, now)
                return Claim(row.id, "busy", row.attempts)
            changes: dict[str, Any] = {
                "status": "processing",
                "attempts": DocumentRow.attempts + 1,
                "task_id": task_id,
                "started_at": now,
                "updated_at": now,
                "finished_at": None,
                "error_type": None,
                "error": None,
            }
            if file_type:
                changes["file_type"] = file_type
            if mime_type:
                changes["mime_type"] = mime_type
            if size_bytes is not None:
                changes["size_bytes"] = size_bytes
            result = s.execute(
                update(DocumentRow)
                .where(
                    DocumentRow.id == row.id,
                    DocumentRow.attempts == row.attempts,
                    DocumentRow.status == row.status,
                )
                .values(**changes)
            )
            if result.rowcount != 1:
                raise _Conflict(f"document {row.id} changed while claiming")
            self._add_path(s, row.id, path, now)
            return Claim(row.id, "resume", row.attempts + 1)

    @_db_call
    def record_success(
        self,
        document_id: int,
        metadata: Mapping[str, Any] | None,
        chunks: Sequence[Chunk],
        text_chars: int,
        page_count: int | None = None,
        warnings: Iterable[str] = (),
        duration_s: float | None = None,
    ) -> None:
        """Store the result: old chunks replaced, then status ``success``.

        Replacing (not appending) makes a redelivered task harmless. The chunks
        go in in transactions of ``CHUNK_WRITE_BATCH`` rows, so a long document
        (thousands of chunks, each indexed for search) does not hold SQLite's
        one write lock for a third of a second while other workers wait. The
        status changes with the last batch: until then search does not see the
        document, and a task that dies half-way leaves it ``processing`` for
        the redelivered task, which starts by deleting what was written.
        """
        now = _now()
        rows = [
            {
                "document_id": document_id,
                "chunk_index": c.index,
                "text": _clean(c.text),
                "start_char": c.start,
                "end_char": c.end,
                "page": c.page,
            }
            for c in chunks
        ]
        batches = [rows[i : i + CHUNK_WRITE_BATCH] for i in range(0, len(rows), CHUNK_WRITE_BATCH)] or [[]]
        for number, batch in enumerate(batches):
            with session_scope(self.url) as s:
                if number == 0:
                    # with one batch the status update below checks this in the same transaction
                    exists = select(DocumentRow.id).where(DocumentRow.id == document_id)
                    if len(batches) > 1 and s.scalar(exists) is None:
                        raise LookupError(f"no document with id {document_id}")
                    s.execute(delete(ChunkRow).where(ChunkRow.document_id == document_id))
                if number == len(batches) - 1:
                    result = s.execute(
                        update(DocumentRow)
                        .where(DocumentRow.id == document_id)
                        .values(
                            status="success",
                            metadata_json=_jsonable(dict(metadata or {})),
                            warnings_json=[_clean(str(w), _MAX_META_STRING) for w in warnings],
                            text_chars=text_chars,
                            page_count=page_count,
                            chunk_count=len(rows),
                            error_type=None,
                            error=None,
                            finished_at=now,
                            updated_at=now,
                            duration_s=duration_s,
                        )
                    )
                    if result.rowcount != 1:
                        raise LookupError(f"no document with id {document_id}")
                if batch:
                    s.execute(insert(ChunkRow), batch)

    @_db_call
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
    ) -> int:
        """Record a failed or rejected file; returns the document id.

        Updates the claimed row (``document_id``, else the row of ``sha256``),
        or creates one. A file rejected before it was read has no sha256: its
        row is found again by path and error type, so re-rejecting the same
        file does not pile up rows. A success row is never downgraded.
        """
        if status not in FAILURE_STATUSES:
            raise ValueError(f"status must be one of {FAILURE_STATUSES}, got {status!r}")
        sha256 = _check_sha(sha256) if sha256 else None
        for _ in range(20):
            try:
                return self._try_record_failure(
                    path, status, error_type, error, sha256, document_id, file_type, size_bytes, duration_s, task_id
                )
            except (IntegrityError, _Conflict) as exc:
                logger.debug("recording failure raced with another process, retrying: %s", exc)
        raise TransientError("could not record failure: too many concurrent changes")

    def _try_record_failure(
        self,
        path: Any,
        status: str,
        error_type: str,
        error: str,
        sha256: str | None,
        document_id: int | None,
        file_type: str | None,
        size_bytes: int | None,
        duration_s: float | None,
        task_id: str | None,
    ) -> int:
        now = _now()
        file_type = _file_type(file_type)
        changes: dict[str, Any] = {
            "status": status,
            "error_type": _clean(str(error_type)[:64]),
            "error": _clean(str(error), _MAX_ERROR_CHARS),
            "finished_at": now,
            "updated_at": now,
            "duration_s": duration_s,
        }
        if task_id:
            changes["task_id"] = _clean(task_id[:255])
        if file_type:
            changes["file_type"] = file_type
        if size_bytes is not None:
            changes["size_bytes"] = size_bytes
        with session_scope(self.url) as s:
            row = None
            if document_id is not None:
                row = s.execute(
                    select(DocumentRow.id, DocumentRow.status).where(DocumentRow.id == document_id)
                ).one_or_none()
            if row is None and sha256 is not None:
                row = s.execute(
                    select(DocumentRow.id, DocumentRow.status).where(DocumentRow.sha256 == sha256)
                ).one_or_none()
            if row is None and sha256 is None and path is not None:
                stored = clean_path(path)
                row = s.execute(
                    select(DocumentRow.id, DocumentRow.status)
                    .join(DocumentPathRow, DocumentPathRow.document_id == DocumentRow.id)
                    .where(
                        DocumentPathRow.path_hash == _path_hash(stored),
                        DocumentRow.sha256.is_(None),
                        DocumentRow.status == status,
                        DocumentRow.error_type == changes["error_type"],
                    )
                    .order_by(DocumentRow.id.desc())
                    .limit(1)
                ).one_or_none()
            if row is not None:
                if row.status != "success":
                    result = s.execute(
                        update(DocumentRow)
                        .where(DocumentRow.id == row.id, DocumentRow.status != "success")
                        .values(**changes)
                    )
                    if result.rowcount != 1:
                        raise _Conflict(f"document {row.id} changed while recording its failure")
                self._add_path(s, row.id, path, now)
                return row.id
            doc = DocumentRow(
                sha256=sha256,
                attempts=1 if sha256 else 0,
                chunk_count=0,
                created_at=now,
                **changes,
            )
            s.add(doc)
            s.flush()
            self._add_path(s, doc.id, path, now)
            return doc.id

    # -- search --------------------------------------------------------------

    @_db_call
    def search(
        self,
        query: str,
        limit: int = 10,
        file_type: str | None = None,
        marks: tuple[str, str] = DEFAULT_MARKS,
    ) -> list[SearchHit]:
        """Best-matching chunks for a web-search style query, best first.

        Words must all occur (``or`` between words relaxes that), "quoted
        phrases" must occur in order, ``-word`` excludes. Any input is safe:
        syntax characters are taken literally and an empty query finds nothing.
        Matches in ``snippet`` are wrapped in ``marks``. A query over
        ``MAX_QUERY_CHARS`` or a phrase over ``MAX_PHRASE_WORDS`` words raises
        ``InvalidQuery`` with a message for the user, on every backend.
        """
        query = normalize_text(query or "")  # same form as the indexed text; no NUL or control characters
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidQuery(f"the query has {len(query):,} characters; at most {MAX_QUERY_CHARS:,} are searched")
        parsed = parse_query(query)
        longest = max((len(t.split()) for t in (*parsed.terms, *parsed.negatives)), default=0)
        if longest > MAX_PHRASE_WORDS:
            raise InvalidQuery(f"a quoted phrase has {longest} words; at most {MAX_PHRASE_WORDS} are searched")
        if not parsed.groups or limit <= 0:
            return []
        limit = min(int(limit), 1000)
        ftype = _file_type(file_type)
        with read_scope(self.url) as s:
            if not self._sqlite:
                rows = self._search_postgres(s, websearch_query(parsed), limit, ftype)
            elif self._has_fts(s):
                rows = self._search_sqlite(s, parsed, limit, ftype)
            else:
                rows = self._search_substring(s, parsed, limit, ftype)
        start, end = marks
        return [
            SearchHit(
                document_id=r.document_id,
                path=r.path,
                file_type=r.file_type,
                page=r.page,
                chunk_index=r.chunk_index,
                snippet=(r.snippet or "").replace(_HL_START, start).replace(_HL_END, end),
                score=float(r.score or 0.0),
            )
            for r in rows
        ]

    _PATH_SUBQUERY = (
        "(SELECT p.path FROM document_paths p WHERE p.document_id = d.id ORDER BY p.last_seen DESC, p.id DESC LIMIT 1)"
    )

    def _search_sqlite(self, s: Session, parsed: _ParsedQuery, limit: int, ftype: str | None) -> list[Any]:
        match = fts5_query(parsed)
        sql = (
            "SELECT c.document_id, c.chunk_index, c.page, d.file_type, "
            f"{self._PATH_SUBQUERY} AS path, "
            "snippet(chunks_fts, 0, :hs, :he, '…', 32) AS snippet, -bm25(chunks_fts) AS score "
            "FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
            "JOIN documents d ON d.id = c.document_id "
            "WHERE chunks_fts MATCH :q AND d.status = 'success' "
            + ("AND d.file_type = :ft " if ftype else "")
            + "ORDER BY bm25(chunks_fts), c.id LIMIT :limit"
        )
        params = {"q": match, "hs": _HL_START, "he": _HL_END, "limit": limit, "ft": ftype}
        try:
            return list(s.execute(text(sql), params))
        except OperationalError as error:
            message = str(error.orig).lower()
            if any(m in message for m in ("fts5", "match", "unterminated", "syntax")):  # never let a query crash search
                logger.warning("full-text query %r rejected by SQLite: %s", match, error.orig)
                return []
            raise

    def _search_postgres(self, s: Session, query: str, limit: int, ftype: str | None) -> list[Any]:
        options = (
            f'StartSel="{_HL_START}", StopSel="{_HL_END}", MaxWords=35, MinWords=15, '
            'ShortWord=2, MaxFragments=2, FragmentDelimiter=" … "'
        )
        sql = (
            "WITH q AS (SELECT websearch_to_tsquery('simple'::regconfig, :q) AS tsq), "
            "best AS ("
            "  SELECT c.id, ts_rank(c.tsv, q.tsq) AS score "
            "  FROM chunks c JOIN documents d ON d.id = c.document_id, q "
            "  WHERE c.tsv @@ q.tsq AND d.status = 'success' "
            + ("AND d.file_type = :ft " if ftype else "")
            + "  ORDER BY score DESC, c.id LIMIT :limit"
            ") "
            "SELECT c.document_id, c.chunk_index, c.page, d.file_type, "
            f"{self._PATH_SUBQUERY} AS path, "
            "ts_headline('simple'::regconfig, c.text, q.tsq, :opts) AS snippet, best.score "
            "FROM best JOIN chunks c ON c.id = best.id JOIN documents d ON d.id = c.document_id, q "
            "ORDER BY best.score DESC, c.id"
        )
        params = {"q": query, "limit": limit, "ft": ftype, "opts": options}
        return list(s.execute(text(sql), params))

    def _search_substring(self, s: Session, parsed: _ParsedQuery, limit: int, ftype: str | None) -> list[Any]:
        """Fallback for SQLite builds without FTS5: case-insensitive substring match, no ranking."""

        def like(term: str) -> str:
            return "%" + term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

        params: dict[str, Any] = {"limit": limit, "ft": ftype}
        ors = []
        for gi, group in enumerate(parsed.groups):
            ands = []
            for ti, term in enumerate(group):
                params[f"t{gi}_{ti}"] = like(term)
                ands.append(f"lower(c.text) LIKE :t{gi}_{ti} ESCAPE '\\'")
            ors.append("(" + " AND ".join(ands) + ")")
        nots = []
        for ni, term in enumerate(parsed.negatives):
            params[f"n{ni}"] = like(term)
            nots.append(f"AND lower(c.text) NOT LIKE :n{ni} ESCAPE '\\' ")
        sql = (
            "SELECT c.document_id, c.chunk_index, c.page, d.file_type, c.text, "
            f"{self._PATH_SUBQUERY} AS path "
            "FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE d.status = 'success' AND ("
            + " OR ".join(ors)
            + ") "
            + "".join(nots)
            + ("AND d.file_type = :ft " if ftype else "")
            + "ORDER BY c.document_id, c.chunk_index LIMIT :limit"
        )

        @dataclass(frozen=True)
        class _Row:
            document_id: int
            chunk_index: int
            page: int | None
            file_type: str | None
            path: str | None
            snippet: str
            score: float

        out = []
        for r in s.execute(text(sql), params):
            out.append(
                _Row(
                    r.document_id,
                    r.chunk_index,
                    r.page,
                    r.file_type,
                    r.path,
                    _substring_snippet(r.text, parsed.terms),
                    1.0,
                )
            )
        return out

    # -- reading ---------------------------------------------------------------

    @staticmethod
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
            "created_at": _aware(row.created_at),
            "updated_at": _aware(row.updated_at),
            "started_at": _aware(row.started_at),
            "finished_at": _aware(row.finished_at),
            "duration_s": row.duration_s,
            "task_id": row.task_id,
        }

    def _paths_of(self, s: Session, ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
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
                {"path": p.path, "first_seen": _aware(p.first_seen), "last_seen": _aware(p.last_seen)}
            )
        return out

    def _with_paths(self, s: Session, docs: Sequence[DocumentRow]) -> list[dict[str, Any]]:
        paths = self._paths_of(s, [d.id for d in docs])
        out = []
        for d in docs:
            item = self._doc_dict(d)
            item["paths"] = paths[d.id]
            item["path"] = paths[d.id][0]["path"] if paths[d.id] else None
            out.append(item)
        return out

    @_db_call
    def get_document(self, document_id: int) -> dict[str, Any] | None:
        """Everything known about one document, with all its paths (most recent first)."""
        with read_scope(self.url) as s:
            doc = s.get(DocumentRow, document_id)
            return self._with_paths(s, [doc])[0] if doc else None

    @_db_call
    def list_documents(
        self, limit: int = 50, offset: int = 0, status: str | None = None, file_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Documents, newest first, each with ``path`` (most recent) and ``paths``."""
        stmt = select(DocumentRow).order_by(DocumentRow.created_at.desc(), DocumentRow.id.desc())
        if status:
            stmt = stmt.where(DocumentRow.status == status)
        if file_type:
            stmt = stmt.where(DocumentRow.file_type == _file_type(file_type))
        stmt = stmt.limit(max(0, int(limit))).offset(max(0, int(offset)))
        with read_scope(self.url) as s:
            return self._with_paths(s, list(s.execute(stmt).scalars()))

    @_db_call
    def count_documents(self, status: str | None = None, file_type: str | None = None) -> int:
        stmt = select(func.count(DocumentRow.id))
        if status:
            stmt = stmt.where(DocumentRow.status == status)
        if file_type:
            stmt = stmt.where(DocumentRow.file_type == _file_type(file_type))
        with read_scope(self.url) as s:
            return int(s.execute(stmt).scalar_one())

    @_db_call
    def get_chunks(self, document_id: int) -> list[dict[str, Any]]:
        """The chunks of one document, in order."""
        with read_scope(self.url) as s:
            rows = s.execute(
                select(ChunkRow).where(ChunkRow.document_id == document_id).order_by(ChunkRow.chunk_index)
            ).scalars()
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

    @_db_call
    def find_by_path(self, path: Any) -> list[dict[str, Any]]:
        """Documents seen at ``path``, most recently seen first (a file edited over time has several)."""
        stored = clean_path(path)
        with read_scope(self.url) as s:
            docs = list(
                s.execute(
                    select(DocumentRow)
                    .join(DocumentPathRow, DocumentPathRow.document_id == DocumentRow.id)
                    .where(DocumentPathRow.path_hash == _path_hash(stored))
                    .order_by(DocumentPathRow.last_seen.desc(), DocumentRow.id.desc())
                ).scalars()
            )
            return self._with_paths(s, docs)

    @_db_call
    def stats(self) -> dict[str, Any]:
        """Counts per status and per file type, with chunk totals."""
        with read_scope(self.url) as s:
            by_status = {
                status: int(n)
                for status, n in s.execute(select(DocumentRow.status, func.count()).group_by(DocumentRow.status))
            }
            by_type: dict[str, dict[str, int]] = {}
            rows = s.execute(
                select(
                    DocumentRow.file_type,
                    DocumentRow.status,
                    func.count(),
                    func.coalesce(func.sum(DocumentRow.chunk_count), 0),
                ).group_by(DocumentRow.file_type, DocumentRow.status)
            )
            for ftype, status, n, chunk_total in rows:
                entry = by_type.setdefault(ftype or "unknown", {"documents": 0, "chunks": 0})
                entry["documents"] += int(n)
                entry["chunks"] += int(chunk_total)
                entry[status] = entry.get(status, 0) + int(n)
            total_chunks = int(s.execute(select(func.count(ChunkRow.id))).scalar_one())
        return {
            "documents": sum(by_status.values()),
            "chunks": total_chunks,
            "by_status": {status: by_status.get(status, 0) for status in STATUSES},
            "by_file_type": by_type,
        }

    # -- retention -------------------------------------------------------------

    @_db_call
    def delete_documents_older_than(self, days: float) -> int:
        """Delete rows created more than ``days`` ago (with their paths and chunks). Files are not touched."""
        if days < 0 or not math.isfinite(days):
            raise ValueError(f"days must be a non-negative number, got {days!r}")
        cutoff = _now() - timedelta(days=days)
        with session_scope(self.url) as s:
            result = s.execute(delete(DocumentRow).where(DocumentRow.created_at < cutoff))
            return int(result.rowcount or 0)


def _check_sha(value: str) -> str:
    value = (value or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"not a SHA-256 hex digest: {value[:80]!r}")
    return value


def _substring_snippet(chunk: str, terms: Sequence[str], width: int = 200) -> str:
    lowered = chunk.lower()
    positions = [(lowered.find(t.lower()), t) for t in terms]
    positions = [(p, t) for p, t in positions if p >= 0]
    if not positions:
        return chunk[:width]
    pos, _ = min(positions)
    start = max(0, pos - width // 2)
    piece = chunk[start : start + width]
    for t in {t for _, t in positions}:
        piece = re.sub(re.escape(t), lambda m: _HL_START + m.group(0) + _HL_END, piece, flags=re.IGNORECASE)
    return ("…" if start else "") + piece + ("…" if start + width < len(chunk) else "")
