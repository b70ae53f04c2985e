"""Locating the shared real-document corpus and scoring extracted text against references."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def corpus_dir() -> Path:
    """``$MIDAS_TEST_CORPUS`` or ``../shared/corpus``; fails loudly in CI when missing."""
    configured = os.environ.get("MIDAS_TEST_CORPUS")
    path = Path(configured) if configured else PROJECT_ROOT.parent / "shared" / "corpus"
    if not path.is_dir():
        message = f"test corpus not found at {path} (set MIDAS_TEST_CORPUS)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def corpus_file_or(relative: str, fallback: Path) -> Path:
    """The corpus file ``relative``, or ``fallback`` (a generated file testing the same behaviour) when the
    corpus is missing outside CI, so a user's clone still runs the test; in CI the corpus stays required."""
    try:
        return corpus_dir() / relative
    except pytest.skip.Exception:
        return fallback


def corpus_files(ext: str) -> list[Path]:
    """All corpus files of one extension (without the dot), sorted."""
    folder = corpus_dir() / ext
    return sorted(p for p in folder.iterdir() if p.is_file())


def manifest_notes() -> dict[str, str]:
    """``"pdf/name.pdf"`` -> the manifest's notes (hard-case tags in upper case)."""
    rows = {}
    lines = (corpus_dir() / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    for line in lines[1:]:
        cells = dict(zip(header, line.split("\t"), strict=False))
        rows[cells["relative_path"]] = cells.get("notes", "")
    return rows


def expected_references() -> list[tuple[Path, Path]]:
    """(corpus file, reference text) pairs from ``_expected/<ext>/<file>__<ref>``."""
    base = corpus_dir() / "_expected"
    pairs = []
    for ref in sorted(base.glob("*/*__*")):
        name = ref.name.split("__", 1)[0]
        pairs.append((corpus_dir() / ref.parent.name / name, ref))
    return pairs


_TAG = re.compile(r"<[^>]+>")
_LATEX_CMD = re.compile(r"\\[a-zA-Z]+\*?(\[[^\]]*\])?")
_MD_SYNTAX = re.compile(r"[#*_`|>\[\]()!~=-]+")
_WORD = re.compile(r"\w+", re.UNICODE)


def reference_words(ref: Path) -> list[str]:
    """The words of a reference with markup (HTML, LaTeX, Markdown, JSON) stripped."""
    raw = ref.read_bytes().decode("utf-8", errors="replace")
    if ref.suffix in {".html", ".htm"}:
        raw = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", raw)
        raw = _TAG.sub(" ", raw)
    elif ref.suffix == ".tex":
        raw = re.sub(r"(?m)%.*$", " ", raw)
        raw = _LATEX_CMD.sub(" ", raw)
    raw = _MD_SYNTAX.sub(" ", raw)
    return [w.lower() for w in _WORD.findall(raw)]


def word_recall(extracted: str, ref: Path) -> float:
    """Share of the reference's words (as a multiset-free set) found in the extracted text."""
    words = set(reference_words(ref))
    if not words:
        return 1.0
    got = {w.lower() for w in _WORD.findall(extracted)}
    return len(words & got) / len(words)
