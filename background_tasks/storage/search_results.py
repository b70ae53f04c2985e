"""What a search answers: passages (overlapping chunks collapsed), one per document, and a notice.

Chunks overlap (``MIDAS_CHUNK_OVERLAP``), so a match in the overlap is found twice, in two chunks
that may even sit on two pages (GeoTopo's pages 10 and 11). ``collapse_overlaps`` folds such a
pair into one passage: two neighbouring chunks of a document stand for the same passage when the
snippet shown for one of them lies inside the text they share. The passage keeps the better
hit's snippet, score, page and chunk, and lists every chunk and page it stands for
(``SearchHit.chunks``, ``SearchHit.pages``). ``group_by_document`` then keeps each document's best
passage and counts the others (``SearchHit.more``).

``SearchResults`` is the list of hits with a ``notice`` for the user when the query could not
be searched as asked (no words, only common words, words the model does not know).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from background_tasks.processing.textstats import SHORT_STOPWORDS, STOPWORDS
from background_tasks.storage import semantic_search, vectors
from background_tasks.storage.search import SearchHit, parse_query
from background_tasks.storage.vectors import ChunkInfo

#: fragments of a snippet shorter than this (after the ellipses are cut) are not compared
_MIN_FRAGMENT = 12


class SearchResults(list[SearchHit]):
    """The hits, best first, and ``notice``: why nothing (or only something) could be searched, else None."""

    def __init__(self, hits: Iterable[SearchHit] = (), notice: str | None = None) -> None:
        super().__init__(hits)
        self.notice = notice


# --------------------------------------------------------------------------
# The query, before searching
# --------------------------------------------------------------------------


def no_word_notice(query: str) -> str | None:
    """Why a query has nothing to search for, or None when it has words."""
    parsed = parse_query(query)
    if parsed.groups:
        return None
    if parsed.negatives:
        return "the query only excludes words (-word); say what to look for as well"
    return "the query has no word to search for (punctuation and emoji are not searched)"


def only_common_words(query: str) -> bool:
    """A query, no phrase quoted, whose every word is a stop word ("the of and a"): it carries no meaning."""
    if '"' in query:
        return False
    words = [w.casefold() for t in parse_query(query).terms for w in t.split()]
    return bool(words) and all(w in STOPWORDS or w in SHORT_STOPWORDS for w in words)


COMMON_WORDS_NOTICE = (
    "the query has only common words, which say nothing about what a document is about; "
    'add a word, or "quote" them to find them as a phrase'
)


def notice(mode: str, query: str, embedder: Any | None, meaningless: bool, found: Sequence[SearchHit]) -> str | None:
    """What the user should know about how the query was searched (None: nothing unusual)."""
    if meaningless:
        return COMMON_WORDS_NOTICE
    if found or mode == "keyword":
        return None
    if embedder is None:
        return "semantic search is off (MIDAS_EMBEDDINGS=false); keyword mode finds the words"
    if not semantic_search.understands(embedder, query):
        then = "so only the words themselves were looked for" if mode == "hybrid" else "keyword mode finds the words"
        return f"the embedding model knows none of these words (a script it has no vocabulary for); {then}"
    return None


# --------------------------------------------------------------------------
# Passages
# --------------------------------------------------------------------------


def _fragments(snippet: str, marks: tuple[str, str]) -> list[str]:
    plain = snippet.replace(marks[0], "").replace(marks[1], "") if all(marks) else snippet
    pieces = (" ".join(piece.split()) for piece in plain.split("…"))
    return [p for p in pieces if len(p) >= _MIN_FRAGMENT]


def _within(snippet: str, shared: str, marks: tuple[str, str]) -> bool:
    """Whether every fragment of the snippet lies in ``shared``."""
    fragments = _fragments(snippet, marks)
    return bool(fragments) and all(f in shared for f in fragments)


def _marked(snippet: str, marks: tuple[str, str]) -> set[str]:
    """The words a snippet marks as matches."""
    if not all(marks):
        return set()
    pattern = re.escape(marks[0]) + "(.+?)" + re.escape(marks[1])
    return {m.group(1).casefold() for m in re.finditer(pattern, snippet, re.DOTALL) if m.group(1).strip()}


def _only_within(text: str, words: set[str], lo: int, hi: int) -> bool:
    """Whether every occurrence of every word in ``text`` lies in ``[lo, hi)`` (and each occurs)."""
    folded = text.casefold()
    for word in words:
        spots = [m.start() for m in re.finditer(re.escape(word), folded)]
        if not spots or any(not lo <= p or p + len(word) > hi for p in spots):
            return False
    return True


def same_passage(a: ChunkInfo, b: ChunkInfo, snippet_a: str, snippet_b: str, marks: tuple[str, str]) -> bool:
    """Whether two hits of neighbouring, overlapping chunks show the same text.

    They do when what one of them matched lies only in the text both chunks share (its marked
    words occur nowhere else in it), or, for a snippet without marks (a semantic hit), when the
    snippet itself lies in that shared text.
    """
    (first, first_snippet), (second, second_snippet) = sorted(
        ((a, snippet_a), (b, snippet_b)), key=lambda pair: pair[0].chunk_index
    )
    if first.document_id != second.document_id or second.chunk_index != first.chunk_index + 1:
        return False
    shared_chars = first.end_char - second.start_char
    if shared_chars <= 0:
        return False
    for text, snippet, lo, hi in (
        (second.text, second_snippet, 0, shared_chars),
        (first.text, first_snippet, len(first.text) - shared_chars, len(first.text)),
    ):
        words = _marked(snippet, marks)
        if words and _only_within(text, words, lo, hi):
            return True
    shared = " ".join(second.text[:shared_chars].split())
    return any(
        not _marked(snippet, marks) and _within(snippet, shared, marks) for snippet in (first_snippet, second_snippet)
    )


def collapse_overlaps(url: str, hits: Sequence[SearchHit], marks: tuple[str, str]) -> list[SearchHit]:
    """The hits with each set of overlapping chunks that show one passage folded into its best hit."""
    if not hits:
        return []
    at = {(h.document_id, h.chunk_index) for h in hits}
    neighbours = [p for p in at if (p[0], p[1] - 1) in at or (p[0], p[1] + 1) in at]  # only these can fold
    chunks = vectors.chunks_at(url, neighbours)
    kept: list[list[SearchHit]] = []  # each passage: its hits, best first
    of_document: dict[int, list[int]] = {}
    for hit in hits:
        mine = chunks.get((hit.document_id, hit.chunk_index))
        home = None
        if mine is not None:
            for at in of_document.get(hit.document_id, []):
                for other in kept[at]:
                    theirs = chunks.get((other.document_id, other.chunk_index))
                    if theirs is not None and same_passage(theirs, mine, other.snippet, hit.snippet, marks):
                        home = at
                        break
                if home is not None:
                    break
        if home is None:
            of_document.setdefault(hit.document_id, []).append(len(kept))
            kept.append([hit])
        else:
            kept[home].append(hit)
    return [
        dataclasses.replace(
            members[0],
            chunks=tuple(sorted({m.chunk_index for m in members})),
            pages=tuple(sorted({m.page for m in members if m.page is not None})),
        )
        for members in kept
    ]


def group_by_document(hits: Sequence[SearchHit], limit: int) -> list[SearchHit]:
    """The best passage of each document, in order, with ``more`` = how many other passages of it matched.

    A document's first hit may already count matches that were not fetched (its ``more``); its
    other passages here are added to that.
    """
    first: dict[int, int] = {}
    kept: list[SearchHit] = []
    more: list[int] = []
    for hit in hits:
        at = first.get(hit.document_id)
        if at is None:
            first[hit.document_id] = len(kept)
            kept.append(hit)
            more.append(hit.more)
        else:
            more[at] += 1
    return [dataclasses.replace(h, more=m) for h, m in zip(kept, more, strict=True)][:limit]


def count_unfetched(
    found: Sequence[SearchHit], passages: Sequence[SearchHit], counts: Mapping[int, int], fetched: Mapping[int, int]
) -> list[SearchHit]:
    """``more`` of each shown document with the keyword matches no search step fetched added.

    A document's first passage may carry the semantic matches left unfetched (its ``more`` before
    grouping); the keyword ones (``counts`` less ``fetched``) may be the same chunks, so the larger
    of the two is added, not their sum: ``more`` is how many other passages matched, at least.
    """
    carried = {}
    for hit in passages:
        carried.setdefault(hit.document_id, hit.more)
    out = []
    for hit in found:
        before = carried.get(hit.document_id, 0)
        unfetched = max(0, counts.get(hit.document_id, 0) - fetched.get(hit.document_id, 0))
        out.append(dataclasses.replace(hit, more=hit.more - before + max(before, unfetched)))
    return out
