"""Semantic and hybrid search: nearest chunks by embedding, fused with the keyword ranking.

``semantic`` ranks chunks by the cosine similarity of their embedding to the query's,
only among vectors of the model the query was embedded with (``storage.vectors``).
``hybrid`` fuses the keyword and the semantic ranking by reciprocal rank fusion
(each list gives ``1 / (RRF_K + rank)``), with one exception: when the query has a
"quoted phrase", or the whole query of several words stands verbatim in a chunk,
those keyword hits come first. ``group_by_document`` keeps the best passage of each
document and counts the others, so overlapping chunks of one document never fill
the page with the same passage twice.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from background_tasks.storage import vectors
from background_tasks.storage.search import SearchHit, _substring_snippet, make_hit, parse_query, with_origins
from background_tasks.storage.values import file_type_of

logger = logging.getLogger(__name__)

MODES = ("keyword", "semantic", "hybrid")
#: the constant of reciprocal rank fusion (60 in Cormack et al. and most systems since)
RRF_K = 60
#: chunks less similar than this to the query are not semantic matches at all
MIN_SIMILARITY = 0.15

KeywordSearch = Callable[[int], list[SearchHit]]


def semantic(
    url: str,
    embedder: Any,
    query: str,
    limit: int,
    file_type: str | None,
    marks: tuple[str, str],
) -> list[SearchHit]:
    """Chunks nearest to the query, best first (score: cosine similarity); [] for a query with no words."""
    parsed = parse_query(query)
    if not parsed.groups or limit <= 0:
        return []
    qvec = embedder.embed([" ".join(parsed.terms)])[0]
    if not qvec.any():
        return []
    info = embedder.info
    matrix = vectors.matrix(url, info.key, info.dim)
    if not len(matrix.chunk_ids):
        return []
    scores = matrix.vectors @ qvec.astype(np.float32)
    negatives = [n.casefold() for n in parsed.negatives]
    file_type = file_type_of(file_type)
    want = min(int(limit), 1000)
    pool = want * 4 + 20
    while True:
        order = vectors.top(scores, pool)
        order = order[scores[order] >= MIN_SIMILARITY]
        found = vectors.chunk_info(url, (int(matrix.chunk_ids[i]) for i in order), file_type)
        hits = []
        for i in order:
            chunk = found.get(int(matrix.chunk_ids[i]))
            if chunk is None or any(n in chunk.text.casefold() for n in negatives):
                continue
            hits.append(make_hit(chunk, _substring_snippet(chunk.text, parsed.terms), float(scores[i]), marks))
        if len(hits) >= want or len(order) < pool:
            return with_origins(url, hits[:want])
        pool *= 4


def _verbatim(url: str, hits: Sequence[SearchHit], phrase: str) -> set[tuple[int, int]]:
    """The keyword hits whose chunk holds ``phrase`` word for word (case and spacing aside)."""
    ids = vectors.chunk_ids_at(url, [(h.document_id, h.chunk_index) for h in hits])
    texts = vectors.chunk_info(url, ids.values())
    target = " ".join(phrase.casefold().split())
    return {pos for pos, cid in ids.items() if cid in texts and target in " ".join(texts[cid].text.casefold().split())}


def hybrid(
    url: str,
    embedder: Any | None,
    query: str,
    limit: int,
    file_type: str | None,
    marks: tuple[str, str],
    keyword: KeywordSearch,
) -> list[SearchHit]:
    """Keyword and semantic rankings of ``limit`` chunks each, fused (see the module); ``keyword(n)`` runs the
    keyword search for n hits."""
    if limit <= 0:
        return []
    pool = min(int(limit), 1000)
    by_words = keyword(pool)
    by_meaning = semantic(url, embedder, query, pool, file_type, marks) if embedder is not None else []
    if not by_meaning:
        return by_words[:limit]
    fused: dict[tuple[int, int], float] = {}
    best: dict[tuple[int, int], SearchHit] = {}
    for ranking in (by_meaning, by_words):  # keyword last: its highlighted snippet is kept
        for rank, hit in enumerate(ranking, 1):
            key = (hit.document_id, hit.chunk_index)
            fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank)
            best[key] = hit
    parsed = parse_query(query)
    words = " ".join(parsed.terms).split()
    if '"' in query:
        exact = {(h.document_id, h.chunk_index) for h in by_words}
    elif len(words) > 1 and len(parsed.groups) == 1 and not parsed.negatives:
        exact = _verbatim(url, by_words, " ".join(words))
    else:
        exact = set()
    order = sorted(fused, key=lambda k: (k not in exact, -fused[k]))
    return [dataclasses.replace(best[k], score=round(fused[k], 6)) for k in order[:limit]]


def group_by_document(hits: Sequence[SearchHit], limit: int) -> list[SearchHit]:
    """The best hit of each document, in order, with ``more`` = how many other chunks of it matched."""
    first: dict[int, int] = {}
    kept: list[SearchHit] = []
    more: list[int] = []
    for hit in hits:
        at = first.get(hit.document_id)
        if at is None:
            first[hit.document_id] = len(kept)
            kept.append(hit)
            more.append(0)
        else:
            more[at] += 1
    return [dataclasses.replace(h, more=m) for h, m in zip(kept, more, strict=True)][:limit]
