"""Text statistics: the fast language detection gives langdetect's own answers, the word count its regex's."""

from __future__ import annotations

import random

import pytest
from langdetect import DetectorFactory, LangDetectException, detect_langs

from background_tasks.processing import textstats
from background_tasks.processing.language import SEED, best_language
from tests.corpus import corpus_dir
from tests.test_chunking import random_text

SAMPLES = [
    "The shipment of pallets is delayed until Friday. Please inform the customers about the new date.",
    "Die Lieferung der Paletten verzögert sich bis Freitag. Bitte informieren Sie die Kunden.",
    "La livraison des palettes est retardée jusqu'à vendredi. Où est la bibliothèque ? Ça va.",
    "La entrega de los palés se retrasa hasta el viernes. Por favor, informe a los clientes.",
    "Привет мир, как дела? Это тест на русском языке, поставка задерживается до пятницы.",
    "日本語のテキストです。漢字とひらがな、カタカナも少し。配送は金曜日まで遅れます。",
    "这是一个中文句子，用于测试语言检测。货物将推迟到星期五。",
    "مرحبا بالعالم هذا نص عربي لاختبار اكتشاف اللغة",
    "Tiếng Việt có dấu, giao hàng bị trì hoãn đến thứ Sáu.",
    "ΑΒΓ Ελληνικά κείμενο εδώ για δοκιμή της ανίχνευσης γλώσσας",
    "HELLO WORLD THIS IS ALL CAPS TEXT WITH NO LOWER CASE AT ALL",
    "See https://example.com/a?b=c and write to someone@example.com, or to [brackets] and `ticks`.",
    "1234 5678 90 -- ** ## 3.14",
    "",
    "   \n\t ",
    "ﬁ ligatures, naïve façade, Zürich, l'été, e\u0301te\u0301, A\u0308rger",
]


def reference(text: str) -> tuple[str, float] | None:
    """What langdetect itself says, seeded as MIDAS seeds it."""
    DetectorFactory.seed = SEED
    try:
        found = detect_langs(text)
    except LangDetectException:
        return None
    return (found[0].lang, found[0].prob) if found else None


def corpus_texts() -> list[str]:
    """The shared corpus's reference texts: their start and a piece of their middle."""
    try:
        base = corpus_dir() / "_expected"
    except pytest.skip.Exception:
        return []
    texts = []
    for path in sorted(base.glob("*/*")):
        text = path.read_text(encoding="utf-8", errors="replace")
        texts += [text[: textstats.LANGUAGE_SAMPLE_CHARS], text[len(text) // 2 : len(text) // 2 + 800]]
    return texts


def test_best_language_is_langdetects_answer_to_the_last_bit() -> None:
    rng = random.Random(19)
    texts = [*SAMPLES, *corpus_texts()]
    texts += ["".join(rng.sample(text, len(text))) for text in list(texts)]  # same letters, no words
    texts += [random_text(rng) for _ in range(40)]
    differing = [(text[:60], reference(text), best_language(text)) for text in texts]
    differing = [case for case in differing if case[1] != case[2]]
    assert not differing, differing[:5]
    assert best_language(SAMPLES[1]) == reference(SAMPLES[1]) and reference(SAMPLES[1])[0] == "de"


def test_detect_language_needs_enough_words_and_a_clear_answer() -> None:
    assert textstats.detect_language("Too short to tell.") is None
    assert textstats.detect_language(" ".join([SAMPLES[2]] * 3)) == "fr"
    assert textstats.detect_language(" ".join([SAMPLES[0]] * 3)) == "en"


def test_word_count() -> None:
    assert textstats.word_count("") == 0
    assert textstats.word_count("well-known l'été, 3.14 and 東京 — x") == 7
    text = " ".join(["Zürich's well-known façade"] * 1000)
    assert textstats.word_count(text) == 3000


def test_word_count_in_slices_counts_what_the_whole_text_has() -> None:
    rng = random.Random(7)
    pieces = ["word", "well-known", "l'été", "3.14", "東京", "-", "'", " ", "  ", "\n", "\t", ","]
    for case in range(12):
        parts = [rng.choice(pieces) for _ in range(rng.randint(0, 60_000))]
        if case % 3 == 0:  # a token longer than a slice, with no whitespace to cut at
            parts.insert(rng.randint(0, len(parts)), "a" * 70_000)
        text = "".join(parts)
        assert textstats.word_count(text) == sum(1 for _ in textstats._WORD.finditer(text)), case
