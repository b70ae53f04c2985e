"""Text normalization and overlap-aware chunking.

Search and retrieval work on chunks: pieces of a document's text small enough
to rank and show, cut at the most natural boundary available (blank line,
line, sentence, clause, word) so a hit reads like prose. Every chunk is an
exact slice of the normalized text, so ``start``/``end`` always point back
into the document, and neighbouring chunks share a little text (the overlap)
so a sentence cut at a chunk border is still found whole in one of them.

Guarantees of ``chunk_text`` (tested with randomized inputs):

* ``chunk.text == text[chunk.start:chunk.end]`` and ``len(chunk.text) <= size``;
* no chunk is empty or whitespace only;
* starts and ends strictly increase;
* consecutive chunks share at most ``overlap`` characters;
* there is no gap between consecutive chunks, so the chunks without their
  overlaps give back the text exactly. Only whitespace that cannot share a
  chunk with any text is ever left out: a run of whitespace at least
  ``size`` long, or trailing/leading whitespace that does not fit (normalized
  text has none).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from background_tasks.extraction.extractors.base import PageSpan

# --------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------

#: vertical tab, form feed, file/group/record separators, NEL, LINE SEPARATOR
_LINE_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028]")
#: control characters other than \t and \n, C1 controls, BOM / zero-width no-break space
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\ufeff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_MANY_NEWLINES = re.compile("\n{3,}")


def normalize_text(text: str) -> str:
    """Canonical form of extracted text, so offsets, search and dedup agree.

    NFC; ``\\r\\n``/``\\r`` (and other line-break characters) become ``\\n``;
    control characters other than ``\\n`` and ``\\t`` are dropped (lone
    surrogates become U+FFFD, databases refuse them); trailing whitespace on
    each line is removed; three or more newlines become two; the ends are
    stripped. Idempotent: ``normalize_text(normalize_text(t)) == normalize_text(t)``.
    """
    if not text:
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _LINE_BREAKS.sub("\n", text).replace("\u2029", "\n\n")
    text = _CONTROL.sub("", text)
    if _LONE_SURROGATE.search(text):
        text = _LONE_SURROGATE.sub("\ufffd", text)
    # Line by line rather than a regex: a regex for "spaces before a newline"
    # backtracks quadratically on a long run of spaces that ends in text.
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _MANY_NEWLINES.sub("\n\n", text).strip()
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text


def normalize_with_pages(text: str, pages: Sequence[PageSpan]) -> tuple[str, tuple[PageSpan, ...]]:
    """Normalize ``text`` and move the page spans along with it.

    Normalization shifts offsets, so each page (and any text between pages)
    is normalized on its own and the non-empty parts are joined with a blank
    line. Pages that normalize to nothing get no span. Spans are sorted;
    overlapping or out-of-range spans are clipped. The result is itself
    normalized.
    """
    if not pages:
        return normalize_text(text), ()
    n = len(text)
    segments: list[tuple[int | None, str]] = []
    pos = 0
    for span in sorted(pages, key=lambda p: (p.start, p.end)):
        start = min(max(span.start, pos), n)
        end = min(max(span.end, start), n)
        if start > pos:
            segments.append((None, text[pos:start]))
        segments.append((span.number, text[start:end]))
        pos = end
    if pos < n:
        segments.append((None, text[pos:]))

    parts: list[str] = []
    spans: list[PageSpan] = []
    length = 0
    for number, raw in segments:
        part = normalize_text(raw)
        if not part:
            continue
        if parts:
            parts.append("\n\n")
            length += 2
        if number is not None:
            spans.append(PageSpan(number, length, length + len(part)))
        parts.append(part)
        length += len(part)
    return "".join(parts), tuple(spans)


# --------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """``text == normalized_text[start:end]``; ``page`` is where the chunk begins."""

    index: int
    text: str
    start: int
    end: int
    page: int | None


#: Split levels, strongest first. A chunk ends right after the separator, so
#: the next chunk begins at the start of a paragraph, line, sentence or word.
_LEVELS: tuple[tuple[str, ...], ...] = (
    ("\n\n",),
    ("\n",),
    (". ", "? ", "! ", ".\t", "。", "！", "？"),
    ("; ", "；"),
    (", ", "，", "、"),
    (" ", "\t"),
)
_NON_SPACE = re.compile(r"\S")
_SPACE_RUN = re.compile(r"\s+")


def _next_non_space(text: str, pos: int) -> int:
    """Index of the first non-whitespace character at or after ``pos`` (len(text) if none)."""
    match = _NON_SPACE.search(text, pos)
    return match.start() if match else len(text)


def _split_point(text: str, lo: int, hi: int) -> int:
    """Best end for a chunk: the last separator ending in ``[lo, hi]``, strongest level first."""
    for level in _LEVELS:
        best = -1
        for sep in level:
            idx = text.rfind(sep, max(0, lo - len(sep)), hi)
            if idx >= 0:
                best = max(best, idx + len(sep))
        if best >= lo:
            return best
    # Hard cut; do not separate a character from its combining marks.
    cut = hi
    while cut > lo and cut < len(text) and unicodedata.combining(text[cut]):
        cut -= 1
    return cut


def _overlap_start(text: str, lo: int, end: int, overlap: int) -> int:
    """Start of the next chunk in ``[lo, end]``: as far back as allowed, at a boundary.

    Aims for about ``overlap`` shared characters: the earliest boundary that
    keeps at least half the overlap, strongest level first; otherwise the
    first word boundary; otherwise ``lo``.
    """
    if lo >= end:
        return end
    target_hi = max(lo, end - overlap // 2)
    for level in _LEVELS:
        best = -1
        for sep in level:
            idx = text.find(sep, max(0, lo - len(sep)), target_hi)
            if idx >= 0:
                point = idx + len(sep)
                best = point if best < 0 else min(best, point)
        if best >= lo:
            return _skip_space(text, best, end)
    match = _SPACE_RUN.search(text, lo, end)
    if match:
        return match.end()
    return lo


def _skip_space(text: str, pos: int, limit: int) -> int:
    """``pos`` moved past whitespace, but not beyond ``limit``."""
    match = _SPACE_RUN.match(text, pos, limit)
    return match.end() if match else pos


class _PageIndex:
    """Page number of a character offset: the containing span, else the one before."""

    def __init__(self, pages: Iterable[PageSpan]) -> None:
        ordered = sorted(pages, key=lambda p: (p.start, p.end))
        self._starts = [p.start for p in ordered]
        self._pages = ordered

    def page_at(self, pos: int) -> int | None:
        i = bisect.bisect_right(self._starts, pos) - 1
        if i < 0:
            return None
        return self._pages[i].number


def chunk_text(text: str, size: int = 1000, overlap: int = 200, pages: Sequence[PageSpan] = ()) -> list[Chunk]:
    """Cut ``text`` into overlapping chunks of at most ``size`` characters.

    Chunks end at the strongest boundary in the second half of the window
    (blank line, newline, sentence end, ``;``, ``,``, space, else a hard cut)
    and the next chunk starts about ``overlap`` characters earlier, snapped
    to a boundary. ``pages`` are spans of ``text`` (see ``normalize_with_pages``);
    a chunk's page is that of its first non-whitespace character. Runs in
    time linear in ``len(text)``.
    """
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be between 0 and size - 1, got {overlap} for size {size}")
    n = len(text)
    first = _next_non_space(text, 0)
    if first >= n:
        return []
    page_index = _PageIndex(pages) if pages else None

    chunks: list[Chunk] = []
    start = 0 if first < size else first
    new_from = first  # first non-space character this chunk must include
    while True:
        if n - start <= size:
            end = n
        else:
            hi = start + size
            lo = max(start + size // 2, new_from + 1)
            end = _split_point(text, lo, hi)
            end = _skip_space(text, end, hi)
        page = page_index.page_at(_next_non_space(text, start)) if page_index else None
        chunks.append(Chunk(len(chunks), text[start:end], start, end, page))
        if end >= n:
            break
        new_from = _next_non_space(text, end)
        if new_from >= n:
            break  # only whitespace left, too long to fit in the last chunk
        lo = max(end - overlap, start + 1, new_from - size + 1)
        start = _overlap_start(text, lo, end, overlap) if lo <= end else new_from
    return chunks
