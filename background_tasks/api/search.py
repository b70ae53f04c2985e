"""``GET /search?q=&mode=``: the store's keyword, semantic and hybrid search over HTTP.

The same search as ``midas search`` (``DocumentStore.search``): hybrid by default, one hit
per document, with the same filters. A snippet is plain text (document text
is never HTML here: a client must escape it to show it); where the query matched is
given as ``highlights``, ``[start, end)`` character offsets into the snippet.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from background_tasks.api.context import ApiContext, get_context
from background_tasks.statuses import SearchStatus
from background_tasks.storage.search import MAX_QUERY_CHARS, SearchHit
from background_tasks.storage.search_filters import MAX_SOURCE_CHARS

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
    responses={422: {"description": "`invalid_query`: too long, a phrase of too many words, a malformed filter"}},
)
def search(
    ctx: Context,
    q: Annotated[str, Query(description=f'words, "a phrase", -excluded, or; at most {MAX_QUERY_CHARS:,} characters')],
    mode: Mode = Mode.HYBRID,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    type: Annotated[str | None, Query(max_length=20, description="only this file type, e.g. pdf")] = None,
    since: Annotated[date | None, Query(description="only documents dated this day or later (2024-01-31)")] = None,
    until: Annotated[date | None, Query(description="only documents dated this day or earlier")] = None,
    source: Annotated[
        str | None,
        Query(max_length=MAX_SOURCE_CHARS, description="a folder, an s3:// prefix, mail, or mail:ACCOUNT"),
    ] = None,
    status: Annotated[SearchStatus | None, Query(description="how complete the document's text is")] = None,
    group: Annotated[bool, Query(description="one hit per document (its best passage); false: every passage")] = True,
) -> dict[str, Any]:
    """Best hits first, each with its document id, path, page, chunk, plain snippet and score.

    A hit is a passage: overlapping chunks that show the same text are one (``chunks``, ``pages``);
    ``more`` counts the document's other matching passages. ``notice`` says why a query found
    nothing it could search for (no words, only common words, words the model does not know), else null.
    """
    hits = ctx.store.search(
        q,
        limit=limit,
        file_type=type,
        marks=(_START, _END),
        mode=mode.value,
        group=group,
        since=since,
        until=until,
        source=source,
        status=status.value if status else None,
    )
    return {
        "query": q,
        "mode": mode.value,
        "notice": hits.notice,
        "hits": [hit_answer(rank, hit) for rank, hit in enumerate(hits, 1)],
    }
