"""Extraction as a table of test vectors (after markitdown's ``_test_vectors.py``).

Each vector names a file, words its stored text must and must not contain, and
metadata it must carry. Every vector runs through ``pipeline.process_file`` on
a fresh SQLite store, and all of them together through one real worker; both
check what was stored. Generated files (tests/generated_corpus.py) cover every
supported type on any clone; shared-corpus rows add real documents and skip on
a clone without ``../shared/corpus`` (they fail in CI). Hostile inputs keep
their explicit tests (test_intake_attacks, test_extractors_*).

Metadata keys about people and dates (authors, creator, application, created,
modified) are not asserted here while they are being renamed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import TimeoutError as CeleryTimeout

from background_tasks.analysis.analyze import text_of_chunks
from background_tasks.extraction.extractors import SUPPORTED_EXTENSIONS
from background_tasks.processing import pipeline
from background_tasks.storage.store import DocumentStore
from tests.corpus import corpus_dir
from tests.generated_corpus import (
    ATTACHED_SCAN_LINES,
    DOC_PARAGRAPHS,
    EQUATIONS,
    EXTRA_FILES,
    GENERATED_FILES,
    MSG_FIELDS,
    OBJECT_RESULT,
    PACKAGED_TEXT,
    PDF_PAGES,
    SCAN_LINES,
    SCAN_PDF_PAGES,
)

GENERATED, CORPUS = "generated", "corpus"
PROCESS_FILE = "background_tasks.document_tasks.process_document_file"
#: the sentences scripts/make_samples.py writes into most samples
SAMPLE_SENTENCES = (
    "MIDAS processes documents in the background.",
    "Workers pick up tasks from Redis queues",
    "revenue of 1,250,000 EUR, up 12 percent",
)


@dataclass(frozen=True)
class Vector:
    """One file and what its stored result must show."""

    source: str  # GENERATED (a file name of GENERATED_FILES) or CORPUS (a path relative to the shared corpus)
    path: str
    must_include: tuple[str, ...]
    must_not_include: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.source}/{self.path}"

    def locate(self, generated: Path) -> Path:
        """The file; a corpus row skips on a clone without the corpus and fails in CI."""
        return generated / self.path if self.source == GENERATED else corpus_dir() / self.path


GENERATED_VECTORS = (
    Vector(
        GENERATED,
        "two-pages.pdf",
        (*PDF_PAGES[0], *PDF_PAGES[1]),
        ("/Type", "endstream", "Helvetica"),
        {"page_count": 2, "title": "Generated two-page PDF", "text_layer": True, "encrypted": False},
    ),
    Vector(
        GENERATED,
        "report.docx",
        ("Sample report", *SAMPLE_SENTENCES, "Quarter | Revenue", "Q1 | 1200"),
        ("<w:", "word/document.xml"),
        {"title": "MIDAS sample DOCX", "language": "en"},
    ),
    Vector(
        GENERATED,
        "memo.doc",
        DOC_PARAGRAPHS,
        ("WordDocument", "1Table", "\x00"),
        {"title": "Warehouse memo", "page_count": 1, "mime_type": "application/msword"},
    ),
    Vector(
        GENERATED,
        "notes.txt",
        SAMPLE_SENTENCES,
        (),
        {"encoding": "utf-8", "line_count": 5, "language": "en"},
    ),
    Vector(
        GENERATED,
        "letter.rtf",
        ("Dear reader,", *SAMPLE_SENTENCES, "Kind regards"),
        ("\\par", "fonttbl", "Helvetica", "rtf1"),
        {"title": "Sample letter"},
    ),
    Vector(
        GENERATED,
        "summary.odt",
        ("Sample OpenDocument", *SAMPLE_SENTENCES),
        ("<text:", "office:document"),
        {"language": "en", "mime_type": "application/vnd.oasis.opendocument.text"},
    ),
    Vector(
        GENERATED,
        "sales.csv",
        ("region | quarter | revenue", "region: North | quarter: Q2 | revenue: 1320"),
        ("region,quarter,revenue", "North,Q1"),
        {"delimiter": "comma", "has_header": True, "columns": ["region", "quarter", "revenue"], "row_count": 4},
    ),
    Vector(
        GENERATED,
        "sales.xlsx",
        ("## Sheet: Sales", "region: South | quarter: Q1 | revenue: 950", "## Sheet: Notes", "MIDAS sample workbook"),
        ("<sheetData", "xl/worksheets"),
        {"sheet_count": 2},
    ),
    Vector(
        GENERATED,
        "budget.xls",
        ("## Sheet: Budget", "item: toner | cost: 80 | owner: Ben", "note: Budget approved by the board | author: Ann"),
        ("Workbook", "SummaryInformation"),
        {"title": "Office budget", "sheet_count": 2, "biff_version": 80},
    ),
    Vector(
        GENERATED,
        "config.json",
        ("service: midas", "queues[1]: documents", "limits.max_file_mb: 100"),
        ('"service"', "{"),
        {"json_type": "object", "valid": True, "max_depth": 2, "value_count": 4},
    ),
    Vector(
        GENERATED,
        "catalog.xml",
        ("Sample catalog", "Background processing", "25.00"),
        ("<book>", "<?xml", "encoding="),
        {"root": "catalog", "title": "Sample catalog", "max_depth": 3},
    ),
    Vector(
        GENERATED,
        "page.html",
        ("# Welcome", *SAMPLE_SENTENCES),
        ("never indexed", "color:red", "<p>", "<script"),
        {"title": "MIDAS sample page", "language": "en"},
    ),
    Vector(
        GENERATED,
        "readme.md",
        ("# MIDAS sample", *SAMPLE_SENTENCES, "- workers"),
        (),
        {"title": "MIDAS sample", "line_count": 10},
    ),
    Vector(
        GENERATED,
        "worker.log",
        ("2026-01-05 10:00:01 INFO worker started", "WARNING retrying after a locked file"),
        (),
        {"line_count": 3, "mime_type": "text/x-log"},
    ),
    Vector(
        GENERATED,
        "outlook.msg",
        (
            f"Subject: {MSG_FIELDS['subject']}",
            f"From: {MSG_FIELDS['sender']}",
            f"To: {MSG_FIELDS['to']}",
            "The shipment of pallets is delayed until Friday.",
            "Please inform the customers.",
        ),
        ("__substg1.0", "IPM.Note", "__properties_version1.0"),
        {"subject": MSG_FIELDS["subject"], "from": MSG_FIELDS["sender"], "to": [MSG_FIELDS["to"]], "attachments": []},
    ),
    Vector(
        GENERATED,
        "message.eml",
        ("Subject: Quarterly report", "Cc: team@example.com", *SAMPLE_SENTENCES),
        ("MIME-Version", "Content-Type", "charset="),
        {
            "subject": "Quarterly report",
            "from": "Alice Example <alice@example.com>",
            "to": ["Bob Example <bob@example.com>"],
            "cc": ["team@example.com"],
            "created": "2026-01-05T10:00:00Z",
        },
    ),
    Vector(
        GENERATED,
        "scan.png",
        SCAN_LINES,
        ("IHDR",),
        {"ocr_status": "done", "ocr_pages": [1], "page_count": 1, "text_layer": False, "image_format": "PNG"},
    ),
    Vector(
        GENERATED,
        "scan.pdf",
        tuple(SCAN_PDF_PAGES.values()),
        ("/XObject", "FlateDecode"),
        {"ocr_status": "done", "ocr_pages": [1, 2, 3], "page_count": 3, "text_layer": False},
    ),
    Vector(
        GENERATED,
        "objects.rtf",
        (
            f"Dear reader,\n{OBJECT_RESULT}\nSee the attached notes.",
            f"--- Embedded: notes.txt ---\n{PACKAGED_TEXT}",
            "--- Embedded: Excel.Sheet.8 ---\n## Sheet: Tides",
            "month: April | height: 4.6",
        ),
        ("objdata", "d0cf11e0", "wmetafile"),
        {"title": "Objects letter", "embedded_objects": ["MSGraph.Chart.8", "notes.txt", "Excel.Sheet.8"]},
    ),
    Vector(
        GENERATED,
        "charts.doc",
        (*DOC_PARAGRAPHS, "--- Embedded: Excel.Chart.8 ---", "month: March | height: 4.2", PACKAGED_TEXT),
        ("ObjectPool", "Ole10Native", "\x00"),
        {"title": "Tide memo", "embedded_objects": ["Excel.Chart.8", "notes.txt"]},
    ),
    Vector(
        GENERATED,
        "equations.docx",
        ("Equations of the tide model", *EQUATIONS, "End of the equations"),
        ("<m:", "oMath"),
        {"mime_type": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
    ),
    Vector(
        GENERATED,
        "scan-attached.eml",
        ("Subject: Scanned receipt", "--- Attachment: receipt.png ---", *ATTACHED_SCAN_LINES),
        ("iVBORw0KGgo",),
        {"subject": "Scanned receipt", "attachments": ["receipt.png"]},
    ),
    Vector(
        GENERATED,
        "records-cut-off.json",
        ("[0].city: Lisbon", "[4].note: stop 5 of the tour"),
        ('"city":',),
        {"valid": False, "json_type": "invalid", "value_count": 15},
    ),
)

CORPUS_VECTORS = (
    Vector(
        CORPUS,
        "pdf/minimal-document.pdf",
        ("Lorem ipsum dolor sit amet", "Stet clita kasd gubergren"),
        ("/FontDescriptor",),
        {"page_count": 1, "text_layer": True, "producer": "pdfTeX-1.40.23"},
    ),
    Vector(
        CORPUS,
        "pdf/testOCR.pdf",
        ("Happy New Year 2003!",),
        (),
        {"page_count": 1, "text_layer": False, "ocr_status": "done", "title": "Presentation1"},
    ),
    Vector(
        CORPUS,
        "docx/word_sample.docx",
        ("Summer activities", "Swimming in the lake", "Figure 1: This is a cute duckling"),
        ("<w:",),
        {"page_count": 2, "language": "en"},
    ),
    Vector(
        CORPUS,
        "docx/equations.docx",
        ("sin θ=(mλ)/a", "10^(-6) mm", "θ=sin^(-1) (2.2×10^(-4))", "a/λ=m/(sin θ)=1/(sin 45.0^∘)=1.41"),
        ("<m:",),
        {"page_count": 1},
    ),
    Vector(
        CORPUS,
        "doc/testWORD_2006ml.doc",
        (
            "The quick brown fox jumped over the lazy brown dog.",
            "--- Embedded: AcroExch.Document.11 ---\nApache Tika - Apache Tika",
            "--- Embedded: Excel.Chart.8 ---",
            "Category 4 | Series 1: 4.5 | Series 2: 2.8 | Series 3: 5",
        ),
        ("frog", "%PDF"),
        {"embedded_objects": ["testJPEG_EXIF.jpg", "AcroExch.Document.11", "PowerPoint.Show.8", "Excel.Chart.8"]},
    ),
    Vector(
        CORPUS,
        "doc/greek_heading_styles.doc",
        ("Überschriften in nicht‑englischer Sprache", "Problem mit lokalisierten Dokumenten"),
        ("WordDocument",),
        {"page_count": 1, "language": "de"},
    ),
    Vector(
        CORPUS,
        "txt/russian.cp866.txt",
        ("Однажды, в студеную зимнюю пору,", "Лошадка, везущая хворосту воз."),
        (),
        {"encoding": "cp866", "line_count": 6, "language": "ru"},
    ),
    Vector(
        CORPUS,
        "rtf/Example_text.rtf",
        ("Text here with hyperlink", "Another text size", "Some more text."),
        ("\\par", "fonttbl"),
        {"page_count": 2},
    ),
    Vector(
        CORPUS,
        "odt/text_document_02.odt",
        ("heading level 1.0", "Heading level 2: A", "Contrary to popular belief"),
        ("<text:",),
        {"page_count": 1, "language": "en"},
    ),
    Vector(
        CORPUS,
        "csv/csv-comma.csv",
        ("Index | Customer Id | First Name", "First Name: Sheryl | Last Name: Baxter"),
        (),
        {"delimiter": "comma", "has_header": True, "column_count": 12, "row_count": 5},
    ),
    Vector(
        CORPUS,
        "xlsx/xlsx_01.xlsx",
        ("## Sheet: Sheet1", "first: 5 | second: 1 | third: -3", "## Sheet: Sheet2"),
        (),
        {"sheet_count": 4},
    ),
    Vector(
        CORPUS,
        "xls/testEXCEL.xls",
        ("## Sheet: Feuil1", "Sample Excel Worksheet - Numbers and their Squares", "Number: 9 | Square: 81"),
        (),
        {"title": "Simple Excel document", "sheet_count": 3},
    ),
    Vector(
        CORPUS,
        "json/simple.json",
        ("[0].metadata.filename: simple.docx",),
        ('"element_id":',),
        {"json_type": "array", "records": 8, "max_depth": 4},
    ),
    Vector(
        CORPUS,
        "xml/testXML.xml",
        ("Tika test document", "Archimède et Lius à Châteauneuf testing chars en été"),
        ("<dc:", "oai_dc"),
        {"root": "dc", "title": "Tika test document", "language": "fr"},
    ),
    Vector(
        CORPUS,
        "html/example-with-scripts.html",
        ("# Russian Offensive Campaign Assessment, December 13",),
        ("switchTo5x", "stLight.options", "@import url"),
        {"title": "Russian Offensive Campaign Assessment, December 13 | Institute for the Study of War"},
    ),
    Vector(
        CORPUS,
        "md/wiki.md",
        ("# IBM", "nicknamed Big Blue"),
        (),
        {"title": "IBM", "line_count": 23},
    ),
    Vector(
        CORPUS,
        "log/u_ex160110.log",
        ("#Software: Microsoft Internet Information Services 8.5",),
        (),
        {"log_format": "w3c-extended", "application": "Microsoft Internet Information Services 8.5", "line_count": 128},
    ),
    Vector(
        CORPUS,
        "msg/testMSG.msg",
        ("Subject: MIME registry use cases", "making the type detection code more"),
        ("__substg1.0",),
        {
            "subject": "MIME registry use cases",
            "from": "Jukka Zitting <jukka.zitting@gmail.com>",
            "to": ["tika-dev@lucene.apache.org"],
            "created": "2009-01-29T19:16:40Z",
        },
    ),
    Vector(
        CORPUS,
        "eml/email-with-image.eml",
        ("Subject: email-with-image", "The unstructured logo is attached to this email."),
        ("iVBORw0KGgo", "Content-Transfer-Encoding"),
        {"subject": "email-with-image", "attachments": ["unstructured_logo.png"], "created": "2023-01-04T17:36:14Z"},
    ),
)

VECTORS = GENERATED_VECTORS + CORPUS_VECTORS


def check_stored(vector: Vector, store: DocumentStore, document_id: int | None) -> None:
    """The stored document, its text (from its chunks) and its metadata meet the vector."""
    assert document_id is not None, vector.id
    document = store.get_document(document_id)
    assert document is not None and document["status"] == "success", (vector.id, document)
    text = text_of_chunks(store.get_chunks(document_id))
    for wanted in vector.must_include:
        assert wanted in text, f"{vector.id}: {wanted!r} missing from {text[:500]!r}"
    for unwanted in vector.must_not_include:
        assert unwanted not in text, f"{vector.id}: {unwanted!r} in the text"
    metadata = document["metadata"]
    for key, value in vector.metadata.items():
        assert metadata.get(key) == value, f"{vector.id}: metadata[{key!r}] = {metadata.get(key)!r}, not {value!r}"


def test_the_generated_corpus_covers_every_type_and_every_file_has_a_vector(generated_corpus: Path) -> None:
    wanted = [
        "pdf",
        "docx",
        "doc",
        "txt",
        "rtf",
        "odt",
        "csv",
        "xlsx",
        "xls",
        "json",
        "xml",
        "html",
        "md",
        "log",
        "msg",
        "eml",
        "png",
    ]
    assert sorted(GENERATED_FILES) == sorted(wanted)
    assert {f".{ext}" for ext in GENERATED_FILES} <= SUPPORTED_EXTENSIONS
    names = sorted([*GENERATED_FILES.values(), *EXTRA_FILES])
    assert sorted(v.path for v in GENERATED_VECTORS) == names
    assert sorted(p.name for p in generated_corpus.iterdir()) == names
    assert all(v.must_include and v.metadata for v in VECTORS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.id)
def test_vector_through_the_pipeline(vector: Vector, generated_corpus: Path, settings, store) -> None:
    path = vector.locate(generated_corpus)
    result = pipeline.process_file(str(path), settings, store)
    assert result.status == "success", (vector.id, result.error_type, result.error)
    check_stored(vector, store, result.document_id)
    assert store.get_document(result.document_id)["metadata"] == result.metadata


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_every_vector_through_one_worker(isolated_stack, generated_corpus: Path) -> None:
    """All vectors sent to one worker process; a clone without the shared corpus runs the generated ones."""
    try:
        corpus_dir()  # fails in CI when missing
        vectors = VECTORS
    except pytest.skip.Exception:
        vectors = GENERATED_VECTORS
    stack = isolated_stack()
    worker = stack.start_worker(concurrency=2)
    store = DocumentStore(stack.settings.database_url_resolved)
    sent = [(vector, stack.send(PROCESS_FILE, str(vector.locate(generated_corpus)))) for vector in vectors]
    for vector, result in sent:
        try:
            outcome = result.get(timeout=120)
        except CeleryTimeout as exc:
            raise AssertionError(f"{vector.id}: no result; worker log:\n{worker.log_text()[-3000:]}") from exc
        assert outcome["status"] == "success", (vector.id, outcome)
        check_stored(vector, store, outcome["document_id"])
    assert worker.process.poll() is None
