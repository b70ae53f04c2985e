"""Cheap text statistics shared by the pipeline's metadata and the analysis tasks."""

from __future__ import annotations

import re

from background_tasks.processing.language import best_language

_WORD = re.compile(r"\w+(?:[-']\w+)*", re.UNICODE)
_SPACE = re.compile(r"\s")
_COUNT_SLICE = 1 << 16
LANGUAGE_SAMPLE_CHARS = 5_000
#: Below this many words langdetect guesses more than it detects (and costs as much as a whole small file).
LANGUAGE_MIN_WORDS = 20


def word_count(text: str) -> int:
    """Words in ``text``, counted by the regex engine's own loop (``subn``) a slice at a time.

    Slices end at whitespace, which no word contains, so none is counted twice; a slice at a
    time, because ``subn`` keeps every piece between two words until it joins them (hundreds of
    MB for a large table).
    """
    count, start, size = 0, 0, len(text)
    while start < size:
        end = start + _COUNT_SLICE
        if end < size:
            space = _SPACE.search(text, end)
            end = space.start() if space else size
        count += _WORD.subn("", text[start:end])[1]
        start = end + 1
    return count


def load_language_profiles() -> bool:
    """Load langdetect's 55 profiles now (about 0.1 s), and numpy for the detection's arithmetic; True if available.

    Called in the worker's main process before the pool forks, so pool
    processes share them instead of each loading them on its first document.
    """
    try:
        import numpy  # noqa: F401
        from langdetect import detector_factory
    except ImportError:
        return False
    detector_factory.init_factory()
    return True


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the main language, or None when the text is too short or unclear.

    langdetect is seeded so the same text always gives the same answer; ``language.best_language``
    gives its answer in a fraction of its time.
    """
    sample = text[:LANGUAGE_SAMPLE_CHARS]
    if word_count(sample[:2000]) < LANGUAGE_MIN_WORDS:
        return None
    try:
        best = best_language(sample)
    except ImportError:
        return None
    if best is None:
        return None
    lang, prob = best
    return lang if prob >= 0.6 else None
