"""``GET /search?q=&mode=``: the store's keyword, semantic and hybrid search over HTTP.

The same search as ``midas search`` (``DocumentStore.search``): hybrid by default, one hit
per document in the semantic and hybrid modes. A snippet is plain text (document text
is never HTML here: a client must escape it to show it); where the query matched is
given as ``highlights``, ``[start, end)`` character offsets into the snippet.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from background_tasks.api.context import ApiContext, get_context
from background_tasks.storage.search import MAX_QUERY_CHARS, SearchHit

router = APIRouter(tags=["search"])

Context = Annotated[ApiContext, Depends(get_context)]

#: private-use characters around matches, turned into offsets (they cannot occur in stored text that matters)
_START, _END = "\ue000", "\ue001"


class Mode(StrEnum):
    """keyword: the words; semantic: the meaning (embeddings); hybrid: both, fused."""

    KEYWORD = "keyword"
    SEMANTIC = "semantic"
    HYBRID = "hybrid"


def split_marks(marked: str) -> tuple[str, list[list[int]]]:
    """The snippet without its match marks, and each marked stretch as ``[start, end)``."""
    text: list[str] = []
    spans: list[list[int]] = []
    length = 0
    start: int | None = None
    for ch in marked:
        if ch == _START:
            start = length
        elif ch == _END:
            if start is not None and length > start:
                spans.append([start, length])
            start = None
        else:
            text.append(ch)
            length += 1
    return "".join(text), spans


def hit_answer(rank: int, hit: SearchHit) -> dict[str, Any]:
    snippet, highlights = split_marks(hit.snippet)
    return {**dataclasses.asdict(hit), "rank": rank, "snippet": snippet, "highlights": highlights}


@router.get(
    "/search",
    summary="Search processed documents by their words, their meaning, or both",
    responses={422: {"description": "`invalid_query`: too long, or a phrase of too many words"}},
)
def search(
    ctx: Context,
    q: Annotated[str, Query(description=f'words, "a phrase", -excluded, or; at most {MAX_QUERY_CHARS:,} characters')],
    mode: Mode = Mode.HYBRID,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    type: Annotated[str | None, Query(max_length=20, description="only this file type, e.g. pdf")] = None,
) -> dict[str, Any]:
    """Best hits first, each with its document id, path, page, chunk, plain snippet and score."""
    hits = ctx.store.search(q, limit=limit, file_type=type, marks=(_START, _END), mode=mode.value)
    return {"query": q, "mode": mode.value, "hits": [hit_answer(rank, hit) for rank, hit in enumerate(hits, 1)]}
