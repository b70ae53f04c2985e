"""langdetect's answer, computed faster: the same profiles, n-grams, seeded trials and arithmetic.

langdetect spends most of a small document's time in per-character method
calls (a Unicode block lookup, a string append and an n-gram object step for
each character) and in 55-language loops written element by element: about
7 ms for a page of text, more than the rest of the pipeline. ``best_language``
does the same steps on the whole text at once (regular expressions, a cached
character table, list comprehensions) and draws the same random numbers in
the same order, so it returns exactly what ``detect_langs(text)[0]`` returns
(``tests/test_textstats.py`` compares the two). It reads langdetect's loaded
profiles; langdetect 1.0.x's ``Detector`` is the reference.
"""

from __future__ import annotations

import random
import re
from typing import Any

#: langdetect's Detector constants (1.0.x)
_ALPHA, _ALPHA_WIDTH = 0.5, 0.05
_ITERATION_LIMIT, _CONV_THRESHOLD, _BASE_FREQ = 1000, 0.99999, 10000
_PROB_THRESHOLD = 0.1
_N_TRIAL, _MAX_TEXT_LENGTH = 7, 10000
_SPACES = re.compile(" {2,}")
_LATIN = re.compile("[A-z]")  # langdetect's 'A' <= ch <= 'z', brackets and backquote included
_NON_LATIN = re.compile("[\u0300-\U0010ffff]")
#: Profile rows as arrays, kept across documents: most draws are of a few thousand common n-grams
#: (about 0.5 KB each; the whole profile would take 39 MB on top of langdetect's 63)
_MAX_ROWS = 8192
_ROWS: dict[str, Any] = {}
#: ``DetectorFactory.seed``: the same text always gives the same answer
SEED = 0


class _Normalised(dict[int, int]):
    """``str.translate`` table of langdetect's per-character ``NGram.normalize``, filled as characters are seen."""

    def __missing__(self, code: int) -> int:
        from langdetect.utils.ngram import NGram

        value = ord(NGram.normalize(chr(code)))
        self[code] = value
        return value


_NORMALISED = _Normalised()


def _prepared(text: str) -> str:
    """``Detector.append`` then ``Detector.cleaning_text``."""
    from langdetect.detector import Detector
    from langdetect.utils.ngram import NGram

    text = Detector.URL_RE.sub(" ", text)
    text = Detector.MAIL_RE.sub(" ", text)
    text = NGram.normalize_vi(text)
    text = _SPACES.sub(" ", text[:_MAX_TEXT_LENGTH])
    # langdetect means to leave Latin Extended Additional out of the count, but compares a block
    # number with a name: every character from U+0300 counts.
    if len(_LATIN.findall(text)) * 2 < len(_NON_LATIN.findall(text)):
        text = _LATIN.sub("", text)
    return text


def _ngrams(text: str, known: dict[str, Any]) -> list[str]:
    """``Detector._extract_ngrams``: the 1-, 2- and 3-grams with a profile, in langdetect's order."""
    result: list[str] = []
    add = result.append
    grams = " "
    capital = False
    for ch in text.translate(_NORMALISED):
        last = grams[-1]
        if last == " ":
            grams = " "
            capital = False
            if ch == " ":
                continue
        elif len(grams) >= 3:
            grams = grams[1:]
        grams += ch
        if ch.isupper():
            if last.isupper():
                capital = True
        else:
            capital = False
        if capital:
            continue
        if ch != " " and ch in known:
            add(ch)
        size = len(grams)
        if size >= 2:
            pair = grams[-2:]
            if pair in known:
                add(pair)
            if size >= 3 and grams in known:
                add(grams)
    return result


def _trials(ngrams: list[str], known: dict[str, list[float]], languages: int, seed: int) -> list[float]:
    """``Detector._detect_block`` after the n-grams: seeded random trials, averaged.

    The same IEEE operations in the same order as langdetect's loops, element-wise on numpy arrays
    (which round each product and quotient exactly like Python floats); sums stay Python's ``sum``
    over the list, as summing order changes the last bit.
    """
    import numpy as np

    draw = random.Random()
    draw.seed(seed)
    rows = _ROWS
    if len(rows) > _MAX_ROWS:
        rows.clear()
    total = np.zeros(languages)
    for _ in range(_N_TRIAL):
        prob = np.full(languages, 1.0 / languages)
        alpha = _ALPHA + draw.gauss(0.0, 1.0) * _ALPHA_WIDTH
        weight = alpha / _BASE_FREQ
        i = 0
        while True:
            word = draw.choice(ngrams)
            row = rows.get(word)
            if row is None:
                row = rows[word] = np.array(known[word])
            prob *= weight + row
            if i % 5 == 0:
                prob /= sum(prob.tolist())
                if prob.max() > _CONV_THRESHOLD or i >= _ITERATION_LIMIT:
                    break
            i += 1
        total += prob / _N_TRIAL
    return total.tolist()


def best_language(text: str) -> tuple[str, float] | None:
    """langdetect's most probable language of ``text`` (seeded with ``SEED``) and its probability; None if it
    finds no features.

    Raises ImportError without langdetect.
    """
    from langdetect import detector_factory

    detector_factory.init_factory()
    factory = detector_factory._factory
    known = factory.word_lang_prob_map
    ngrams = _ngrams(_prepared(text), known)
    if not ngrams:
        return None
    probabilities = _trials(ngrams, known, len(factory.langlist), SEED)
    ranked = [(p, lang) for lang, p in zip(factory.langlist, probabilities, strict=True) if p > _PROB_THRESHOLD]
    if not ranked:
        return None
    # langdetect sorts Language objects by probability, stably, highest first
    ranked.sort(key=lambda pair: pair[0], reverse=True)
    prob, lang = ranked[0]
    return lang, prob
