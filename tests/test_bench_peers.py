"""``bench_peers`` in its quick mode on the generated corpus: it runs, and its report holds numbers.

The benchmark's figures are not judged here (a busy test machine would make
that flaky); the test proves the command works end to end: three long-lived
processes, both rounds, recall against a reference, the targets, the profile.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.generated_corpus import PDF_PAGES

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("kreuzberg", "midas-extract", "midas-pipeline")


@pytest.fixture
def small_corpus(generated_corpus: Path, tmp_path: Path) -> Path:
    """The generated files in a folder of their own, with references for two of them (as ``_expected``)."""
    corpus = tmp_path / "corpus"
    shutil.copytree(generated_corpus, corpus)
    (corpus / "_expected" / "txt").mkdir(parents=True)
    shutil.copy(corpus / "notes.txt", corpus / "_expected" / "txt" / "notes.txt__notes.txt")
    (corpus / "_expected" / "pdf").mkdir()
    words = "\n".join(line for page in PDF_PAGES for line in page)
    (corpus / "_expected" / "pdf" / "two-pages.pdf__pages.txt").write_text(words, encoding="utf-8")
    return corpus


def bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "bench_peers", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_quick_mode_reports_speed_recall_and_targets(small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    report = bench("--quick", "--corpus", str(small_corpus), "--json", str(out))

    rows = json.loads(out.read_text(encoding="utf-8"))
    names = {Path(r["file"]).name for r in rows}
    assert {"notes.txt", "two-pages.pdf", "scan.pdf", "budget.xls", "outlook.msg"} <= names
    for row in rows:
        for system in SYSTEMS:
            seconds = row[system]["seconds"]
            assert len(seconds) == 2 and all(s > 0 for s in seconds), (row["file"], system, seconds)
    notes = next(r for r in rows if r["file"].endswith("notes.txt"))
    pdf = next(r for r in rows if r["file"].endswith("two-pages.pdf"))
    for system in SYSTEMS:
        assert notes[system]["recall"] == [1.0], system
        assert pdf[system]["recall"][0] > 0.9, system
    assert next(r for r in rows if r["file"].endswith("scan.pdf"))["ocr"], "MIDAS OCRs the scanned PDF"

    table = dict(re.findall(r"^(txt|pdf|ALL files) +(\d+ .*)$", report, re.MULTILINE))
    assert set(table) == {"txt", "pdf", "ALL files"}, report
    for name, cells in table.items():
        files, _mb, *figures = (float(c) for c in cells.split())  # MB: 0.00 for the tiny generated files
        assert files >= 1 and len(figures) == 11 and all(n > 0 for n in figures), (name, cells)
    assert re.search(r"^<= 100 KB +\d+ +[\d.]+ +[\d.]+ +[\d.]+", report, re.MULTILINE), report
    targets = re.findall(r"^  (PASS|MISS)  (.*)$", report, re.MULTILINE)
    assert any(t.startswith("extraction txt: ") for _, t in targets), targets
    assert any(re.match(r"corpus overall: pipeline [\d.]+x", t) for _, t in targets), targets
    assert any(re.match(r"pipeline recall (1\.000|0\.9\d\d) on 2 references", t) for _, t in targets), targets


def test_profile_writes_the_statistics_of_process_file(small_corpus: Path, tmp_path: Path) -> None:
    report = bench("--quick", "--corpus", str(small_corpus), "--profile", str(tmp_path / "prof"))

    summary = (tmp_path / "prof.txt").read_text(encoding="utf-8")
    assert "cumulative" in summary and "process_file" in summary, summary
    assert (tmp_path / "prof.pstats").stat().st_size > 0
    assert re.search(r"profiled pass: \d+ small files in [\d.]+ s", report), report
