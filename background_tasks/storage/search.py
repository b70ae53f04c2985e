"""Full-text search over the stored chunks, the same on both databases.

SQLite: an FTS5 external-content table kept in sync by triggers, ranked with
BM25. PostgreSQL: a stored, GIN-indexed ``to_tsvector('simple', text)``
column queried with ``websearch_to_tsquery``, so any language works. A SQLite
build without FTS5 falls back to an unranked substring match. The user's
query is parsed once (``parse_query``) and written out for each backend so
that no syntax of the user's reaches the database's query language.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
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
from background_tasks.storage.search_filters import SearchFilters

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


def search(
    url: str,
    query: str,
    limit: int,
    filters: SearchFilters,
    marks: tuple[str, str],
    has_fts: Callable[[Session], bool],
    per_document: int | None = None,
) -> list[SearchHit]:
    """Best-matching chunks for a web-search style query, best first (see ``DocumentStore.search``).

    ``filters`` says which documents may answer; ``has_fts`` tells whether a SQLite database has
    its FTS5 index (the store remembers the answer). ``per_document``: at most that many chunks of
    each document, the first one's ``more`` counting its other matching chunks, so that one long
    document cannot fill the page.
    """
    query = check_query(query)
    parsed = parse_query(query)
    if not parsed.groups or limit <= 0:
        return []
    limit = min(int(limit), MAX_ROWS)
    cap = per_document or limit
    where = filters.where(url)
    with read_scope(url) as s:
        if not is_sqlite(url):
            rows = _search_postgres(s, websearch_query(parsed), limit, cap, where)
        elif has_fts(s):
            rows = _search_sqlite(s, parsed, limit, cap, where)
        else:
            rows = _search_substring(s, parsed, limit, cap, where)
    shown = Counter(r.document_id for r in rows)
    hits, seen = [], set()
    for r in rows:
        hit = make_hit(r, r.snippet, r.score, marks)
        if per_document and r.document_id not in seen:
            seen.add(r.document_id)
            hit = replace(hit, more=max(0, int(r.matches) - shown[r.document_id]))
        hits.append(hit)
    return hits


def make_hit(
    row: Any, snippet: str | None, score: float | None, marks: tuple[str, str], origin: dict[str, str] | None = None
) -> SearchHit:
    """A hit from a row with the chunk's document_id, path, file_type, page and chunk_index."""
    return SearchHit(
        document_id=row.document_id,
        path=row.path,
        file_type=row.file_type,
        page=row.page,
        chunk_index=row.chunk_index,
        snippet=(snippet or "").replace(_HL_START, marks[0]).replace(_HL_END, marks[1]),
        score=float(score or 0.0),
        origin=origin,
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


_PATH_SUBQUERY = (
    "(SELECT p.path FROM document_paths p WHERE p.document_id = d.id ORDER BY p.last_seen DESC, p.id DESC LIMIT 1)"
)


#: a filter's SQL condition (``AND ...`` over the documents aliased ``d``) and its parameters
Where = tuple[str, dict[str, Any]]


#: each document's matching chunks ranked and counted (``rn``, ``matches``) from a ``ranked`` (id, document_id,
#: score) list; ``best``: the ``:limit`` best of them, at most ``:per_document`` of each document
_CAPPED = (
    "capped AS (SELECT id, score, "
    "row_number() OVER (PARTITION BY document_id ORDER BY score DESC, id) AS rn, "
    "count(*) OVER (PARTITION BY document_id) AS matches FROM ranked), "
    "best AS (SELECT id, score, matches FROM capped WHERE rn <= :per_document ORDER BY score DESC, id LIMIT :limit) "
)


def _search_sqlite(s: Session, parsed: _ParsedQuery, limit: int, per_document: int, where: Where) -> list[Any]:
    match = fts5_query(parsed)
    sql = (
        "WITH ranked AS ("
        "  SELECT c.id, c.document_id, -bm25(chunks_fts) AS score "
        "  FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.document_id "
        f"  WHERE chunks_fts MATCH :q AND d.status = 'success'{where[0]}), "
        + _CAPPED
        + "SELECT c.document_id, c.chunk_index, c.page, d.file_type, "
        f"{_PATH_SUBQUERY} AS path, "
        "snippet(chunks_fts, 0, :hs, :he, '…', 32) AS snippet, best.score, best.matches "
        "FROM chunks_fts JOIN best ON best.id = chunks_fts.rowid JOIN chunks c ON c.id = best.id "
        "JOIN documents d ON d.id = c.document_id "
        "WHERE chunks_fts MATCH :q AND chunks_fts.rowid IN (SELECT id FROM best) "
        "ORDER BY best.score DESC, c.id"
    )
    params = {"q": match, "hs": _HL_START, "he": _HL_END, "limit": limit, "per_document": per_document, **where[1]}
    try:
        return list(s.execute(text(sql), params))
    except OperationalError as error:
        message = str(error.orig).lower()
        if any(m in message for m in ("fts5", "match", "unterminated", "syntax")):  # never let a query crash search
            logger.warning("full-text query %r rejected by SQLite: %s", match, error.orig)
            return []
        raise


def _search_postgres(s: Session, query: str, limit: int, per_document: int, where: Where) -> list[Any]:
    options = (
        f'StartSel="{_HL_START}", StopSel="{_HL_END}", MaxWords=35, MinWords=15, '
        'ShortWord=2, MaxFragments=2, FragmentDelimiter=" … "'
    )
    sql = (
        "WITH q AS (SELECT websearch_to_tsquery('simple'::regconfig, :q) AS tsq), "
        "ranked AS ("
        "  SELECT c.id, c.document_id, ts_rank(c.tsv, q.tsq) AS score "
        "  FROM chunks c JOIN documents d ON d.id = c.document_id, q "
        f"  WHERE c.tsv @@ q.tsq AND d.status = 'success'{where[0]}), "
        + _CAPPED
        + "SELECT c.document_id, c.chunk_index, c.page, d.file_type, "
        f"{_PATH_SUBQUERY} AS path, "
        "ts_headline('simple'::regconfig, c.text, q.tsq, :opts) AS snippet, best.score, best.matches "
        "FROM best JOIN chunks c ON c.id = best.id JOIN documents d ON d.id = c.document_id, q "
        "ORDER BY best.score DESC, c.id"
    )
    params = {"q": query, "limit": limit, "per_document": per_document, "opts": options, **where[1]}
    return list(s.execute(text(sql), params))


@dataclass(frozen=True)
class _Row:
    document_id: int
    chunk_index: int
    page: int | None
    file_type: str | None
    path: str | None
    snippet: str
    score: float
    matches: int = 1


def _like(term: str) -> str:
    return "%" + term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _search_substring(s: Session, parsed: _ParsedQuery, limit: int, per_document: int, where: Where) -> list[Any]:
    """Fallback for SQLite builds without FTS5: case-insensitive substring match, no ranking.

    Capped per document among the first ``limit`` matching chunks (which it counts)."""
    params: dict[str, Any] = {"limit": limit, **where[1]}
    ors = []
    for gi, group in enumerate(parsed.groups):
        ands = []
        for ti, term in enumerate(group):
            params[f"t{gi}_{ti}"] = _like(term)
            ands.append(f"lower(c.text) LIKE :t{gi}_{ti} ESCAPE '\\'")
        ors.append("(" + " AND ".join(ands) + ")")
    nots = []
    for ni, term in enumerate(parsed.negatives):
        params[f"n{ni}"] = _like(term)
        nots.append(f"AND lower(c.text) NOT LIKE :n{ni} ESCAPE '\\' ")
    sql = (
        "SELECT c.document_id, c.chunk_index, c.page, d.file_type, c.text, "
        f"{_PATH_SUBQUERY} AS path "
        "FROM chunks c JOIN documents d ON d.id = c.document_id "
        "WHERE d.status = 'success' AND ("
        + " OR ".join(ors)
        + ") "
        + "".join(nots)
        + where[0]
        + " ORDER BY c.document_id, c.chunk_index LIMIT :limit"
    )
    rows = list(s.execute(text(sql), params))
    matches = Counter(r.document_id for r in rows)
    taken: Counter[int] = Counter()
    kept = []
    for r in rows:
        taken[r.document_id] += 1
        if taken[r.document_id] <= per_document:
            snippet = substring_snippet(r.text, parsed.terms)
            kept.append(
                _Row(r.document_id, r.chunk_index, r.page, r.file_type, r.path, snippet, 1.0, matches[r.document_id])
            )
    return kept


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
