"""Keyword search over the stored chunks, the same on both databases.

SQLite: an FTS5 external-content table kept in sync by triggers, ranked with BM25.
PostgreSQL: a stored, GIN-indexed ``to_tsvector('simple', text)`` column queried with
``websearch_to_tsquery``, so any language works. A SQLite build without FTS5 falls back to an
unranked substring match.

A search runs in steps that each stay cheap when a query matches most of the store: the best
chunk ids by rank (without filters straight from the full-text index, the documents looked at
for those ids only), then the snippets, places and paths of the chunks kept, and, when the
search keeps a few chunks per document, how many chunks of each such document matched
(counted within the document's own range of chunk ids).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from background_tasks.storage.db import is_sqlite, read_scope
from background_tasks.storage.models import ChunkRow
from background_tasks.storage.search import (
    _HL_END,
    _HL_START,
    MAX_ROWS,
    SearchHit,
    _ParsedQuery,
    check_query,
    fts5_query,
    make_hit,
    parse_query,
    substring_snippet,
    websearch_query,
)
from background_tasks.storage.search_filters import SearchFilters, document_ids
from background_tasks.storage.vectors import document_facts

logger = logging.getLogger(__name__)

#: a filter's SQL condition (``AND ...`` over the documents aliased ``d``) and its parameters
Where = tuple[str, dict[str, Any]]
#: (chunk id, document id, score) best first, and how many rows the index gave before the status check
Ranked = tuple[list[tuple[int, int, float]], int]

_PG_HEADLINE = (
    f'StartSel="{_HL_START}", StopSel="{_HL_END}", MaxWords=35, MinWords=15, '
    'ShortWord=2, MaxFragments=2, FragmentDelimiter=" … "'
)


@dataclass(frozen=True)
class _Row:
    document_id: int
    chunk_index: int
    page: int | None
    file_type: str | None
    path: str | None


def _ids(name: str) -> Any:
    return bindparam(name, expanding=True)


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
            tsquery = websearch_query(parsed)
            admitted = document_ids(url, filters)
            allowed = None if admitted is None else sorted(admitted)
            kept = _capped(lambda n: _postgres_ranked(s, tsquery, n, allowed), limit, cap)
            snippets = _postgres_snippets(s, tsquery, [k[0] for k in kept])
        elif has_fts(s):
            match = fts5_query(parsed) or ""
            try:
                kept = _capped(lambda n: _sqlite_ranked(s, match, n, where), limit, cap)
                snippets = _sqlite_snippets(s, match, [k[0] for k in kept])
            except OperationalError as error:
                message = str(error.orig).lower()
                if not any(m in message for m in ("fts5", "match", "unterminated", "syntax")):
                    raise
                logger.warning("full-text query %r rejected by SQLite: %s", match, error.orig)  # never a crash
                return []
        else:
            kept, snippets = _substring(s, parsed, limit, cap, where)
        rows = _rows(s, [k[0] for k in kept])
    # a chunk deleted between the steps is left out
    return [make_hit(rows[i], snippets.get(i, ""), score, marks) for i, _d, score in kept if i in rows]


def count_matches(url: str, query: str, documents: set[int], has_fts: Callable[[Session], bool]) -> dict[int, int]:
    """How many chunks of each of ``documents`` the query matches (for the documents a search shows)."""
    parsed = parse_query(check_query(query))
    if not parsed.groups or not documents:
        return {}
    with read_scope(url) as s:
        if not is_sqlite(url):
            return _postgres_counts(s, websearch_query(parsed), documents)
        if has_fts(s):
            try:
                return _sqlite_counts(s, fts5_query(parsed) or "", documents)
            except OperationalError:
                return {}
        return _substring_counts(s, parsed, documents)


def _capped(ranked: Callable[[int], Ranked], limit: int, cap: int) -> list[tuple[int, int, float]]:
    """The ``limit`` best rows with at most ``cap`` of one document, asking ``ranked`` for more until it has them."""
    # ranking costs the same for any LIMIT (every match is scored), so ask for plenty at once
    fetch = limit if cap >= limit else max(limit * 8, 500)
    while True:
        rows, given = ranked(fetch)
        taken: Counter[int] = Counter()
        kept = []
        for row in rows:
            if taken[row[1]] < cap:
                taken[row[1]] += 1
                kept.append(row)
                if len(kept) == limit:
                    return kept
        if given < fetch or fetch >= MAX_ROWS * 16:
            return kept
        fetch *= 4


def _rows(s: Session, chunk_ids: Sequence[int]) -> dict[int, _Row]:
    """Place, type and path of each kept chunk (chunks, then their documents, each by primary key)."""
    if not chunk_ids:
        return {}
    found = s.execute(
        select(ChunkRow.id, ChunkRow.document_id, ChunkRow.chunk_index, ChunkRow.page).where(
            ChunkRow.id.in_(list(chunk_ids))
        )
    ).all()
    facts = document_facts(s, {r.document_id for r in found})
    rows = {}
    for r in found:
        fact = facts.get(r.document_id)
        if fact is not None:
            rows[int(r.id)] = _Row(r.document_id, r.chunk_index, r.page, fact.file_type, fact.path)
    return rows


# -- SQLite (FTS5) ----------------------------------------------------------------


def _sqlite_ranked(s: Session, match: str, fetch: int, where: Where) -> Ranked:
    params = {"q": match, "fetch": fetch, **where[1]}
    if where[0]:  # filtered: rank among the admitted documents only
        sql = (
            "SELECT c.id, c.document_id, -bm25(chunks_fts) AS score FROM chunks_fts "
            "JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.document_id "
            f"WHERE chunks_fts MATCH :q AND d.status = 'success'{where[0]} "
            "ORDER BY bm25(chunks_fts), c.id LIMIT :fetch"
        )
        rows = [(int(i), int(d), float(sc)) for i, d, sc in s.execute(text(sql), params)]
        return rows, len(rows)
    sql = (
        "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH :q "
        "ORDER BY bm25(chunks_fts), rowid LIMIT :fetch"
    )
    ranked = [(int(i), float(sc)) for i, sc in s.execute(text(sql), params)]
    owners = _processed_owners(s, [i for i, _ in ranked])
    return [(i, owners[i], sc) for i, sc in ranked if i in owners], len(ranked)


def _processed_owners(s: Session, chunk_ids: Sequence[int]) -> dict[int, int]:
    """Chunk id -> document id, for chunks of processed (``success``) documents."""
    owners: dict[int, int] = {}
    for start in range(0, len(chunk_ids), 1000):
        part = list(chunk_ids[start : start + 1000])
        owners.update(
            {
                int(i): int(d)
                for i, d in s.execute(select(ChunkRow.id, ChunkRow.document_id).where(ChunkRow.id.in_(part)))
            }
        )
    processed = {d for d, fact in document_facts(s, set(owners.values())).items() if fact.status == "success"}
    return {i: d for i, d in owners.items() if d in processed}


def _sqlite_snippets(s: Session, match: str, chunk_ids: Sequence[int]) -> dict[int, str]:
    if not chunk_ids:
        return {}
    sql = text(
        "SELECT rowid, snippet(chunks_fts, 0, :hs, :he, '…', 32) FROM chunks_fts "
        "WHERE chunks_fts MATCH :q AND rowid IN :ids"
    ).bindparams(_ids("ids"))
    return {
        int(i): sn for i, sn in s.execute(sql, {"q": match, "hs": _HL_START, "he": _HL_END, "ids": list(chunk_ids)})
    }


def _sqlite_counts(s: Session, match: str, documents: set[int]) -> dict[int, int]:
    """Matching chunks of each document, counted by the index within the document's span of chunk ids.

    A document's chunks are written together, so their ids are one unbroken run, and the count is
    exact; when other chunks lie in between (written by another process at the same time), the
    matches in the span are sorted out by id.
    """
    spans = s.execute(
        select(ChunkRow.document_id, func.min(ChunkRow.id), func.max(ChunkRow.id), func.count())
        .where(ChunkRow.document_id.in_(sorted(documents)))
        .group_by(ChunkRow.document_id)
    ).all()
    counts = {d: 0 for d in documents}
    in_span = "FROM chunks_fts WHERE chunks_fts MATCH :q AND rowid BETWEEN :lo AND :hi"
    for document_id, lo, hi, chunks in spans:
        params = {"q": match, "lo": lo, "hi": hi}
        if hi - lo + 1 == chunks:  # one unbroken run: every id in the span is the document's
            counts[int(document_id)] = int(s.execute(text(f"SELECT count(*) {in_span}"), params).scalar_one())
        else:
            own = set(s.execute(select(ChunkRow.id).where(ChunkRow.document_id == document_id)).scalars())
            matched = s.execute(text(f"SELECT rowid {in_span}"), params).scalars()
            counts[int(document_id)] = sum(1 for i in matched if i in own)
    return counts


# -- PostgreSQL (tsvector) --------------------------------------------------------


def _postgres_ranked(s: Session, tsquery: str, fetch: int, admitted: list[int] | None) -> Ranked:
    """Best chunks by ``ts_rank``; the status of their documents is checked for the ranked ids only, and a
    filter is a list of the documents it admits: no plan that joins the documents row by row."""
    params: dict[str, Any] = {"q": tsquery, "fetch": fetch}
    only = ""
    if admitted is not None:
        only, params["docs"] = "AND c.document_id = ANY(:docs) ", admitted
    sql = (
        "WITH q AS (SELECT websearch_to_tsquery('simple'::regconfig, :q) AS tsq) "
        "SELECT c.id, ts_rank(c.tsv, q.tsq) AS score FROM chunks c, q "
        f"WHERE c.tsv @@ q.tsq {only}ORDER BY score DESC, c.id LIMIT :fetch"
    )
    ranked = [(int(i), float(sc)) for i, sc in s.execute(text(sql), params)]
    owners = _processed_owners(s, [i for i, _ in ranked])
    return [(i, owners[i], sc) for i, sc in ranked if i in owners], len(ranked)


def _postgres_snippets(s: Session, tsquery: str, chunk_ids: Sequence[int]) -> dict[int, str]:
    if not chunk_ids:
        return {}
    sql = text(
        "WITH q AS (SELECT websearch_to_tsquery('simple'::regconfig, :q) AS tsq) "
        "SELECT c.id, ts_headline('simple'::regconfig, c.text, q.tsq, :opts) FROM chunks c, q WHERE c.id IN :ids"
    ).bindparams(_ids("ids"))
    return {int(i): sn for i, sn in s.execute(sql, {"q": tsquery, "opts": _PG_HEADLINE, "ids": list(chunk_ids)})}


def _postgres_counts(s: Session, tsquery: str, documents: set[int]) -> dict[int, int]:
    """Matching chunks of each document, tested chunk by chunk within the documents (never the whole index)."""
    if not documents:
        return {}
    sql = text(
        "WITH q AS (SELECT websearch_to_tsquery('simple'::regconfig, :q) AS tsq) "
        "SELECT c.document_id, count(*) FILTER (WHERE c.tsv @@ q.tsq) FROM chunks c, q "
        "WHERE c.document_id = ANY(:docs) GROUP BY c.document_id"
    )
    return {int(d): int(n) for d, n in s.execute(sql, {"q": tsquery, "docs": sorted(documents)})}


# -- without FTS5 -----------------------------------------------------------------


def _like(term: str) -> str:
    return "%" + term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _substring_where(parsed: _ParsedQuery) -> tuple[str, dict[str, Any]]:
    """``(... OR ...) AND NOT ...`` over chunks ``c`` for the parsed query, and its parameters."""
    params: dict[str, Any] = {}
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
        nots.append(f" AND lower(c.text) NOT LIKE :n{ni} ESCAPE '\\'")
    return "(" + " OR ".join(ors) + ")" + "".join(nots), params


def _substring(
    s: Session, parsed: _ParsedQuery, limit: int, cap: int, where: Where
) -> tuple[list[tuple[int, int, float]], dict[int, str]]:
    """Fallback for SQLite builds without FTS5: case-insensitive substring match, no ranking.

    Capped per document among the first ``limit`` matching chunks."""
    condition, params = _substring_where(parsed)
    sql = (
        "SELECT c.id, c.document_id, c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
        f"WHERE d.status = 'success' AND {condition}{where[0]} ORDER BY c.document_id, c.chunk_index LIMIT :limit"
    )
    taken: Counter[int] = Counter()
    kept, snippets = [], {}
    for r in s.execute(text(sql), {"limit": limit, **params, **where[1]}):
        taken[r.document_id] += 1
        if taken[r.document_id] <= cap:
            kept.append((int(r.id), int(r.document_id), 1.0))
            snippets[int(r.id)] = substring_snippet(r.text, parsed.terms)
    return kept, snippets


def _substring_counts(s: Session, parsed: _ParsedQuery, documents: set[int]) -> dict[int, int]:
    condition, params = _substring_where(parsed)
    sql = text(
        f"SELECT c.document_id, count(*) FROM chunks c WHERE c.document_id IN :docs AND {condition} "
        "GROUP BY c.document_id"
    ).bindparams(_ids("docs"))
    return {int(d): int(n) for d, n in s.execute(sql, {"docs": sorted(documents), **params})}
