"""Semantic and hybrid search: nearest chunks by embedding, fused with the keyword ranking.

``semantic`` ranks chunks by the cosine similarity of their embedding to the query's,
only among vectors of the model the query was embedded with (``storage.vectors``).
``hybrid`` fuses the keyword and the semantic ranking by reciprocal rank fusion
(each list gives ``1 / (RRF_K + rank)``), with one exception: when the query has a
"quoted phrase", or the whole query of several words stands verbatim in a chunk,
those keyword hits come first. Passages and grouping per document: ``storage.search_results``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from background_tasks.storage import search_filters, vectors
from background_tasks.storage.search import SearchHit, make_hit, parse_query, substring_snippet
from background_tasks.storage.search_filters import SearchFilters

logger = logging.getLogger(__name__)

MODES = ("keyword", "semantic", "hybrid")
#: the constant of reciprocal rank fusion (60 in Cormack et al. and most systems since)
RRF_K = 60
#: chunks less similar than this to the query are not semantic matches at all
MIN_SIMILARITY = 0.15

#: ``keyword(n, per_document)``: the keyword search for n hits, at most ``per_document`` of each document
KeywordSearch = Callable[[int, int | None], list[SearchHit]]


def query_vector(embedder: Any, text: str) -> np.ndarray | None:
    """The query's unit vector, or None when the model finds no meaning in it (no known token)."""
    own = getattr(embedder, "query_vector", None)
    if own is not None:
        return own(text)
    vector = embedder.embed([text])[0]
    return vector if vector.any() else None


def understands(embedder: Any | None, query: str) -> bool:
    """Whether the model knows any word of the query (a script it has no vocabulary for: no)."""
    parsed = parse_query(query)
    return embedder is not None and bool(parsed.groups) and query_vector(embedder, " ".join(parsed.terms)) is not None


@dataclass(frozen=True)
class _Scored:
    matrix: vectors.Matrix
    #: each chunk's cosine similarity to the query (-inf where the filters say no)
    chunks: np.ndarray
    #: each document's: the similarity of its document vector to the query (-inf where the filters say no)
    documents: np.ndarray


def _scores(url: str, embedder: Any, parsed: Any, filters: SearchFilters) -> _Scored | None:
    """The model's vectors and their similarity to the query, or None when there is nothing to compare."""
    qvec = query_vector(embedder, " ".join(parsed.terms))
    if qvec is None:
        return None
    info = embedder.info
    matrix = vectors.matrix(url, info.key, info.dim)
    if not len(matrix.chunk_ids):
        return None
    qvec = qvec.astype(np.float32)
    chunks = matrix.vectors @ qvec
    documents = matrix.document_vectors @ qvec
    allowed = search_filters.document_ids(url, filters)
    if allowed is not None:
        wanted = np.fromiter(allowed, np.int64, len(allowed))
        chunks = np.where(np.isin(matrix.document_ids, wanted), chunks, -np.inf)
        documents = np.where(np.isin(matrix.documents, wanted), documents, -np.inf)
    return _Scored(matrix, chunks, documents)


def _ranks(values: np.ndarray) -> np.ndarray:
    """1 for the highest value, 2 for the next ..."""
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(values), np.int64)
    ranks[order] = np.arange(1, len(values) + 1)
    return ranks


def _document_scores(scored: _Scored) -> np.ndarray:
    """Each document's score: reciprocal rank fusion of its rank by its best chunk (a passage that says
    it) and by its document vector (what the whole document is about); -inf when no chunk matches."""
    best = np.maximum.reduceat(scored.chunks, scored.matrix.starts)
    fused = 1.0 / (RRF_K + _ranks(best)) + 1.0 / (RRF_K + _ranks(scored.documents))
    return np.where(best >= MIN_SIMILARITY, fused, -np.inf)


def _top_rows(scored: _Scored, pool: int, per_document: int | None) -> tuple[np.ndarray, dict[int, tuple[int, float]]]:
    """Rows to show, best first, and per document (how many of its matching rows were left out, its score).

    Without ``per_document``: the ``pool`` most similar chunks. With it: the ``pool`` best documents
    (``_document_scores``), each with its ``per_document`` most similar chunks.
    """
    matrix, scores = scored.matrix, scored.chunks
    if not per_document:
        order = vectors.top(scores, pool)
        return order[scores[order] >= MIN_SIMILARITY], {}
    fused = _document_scores(scored)
    documents = vectors.top(fused, pool)
    rows: list[np.ndarray] = []
    about: dict[int, tuple[int, float]] = {}
    for j in documents[np.isfinite(fused[documents])]:
        span = matrix.rows_of(int(j))
        own = scores[span]
        matching = np.flatnonzero(own >= MIN_SIMILARITY)
        shown = matching[np.argsort(-own[matching], kind="stable")[:per_document]]
        rows.append(shown + span.start)
        about[int(matrix.documents[j])] = (len(matching) - len(shown), float(fused[j]))
    return (np.concatenate(rows) if rows else np.zeros(0, np.int64)), about


def semantic(
    url: str,
    embedder: Any,
    query: str,
    limit: int,
    filters: SearchFilters,
    marks: tuple[str, str],
    per_document: int | None = None,
) -> list[SearchHit]:
    """Chunks nearest to the query, best first (score: cosine similarity); [] for a query with no words.

    Documents the filters do not admit are masked out before ranking. ``per_document``: the
    ``limit`` best documents (``_document_scores``; the score of a document's first hit), each
    with at most that many of its chunks (the first one's ``more`` counts its other matching
    chunks), so one long document cannot fill the page; without it, the ``limit`` nearest chunks.
    """
    parsed = parse_query(query)
    if not parsed.groups or limit <= 0:
        return []
    scored = _scores(url, embedder, parsed, filters)
    if scored is None:
        return []
    matrix = scored.matrix
    negatives = [n.casefold() for n in parsed.negatives]
    want = min(int(limit), 1000)
    pool = want + 10 if per_document else want * 4 + 20
    while True:
        rows, about = _top_rows(scored, pool, per_document)
        found = vectors.chunk_info(url, (int(matrix.chunk_ids[i]) for i in rows))
        hits: list[SearchHit] = []
        documents: set[int] = set()
        for i in rows:
            chunk = found.get(int(matrix.chunk_ids[i]))
            if chunk is None or any(n in chunk.text.casefold() for n in negatives):
                continue
            snippet = substring_snippet(chunk.text, parsed.terms, whole_words=True)
            hit = make_hit(chunk, snippet, float(scored.chunks[i]), marks)
            if chunk.document_id not in documents:
                documents.add(chunk.document_id)
                left_out, fused = about.get(chunk.document_id, (0, hit.score))
                hit = dataclasses.replace(hit, more=left_out, score=round(fused, 6))
            hits.append(hit)
        enough = len(documents) >= want if per_document else len(hits) >= want
        exhausted = len(about) < pool if per_document else len(rows) < pool
        if enough or exhausted:
            if not per_document:
                return hits[:want]
            first = _first(hits, want)
            return [h for h in hits if h.document_id in first]
        pool *= 4


def _first(hits: Sequence[SearchHit], n: int) -> set[int]:
    """The first ``n`` documents in the order of ``hits``."""
    seen: list[int] = []
    for hit in hits:
        if hit.document_id not in seen:
            seen.append(hit.document_id)
            if len(seen) == n:
                break
    return set(seen)


def _verbatim(url: str, hits: Sequence[SearchHit], phrase: str) -> set[tuple[int, int]]:
    """The keyword hits whose chunk holds ``phrase`` word for word (case and spacing aside)."""
    chunks = vectors.chunks_at(url, [(h.document_id, h.chunk_index) for h in hits])
    target = " ".join(phrase.casefold().split())
    return {pos for pos, chunk in chunks.items() if target in " ".join(chunk.text.casefold().split())}


def _document_ranks(hits: Sequence[SearchHit]) -> dict[int, int]:
    """Each document's rank (1 = best) by its first hit."""
    ranks: dict[int, int] = {}
    for hit in hits:
        ranks.setdefault(hit.document_id, len(ranks) + 1)
    return ranks


def _exact(url: str, query: str, by_words: Sequence[SearchHit]) -> set[tuple[int, int]]:
    """Keyword hits that hold the query as typed: a "quoted phrase", or the whole query (one word too) verbatim."""
    parsed = parse_query(query)
    words = " ".join(parsed.terms).split()
    if '"' in query:
        return {(h.document_id, h.chunk_index) for h in by_words}
    if words and len(parsed.groups) == 1 and not parsed.negatives:
        return _verbatim(url, by_words, " ".join(words))
    return set()


def hybrid(
    url: str,
    embedder: Any | None,
    query: str,
    limit: int,
    filters: SearchFilters,
    marks: tuple[str, str],
    keyword: KeywordSearch,
    per_document: int | None = None,
) -> list[SearchHit]:
    """Keyword and semantic rankings fused (see the module); ``keyword(n, per_document)`` runs the keyword search.

    ``per_document``: ``limit`` documents are ranked, each by its best rank in either list, and
    keep at most that many passages of each list (see ``semantic``); without it, ``limit`` chunks.
    """
    if limit <= 0:
        return []
    want = min(int(limit), 1000)
    # the two rankings at once: the database works on the words while numpy compares the vectors
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="midas-keyword") as pool:
        words = pool.submit(keyword, want * per_document if per_document else want, per_document)
        by_meaning = semantic(url, embedder, query, want, filters, marks, per_document) if embedder is not None else []
        by_words = words.result()
    if not by_meaning:
        return by_words
    exact = _exact(url, query, by_words)
    if per_document:
        return _fuse_documents(by_words, by_meaning, exact)[: want * per_document * 2]
    fused: dict[tuple[int, int], float] = {}
    best: dict[tuple[int, int], SearchHit] = {}
    for ranking in (by_meaning, by_words):  # keyword last: its highlighted snippet is kept
        for rank, hit in enumerate(ranking, 1):
            key = (hit.document_id, hit.chunk_index)
            fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank)
            best[key] = hit
    order = sorted(fused, key=lambda k: (k not in exact, -fused[k]))
    return [dataclasses.replace(best[k], score=round(fused[k], 6)) for k in order[:want]]


def _fuse_documents(
    by_words: Sequence[SearchHit], by_meaning: Sequence[SearchHit], exact: set[tuple[int, int]]
) -> list[SearchHit]:
    """Documents by reciprocal rank fusion of their ranks in both lists (exact matches first); each
    document's keyword passages, then its semantic ones, the first carrying the fused score."""
    ranks = (_document_ranks(by_words), _document_ranks(by_meaning))
    fused = {d: sum(1.0 / (RRF_K + r[d]) for r in ranks if d in r) for d in {*ranks[0], *ranks[1]}}
    exact_documents = {d for d, _ in exact}
    order = sorted(fused, key=lambda d: (d not in exact_documents, -fused[d], d))
    passages: dict[int, list[SearchHit]] = {d: [] for d in order}
    for hit in (*by_words, *by_meaning):
        mine = passages[hit.document_id]
        if all(h.chunk_index != hit.chunk_index for h in mine):
            mine.append(hit)
    out: list[SearchHit] = []
    for d in order:
        first, *rest = passages[d]
        left_out = max((h.more for h in passages[d]), default=0)  # each list's uncounted matches: at least this many
        out += [dataclasses.replace(first, score=round(fused[d], 6), more=left_out), *rest]
    return out
