"""What every search mode shares: the query, its hits, their snippets; and document frequencies.

The user's query is parsed once (``parse_query``) and written out for each backend
(``fts5_query``, ``websearch_query``) so that no syntax of the user's reaches the database's
query language. The keyword search itself is ``storage.fulltext``; the semantic and hybrid
ones ``storage.semantic_search``.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from background_tasks.errors import InvalidQuery
from background_tasks.processing.chunking import normalize_text
from background_tasks.processing.textstats import SHORT_STOPWORDS, STOPWORDS
from background_tasks.storage.db import is_sqlite, read_scope, transient_db_errors
from background_tasks.storage.models import DocumentRow
from background_tasks.storage.schema import create_schema

logger = logging.getLogger(__name__)

MAX_QUERY_TERMS = 32
#: Longest query searched: PostgreSQL refuses a phrase of ~13,000 words ("statement too complex").
MAX_QUERY_CHARS = 1000
#: Most words in one "quoted phrase".
MAX_PHRASE_WORDS = 64
#: Most chunks one keyword search returns.
MAX_ROWS = 5000

#: highlight markers used inside the database; replaced by the caller's marks
_HL_START = "\ue000"
_HL_END = "\ue001"
DEFAULT_MARKS = ("**", "**")


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
    #: other matching chunks of the same document, when results are grouped per document
    more: int = 0
    #: where a source took the document from (``metadata["origin"]``: mail account, folder, from, subject ...)
    origin: dict[str, str] | None = None
    #: every chunk the shown passage stands for (overlapping chunks that matched the same text), ascending
    chunks: tuple[int, ...] = ()
    #: the pages those chunks lie on, ascending (empty when the format has no pages)
    pages: tuple[int, ...] = ()


# --------------------------------------------------------------------------
# The query
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Searching
# --------------------------------------------------------------------------


def check_query(query: str) -> str:
    """The query in the indexed text's form; ``InvalidQuery`` when it is too long or has too long a phrase."""
    query = normalize_text(query or "")  # same form as the indexed text; no NUL or control characters
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"the query has {len(query):,} characters; at most {MAX_QUERY_CHARS:,} are searched")
    parsed = parse_query(query)
    longest = max((len(t.split()) for t in (*parsed.terms, *parsed.negatives)), default=0)
    if longest > MAX_PHRASE_WORDS:
        raise InvalidQuery(f"a quoted phrase has {longest} words; at most {MAX_PHRASE_WORDS} are searched")
    return query


def sqlite_has_fts(session: Session) -> bool:
    """Whether this SQLite database has the FTS5 index (``create_schema`` makes it where FTS5 exists)."""
    found = session.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chunks_fts'")).first()
    return found is not None


def make_hit(row: Any, snippet: str | None, score: float | None, marks: tuple[str, str]) -> SearchHit:
    """A hit from a row with the chunk's document_id, path, file_type, page and chunk_index."""
    return SearchHit(
        document_id=row.document_id,
        path=row.path,
        file_type=row.file_type,
        page=row.page,
        chunk_index=row.chunk_index,
        snippet=(snippet or "").replace(_HL_START, marks[0]).replace(_HL_END, marks[1]),
        score=float(score or 0.0),
    )


def with_origins(url: str, hits: list[SearchHit]) -> list[SearchHit]:
    """The hits with their documents' origins: read for the hits shown only, once a search has chosen them."""
    if not hits:
        return hits
    with read_scope(url) as s:
        origins = _origins(s, {h.document_id for h in hits})
    return [replace(h, origin=origins.get(h.document_id)) for h in hits]


def _origins(s: Session, document_ids: set[int]) -> dict[int, dict[str, str]]:
    """The origin each hit's document keeps in its metadata (documents from a mail account, an S3 prefix)."""
    if not document_ids:
        return {}
    rows = s.execute(select(DocumentRow.id, DocumentRow.metadata_json).where(DocumentRow.id.in_(document_ids)))
    return {i: meta["origin"] for i, meta in rows if isinstance(meta, dict) and isinstance(meta.get("origin"), dict)}


# --------------------------------------------------------------------------
# Document frequencies (for keyword weighting)
# --------------------------------------------------------------------------


def document_frequencies(url: str, terms: Iterable[str]) -> tuple[int, dict[str, int]]:
    """(documents with chunks, {term: documents containing it}) from the full-text index.

    One indexed lookup per term (SQLite FTS5 or PostgreSQL's GIN-indexed
    tsvector), so the cost does not grow with the size of the store;
    without FTS5 it falls back to a substring scan.
    """
    terms = list(terms)
    create_schema(url)
    with transient_db_errors(), read_scope(url) as s:
        total = int(s.execute(text("SELECT count(DISTINCT document_id) FROM chunks")).scalar_one())
        found: dict[str, int] = {}
        if not terms:
            return total, found
        if is_sqlite(url):
            sql = (
                "SELECT count(DISTINCT c.document_id) FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
                "WHERE chunks_fts MATCH :q"
            )
            try:
                for term in terms:
                    found[term] = int(s.execute(text(sql), {"q": f'"{term}"'}).scalar_one())
                return total, found
            except OperationalError as error:
                if "no such table" not in str(error.orig).lower() and "fts5" not in str(error.orig).lower():
                    raise
                s.rollback()
            sql = "SELECT count(DISTINCT document_id) FROM chunks WHERE lower(text) LIKE :p"
            for term in terms:
                found[term] = int(s.execute(text(sql), {"p": f"%{term}%"}).scalar_one())
            return total, found
        sql = "SELECT count(DISTINCT document_id) FROM chunks WHERE tsv @@ plainto_tsquery('simple', :t)"
        try:
            for term in terms:
                found[term] = int(s.execute(text(sql), {"t": term}).scalar_one())
        except ProgrammingError:  # no tsv column: a store created without full-text search
            s.rollback()
            sql = "SELECT count(DISTINCT document_id) FROM chunks WHERE lower(text) LIKE :p"
            for term in terms:
                found[term] = int(s.execute(text(sql), {"p": f"%{term}%"}).scalar_one())
        return total, found


@lru_cache(maxsize=64)
def _term_pattern(terms: tuple[str, ...], whole_words: bool) -> re.Pattern[str] | None:
    """The regular expression that finds ``terms`` (see ``substring_snippet``); None when none is left."""
    wanted = [t for t in dict.fromkeys(t.casefold() for t in terms if t.strip())]
    if whole_words:
        wanted = [t for t in wanted if t not in STOPWORDS and t not in SHORT_STOPWORDS]
    if not wanted:
        return None
    alternatives = "|".join(re.escape(t) for t in sorted(wanted, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})\w{{0,3}}(?!\w)" if whole_words else alternatives, re.IGNORECASE)


def substring_snippet(chunk: str, terms: Sequence[str], width: int = 200, whole_words: bool = False) -> str:
    """About ``width`` characters of ``chunk`` where most of ``terms`` occur, the terms marked.

    ``whole_words`` (semantic hits, whose terms need not occur at all): a term counts only as a
    whole word or with a short ending ("invoice" in "invoices", not "in" in "print"), and the
    common words of a question ("when is the") are not marked.
    """
    pattern = _term_pattern(tuple(terms), whole_words)
    found = [(m.start(), m.group(0).casefold()) for m in pattern.finditer(chunk)] if pattern else []
    if pattern is None or not found:
        return chunk[:width] + ("…" if width < len(chunk) else "")
    # the window holding the most different terms, from the first match on
    positions = [p for p, _ in found]
    best, most = 0, 0
    for i, (at, _) in enumerate(found):
        inside = {w for p, w in found[i : bisect.bisect_left(positions, at + width)]}
        if len(inside) > most:
            best, most = i, len(inside)
    start = max(0, found[best][0] - width // 4)
    piece = pattern.sub(lambda m: _HL_START + m.group(0) + _HL_END, chunk[start : start + width])
    return ("…" if start else "") + piece + ("…" if start + width < len(chunk) else "")
