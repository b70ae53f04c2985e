"""Normalization and chunking: exact examples plus seeded randomized property checks.

hypothesis is not installed, so the property tests draw their inputs from a
seeded ``random.Random``: every run checks the same few hundred texts, and a
failure message names the seed and case so it can be replayed.
"""

from __future__ import annotations

import random
import unicodedata
from itertools import pairwise

import pytest

from background_tasks.extraction.extractors.base import PageSpan, TextBuilder
from background_tasks.processing.chunking import Chunk, chunk_text, normalize_text, normalize_with_pages
from tests.corpus import corpus_dir

# --------------------------------------------------------------------------
# Random text generation
# --------------------------------------------------------------------------

WORDS = [
    "the", "a", "document", "Celery", "worker", "queue", "Zürich", "naïve", "façade", "東京", "データ",
    "Ελληνικά", "русский", "e\u0301te\u0301", "x", "1234", "3.14", "e.g.", "Dr.", "well-known", "l'été",
    "😀", "A\u0308rger", "مرحبا", "hello", "world", "supercalifragilisticexpialidocious",
]  # fmt: skip
PUNCT = [". ", "? ", "! ", "; ", ", ", " ", " ", " ", " ", "\n", "\n\n", "\t", "。", "、", ": ", " - "]


def random_text(rng: random.Random, max_words: int = 400, max_space_run: int = 0) -> str:
    """Prose-like text with words, punctuation, line breaks and the odd very long word or space run."""
    parts: list[str] = []
    for _ in range(rng.randint(0, max_words)):
        roll = rng.random()
        if roll < 0.02:
            parts.append("".join(rng.choice("abcdefghij") for _ in range(rng.randint(50, 400))))  # long token
        elif roll < 0.03 and max_space_run:
            parts.append(rng.choice(" \n\t") * rng.randint(2, max_space_run))
        else:
            parts.append(rng.choice(WORDS))
        parts.append(rng.choice(PUNCT))
    return "".join(parts)


def prose(rng: random.Random, n_words: int) -> str:
    """Plain prose: short ASCII words, sentences, paragraphs."""
    vocab = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda"]
    out = []
    for i in range(n_words):
        out.append(rng.choice(vocab))
        out.append(". " if i % 13 == 12 else ("\n\n" if i % 97 == 96 else " "))
    return "".join(out).strip()


# --------------------------------------------------------------------------
# Invariant checker
# --------------------------------------------------------------------------


def check_chunks(text: str, chunks: list[Chunk], size: int, overlap: int, gaps_allowed: bool = False) -> None:
    """Assert every documented guarantee of chunk_text."""
    if not text.strip():
        assert chunks == []
        return
    assert chunks, "non-blank text must give at least one chunk"
    for i, c in enumerate(chunks):
        assert c.index == i
        assert c.text == text[c.start : c.end]
        assert 0 < len(c.text) <= size, (i, len(c.text), size)
        assert c.text.strip(), f"chunk {i} is whitespace only"
    for prev, cur in pairwise(chunks):
        assert cur.start > prev.start
        assert cur.end > prev.end
        shared = prev.end - cur.start
        assert shared <= overlap, (shared, overlap)
        if shared < 0:
            assert gaps_allowed, f"gap between {prev.end} and {cur.start}"
            gap = text[prev.end : cur.start]
            assert not gap.strip(), "only whitespace may be skipped"
            assert len(gap) >= 1
    # the text outside the chunks is whitespace only, and usually there is none
    rebuilt = [text[: chunks[0].start], chunks[0].text]
    prev_end = chunks[0].end
    for c in chunks[1:]:
        if c.start >= prev_end:
            rebuilt.append(text[prev_end : c.start])
            rebuilt.append(c.text)
        else:
            rebuilt.append(c.text[prev_end - c.start :])
        prev_end = c.end
    rebuilt.append(text[prev_end:])
    assert "".join(rebuilt) == text
    assert not text[: chunks[0].start].strip()
    assert not text[chunks[-1].end :].strip()
    if text == normalize_text(text):
        assert chunks[0].start == 0
        assert chunks[-1].end == len(text)
    if not gaps_allowed:
        exact = chunks[0].text + "".join(c.text[p.end - c.start :] for p, c in pairwise(chunks))
        assert exact == text[chunks[0].start : chunks[-1].end]


# --------------------------------------------------------------------------
# normalize_text
# --------------------------------------------------------------------------


def test_normalize_examples() -> None:
    assert normalize_text("") == ""
    assert normalize_text("  \n\t \r\n ") == ""
    assert normalize_text("a\r\nb\rc") == "a\nb\nc"
    assert normalize_text("line one   \nline two\t\n") == "line one\nline two"
    assert normalize_text("a\n\n\n\n\nb") == "a\n\nb"
    assert normalize_text("a\n  \n \t\n\nb") == "a\n\nb"  # blank-looking lines count as blank
    assert normalize_text("nul\x00 and bell\x07 and esc\x1b[31m") == "nul and bell and esc[31m"
    assert normalize_text("tab\tkept") == "tab\tkept"
    assert normalize_text("\ufeffBOM") == "BOM"
    assert normalize_text("page\x0cbreak") == "page\nbreak"
    assert normalize_text("e\u0301") == "\u00e9"  # NFC
    assert normalize_text("e\x00\u0301") == "\u00e9"  # NFC after removing controls
    assert normalize_text("bad \ud800 surrogate") == "bad \ufffd surrogate"
    assert normalize_text("para\u2029next") == "para\n\nnext"


def test_normalize_random_properties() -> None:
    rng = random.Random(20240601)
    alphabet = "ab é\u0301\n\r\t\x00\x07\x1b\x0b\x0c\u2028\u2029\ufeff \u00a0\u3000x東\ud800"
    for case in range(500):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        out = normalize_text(raw)
        msg = f"case {case}: {raw!r} -> {out!r}"
        assert normalize_text(out) == out, msg  # idempotent
        assert out == out.strip(), msg
        assert "\r" not in out and "\n\n\n" not in out, msg
        assert all(ch in "\n\t" or unicodedata.category(ch) != "Cc" for ch in out), msg
        assert all(line == line.rstrip() for line in out.split("\n")), msg
        assert unicodedata.is_normalized("NFC", out), msg
        out.encode("utf-8")  # raises on a lone surrogate


def test_normalize_long_space_run_is_fast() -> None:
    # A regex for trailing spaces would backtrack quadratically here.
    text = "x" + " " * 300_000 + "y\n"
    assert normalize_text(text) == text.strip()


# --------------------------------------------------------------------------
# normalize_with_pages
# --------------------------------------------------------------------------


def test_normalize_with_pages_maps_spans() -> None:
    builder = TextBuilder()
    raw_pages = ["  Page one\r\nline   \n\n\n\n", "", "\x00\x00", "Page  three \t\r\n\r\n\r\nend", "  four"]
    for number, page in enumerate(raw_pages, 1):
        builder.add(page, page=number)
    text, spans = normalize_with_pages(builder.text(), builder.pages())
    assert normalize_text(text) == text
    assert [s.number for s in spans] == [1, 4, 5]  # pages 2 and 3 normalize to nothing
    for span in spans:
        assert text[span.start : span.end] == normalize_text(raw_pages[span.number - 1])
    assert text == "Page one\nline\n\nPage  three\n\nend\n\nfour"


def test_normalize_with_pages_unpaged_parts_and_bad_spans() -> None:
    raw = "cover\n\nP1 text\n\nbetween\n\nP2 text\n\ntrailer"
    p1 = raw.index("P1")
    p2 = raw.index("P2")
    pages = [PageSpan(2, p2, p2 + 7), PageSpan(1, p1, p1 + 7), PageSpan(9, 5000, 6000)]  # unsorted, out of range
    text, spans = normalize_with_pages(raw, pages)
    assert text == raw
    assert [(s.number, text[s.start : s.end]) for s in spans] == [(1, "P1 text"), (2, "P2 text")]
    assert normalize_with_pages("  x ", ()) == ("x", ())


# --------------------------------------------------------------------------
# chunk_text
# --------------------------------------------------------------------------


def test_chunk_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        chunk_text("abc", size=0)
    with pytest.raises(ValueError):
        chunk_text("abc", size=10, overlap=10)
    with pytest.raises(ValueError):
        chunk_text("abc", size=10, overlap=-1)


def test_chunk_small_and_blank() -> None:
    assert chunk_text("") == []
    assert chunk_text(" \n\n\t ") == []
    assert chunk_text("Hello world.") == [Chunk(0, "Hello world.", 0, 12, None)]


def test_chunk_prefers_paragraph_then_sentence_boundaries() -> None:
    para = "Alpha beta gamma delta. " * 3
    text = (para.strip() + "\n\n") * 4
    text = text.strip()
    chunks = chunk_text(text, size=160, overlap=0)
    check_chunks(text, chunks, 160, 0)
    for c in chunks[:-1]:
        assert c.text.endswith("\n\n"), repr(c.text)  # ends at a paragraph break
    text = "This is one sentence. " * 40
    chunks = chunk_text(text.strip(), size=100, overlap=30)
    for c in chunks[:-1]:
        assert c.text.endswith(". "), repr(c.text)
    for c in chunks[1:]:
        assert c.text.startswith("This"), repr(c.text)  # overlap snapped to a sentence start


def test_chunk_hard_cuts_unbreakable_text() -> None:
    text = "x" * 2500
    chunks = chunk_text(text, size=1000, overlap=200)
    check_chunks(text, chunks, 1000, 200)
    assert all(len(c.text) == 1000 for c in chunks[:-1])
    assert [c.end - n.start for c, n in pairwise(chunks)] == [200] * (len(chunks) - 1)


def test_chunk_keeps_combining_marks_with_their_letter() -> None:
    text = "e\u0301" * 300  # not NFC-composable by chunking: decomposed pairs
    chunks = chunk_text(text, size=101, overlap=10)
    check_chunks(text, chunks, 101, 10)
    for c in chunks:
        assert not unicodedata.combining(c.text[0]), "a chunk starts with a dangling accent"


def test_chunk_random_properties() -> None:
    rng = random.Random(1234)
    for case in range(400):
        text = random_text(rng, max_space_run=rng.choice([0, 5, 30]))
        if rng.random() < 0.5:
            text = normalize_text(text)
        size = rng.choice([1, 2, 3, 7, 20, 50, 64, 100, 250, 1000])
        overlap = rng.randint(0, size - 1)
        chunks = chunk_text(text, size=size, overlap=overlap)
        longest_space = max((len(r) for r in _space_runs(text)), default=0)
        try:
            check_chunks(text, chunks, size, overlap, gaps_allowed=longest_space >= size)
        except AssertionError as exc:
            raise AssertionError(f"seed 1234 case {case} size={size} overlap={overlap}: {exc}") from exc


def test_chunk_long_whitespace_runs_skip_only_whitespace() -> None:
    rng = random.Random(99)
    for case in range(100):
        text = random_text(rng, max_words=120, max_space_run=400)
        size = rng.choice([10, 40, 120])
        overlap = rng.randint(0, size - 1)
        chunks = chunk_text(text, size=size, overlap=overlap)
        try:
            check_chunks(text, chunks, size, overlap, gaps_allowed=True)
        except AssertionError as exc:
            raise AssertionError(f"seed 99 case {case} size={size} overlap={overlap}: {exc}") from exc


def test_chunk_overlap_is_close_to_target_in_prose() -> None:
    rng = random.Random(7)
    for _ in range(50):
        text = prose(rng, rng.randint(200, 1500))
        size = rng.choice([100, 300, 1000])
        overlap = rng.randint(24, size // 2 - 1)
        chunks = chunk_text(text, size=size, overlap=overlap)
        check_chunks(text, chunks, size, overlap)
        for prev, cur in pairwise(chunks):
            shared = prev.end - cur.start
            # about the target: at least half of it, less the blank line skipped so a chunk starts on text
            assert overlap // 2 - 2 <= shared <= overlap, (shared, overlap)
            assert cur.text[0].isalpha() and not text[cur.start - 1].isalpha(), "overlap starts mid-word"
        for c in chunks[:-1]:
            assert len(c.text) >= size // 2  # no needlessly small chunks


def test_chunk_pages() -> None:
    builder = TextBuilder()
    rng = random.Random(5)
    raw_pages = [prose(rng, rng.randint(0, 300)) for _ in range(12)]
    for number, page in enumerate(raw_pages, 1):
        builder.add(page, page=number)
    text, spans = normalize_with_pages(builder.text(), builder.pages())
    chunks = chunk_text(text, size=300, overlap=60, pages=spans)
    check_chunks(text, chunks, 300, 60)
    for c in chunks:
        first = c.start + (len(c.text) - len(c.text.lstrip()))
        containing = [s.number for s in spans if s.start <= first < s.end]
        assert containing == [c.page]
    assert {c.page for c in chunks} == {s.number for s in spans}
    assert all(c.page is None for c in chunk_text(text, 300, 60))


def test_chunk_real_book_two_megabytes() -> None:
    """Sanity (not timed): a real 2 MB text chunks completely and sensibly."""
    book = corpus_dir() / "txt" / "book-war-and-peace-1225p.txt"
    text = normalize_text(book.read_text(encoding="utf-8", errors="replace"))[:2_000_000]
    chunks = chunk_text(text, size=1000, overlap=200)
    check_chunks(text, chunks, 1000, 200)
    assert 2000 <= len(chunks) <= 4000  # between size - overlap and size // 2 - overlap new chars each
    assert sum(len(c.text) for c in chunks) < len(text) * 1.4


def _space_runs(text: str) -> list[str]:
    runs, current = [], []
    for ch in text:
        if ch.isspace():
            current.append(ch)
        elif current:
            runs.append("".join(current))
            current = []
    if current:
        runs.append("".join(current))
    return runs
