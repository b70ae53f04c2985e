"""OCR with the real Tesseract: scans from the corpus, images rendered from known text, mixed PDFs,
page time limits, no Tesseract at all, and long scans continued on the analysis queue."""

from __future__ import annotations

import io
import re
import struct
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from background_tasks.errors import ExtractionTimeout, MissingDependency
from background_tasks.extraction import tesseract as ocr
from background_tasks.extraction.extractors import SUPPORTED_EXTENSIONS
from background_tasks.processing import extract, ocr_pipeline, pipeline
from background_tasks.storage.store import DocumentStore
from tests.corpus import corpus_dir, corpus_file_or
from tests.generated_corpus import SCAN_PDF_PAGES
from tests.support import wait_until

FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)
LINES_A = ["The quick brown fox jumps over the lazy dog.", "Invoice number 4711 was paid on time."]
LINES_B = ["Tesseract reads rendered text reliably.", "Second page of the scanned report."]
LINES_C = ["Meeting notes from the quarterly review.", "Budget approved for the new warehouse."]
_WORD = re.compile(r"\w+")


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def recall(expected: str, got: str) -> float:
    wanted = words(expected)
    return len(wanted & words(got)) / len(wanted)


def font(size: int) -> ImageFont.ImageFont:
    for candidate in FONT_PATHS:
        if Path(candidate).is_file():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size=size)


def render(lines: list[str], size: int = 40, width: int = 1400, mode: str = "L") -> Image.Image:
    """A white page with ``lines`` of black text, like a clean scan."""
    height = 120 + len(lines) * int(size * 1.8)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((60, 60 + i * int(size * 1.8)), line, fill=0, font=font(size))
    return image.convert(mode)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (a decompression bomb's first line)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def make_pdf(pages: list[tuple[str, object]]) -> bytes:
    """A PDF whose pages are ("text", [lines]) with a real text layer or ("image", PIL image) scans."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(header: str, data: bytes) -> bytes:
        return f"<< {header} /Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream"

    font_id = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    pages_id = add(b"")
    kids = []
    for kind, content in pages:
        if kind == "text":
            shown = " ".join(f"({line}) Tj T*" for line in content)
            ops = f"BT /F1 16 Tf 72 720 Td 22 TL {shown} ET".encode()
            resources = f"<< /Font << /F1 {font_id} 0 R >> >>"
        else:
            w, h = content.size
            image_id = add(
                stream(
                    f"/Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceGray "
                    "/BitsPerComponent 8 /Filter /FlateDecode",
                    zlib.compress(content.tobytes()),
                )
            )
            shown_h = 612 * h / w
            ops = f"q 612 0 0 {shown_h:.2f} 0 {792 - shown_h:.2f} cm /Im1 Do Q".encode()
            resources = f"<< /XObject << /Im1 {image_id} 0 R >> >>"
        content_id = add(stream("", ops))
        kids.append(
            add(
                f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 612 792] /Resources {resources} "
                f"/Contents {content_id} 0 R >>".encode()
            )
        )
    objects[pages_id - 1] = (
        f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>".encode()
    )
    catalog = add(f"<< /Type /Catalog /Pages {pages_id} 0 R >>".encode())
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root {catalog} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def document_text(store: DocumentStore, document_id: int) -> str:
    from background_tasks.analysis.analyze import text_of_chunks

    return text_of_chunks(store.get_chunks(document_id))


# -- Tesseract itself ----------------------------------------------------------


def test_tesseract_is_installed_with_english_and_german() -> None:
    assert ocr.ocr_available("eng")
    assert {"eng", "deu"} <= ocr.tesseract_languages()


def test_rendered_text_is_recognised(tmp_path) -> None:
    expected = " ".join(LINES_A)
    image = render(LINES_A)
    result = ocr.ocr_image(image, "eng", timeout=60)
    assert recall(expected, result.text) >= 0.9, result.text
    assert result.mean_confidence is not None and result.mean_confidence > 70
    assert result.words >= len(words(expected)) - 2
    assert result.text.count("\n") >= 1, "lines are kept"
    # the same from a file, and dark text on a transparent background (a screenshot or logo)
    path = tmp_path / "page.png"
    image.save(path)
    assert recall(expected, ocr.ocr_image(path, "eng", timeout=60).text) >= 0.9
    transparent = Image.new("RGBA", image.size, (0, 0, 0, 0))
    transparent.putalpha(Image.eval(image, lambda v: 255 - v))
    assert recall(expected, ocr.ocr_image(transparent, "eng", timeout=60).text) >= 0.9


def test_german_text_with_the_german_language_pack() -> None:
    expected = "Die Prüfung der Rechnungen für März ist abgeschlossen."
    result = ocr.ocr_image(render([expected]), "deu", timeout=60)
    assert recall(expected, result.text) >= 0.9, result.text
    assert "Prüfung" in result.text and "März" in result.text


def test_a_blank_page_is_not_sent_to_tesseract(monkeypatch) -> None:
    def no_tesseract(*args, **kwargs):
        raise AssertionError(f"Tesseract was started for a blank page: {args!r}")

    monkeypatch.setattr(ocr.subprocess, "run", no_tesseract)
    result = ocr.ocr_image(Image.new("L", (2500, 3300), 255), "eng", timeout=60)
    assert (result.text, result.mean_confidence, result.words) == ("", None, 0)


def test_a_page_over_its_time_limit_is_killed() -> None:
    dense = render([f"Line {i} of a dense page full of words to read slowly" for i in range(40)], size=30)
    started = time.monotonic()
    with pytest.raises(ExtractionTimeout, match="MIDAS_OCR_PAGE_TIMEOUT"):
        ocr.ocr_image(dense, "eng", timeout=0.05, label="dense page")
    assert time.monotonic() - started < 3


def test_languages_that_are_not_installed() -> None:
    assert ocr.resolve_languages("eng+xyz") == ("eng", ["OCR language(s) not installed, skipped: xyz"])
    with pytest.raises(MissingDependency, match="none of the languages"):
        ocr.resolve_languages("xyz")
    assert not ocr.ocr_available("xyz")


def test_without_tesseract_ocr_is_unavailable(tmp_path) -> None:
    missing = str(tmp_path / "bin" / "tesseract")
    assert not ocr.ocr_available(command=missing)
    with pytest.raises(MissingDependency, match="not installed"):
        ocr.ocr_image(render(LINES_A), command=missing)


def test_tsv_becomes_lines_paragraphs_and_a_mean_confidence() -> None:
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = [
        "1\t1\t0\t0\t0\t0\t0\t0\t100\t100\t-1\t",
        "5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90\tHello",
        "5\t1\t1\t1\t1\t2\t0\t0\t1\t1\t80\tworld",
        "5\t1\t1\t1\t2\t1\t0\t0\t1\t1\t70\tnext",
        "5\t1\t1\t1\t2\t2\t0\t0\t1\t1\t-1\t ",
        "5\t1\t2\t1\t1\t1\t0\t0\t1\t1\t60\tpara",
    ]
    result = ocr.parse_tsv("\n".join([header, *rows]))
    assert result.text == "Hello world\nnext\n\npara"
    assert result.mean_confidence == 75.0 and result.words == 4


# -- through the pipeline -----------------------------------------------------


#: what the source projects' own tests assert for these scans (Tika, paperless-ngx)
SCANS = {
    "testOCR.pdf": {1: "Happy New Year 2003!"},
    "multi-page-images.pdf": {n: f"This is a multi page document. Page {n}." for n in (1, 2, 3)},
}


def multi_page_scan(generated_corpus: Path) -> tuple[Path, dict[int, str], str]:
    """The corpus' three-page scan, its sentence per page and a phrase to search for; on a clone without
    the corpus the generated three-page scan and its sentences."""
    path = corpus_file_or("pdf/multi-page-images.pdf", generated_corpus / "scan.pdf")
    if path.name in SCANS:
        return path, SCANS[path.name], "multi page document"
    return path, dict(SCAN_PDF_PAGES), "twelve cranes"


@pytest.mark.parametrize("name", sorted(SCANS))
def test_scanned_corpus_pdfs_are_ocrd(settings_for, name) -> None:
    settings = settings_for(MIDAS_CHUNK_SIZE="60", MIDAS_CHUNK_OVERLAP="0")  # about a page per chunk
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    path = corpus_dir() / "pdf" / name
    result = pipeline.process_file(str(path), settings, store)
    assert result.status == "success", result.error
    expected = SCANS[name]
    meta = result.metadata
    assert meta["ocr_pages"] == sorted(expected) and meta["ocr_status"] == "done"
    assert meta["ocr_mean_confidence"] > 80
    assert set(meta["ocr_page_confidence"]) == {str(p) for p in expected}
    text = document_text(store, result.document_id)
    assert recall(" ".join(expected.values()), text) >= 0.9, text
    chunks = store.get_chunks(result.document_id)
    for page, sentence in expected.items():
        on_page = " ".join(c["text"] for c in chunks if c["page"] == page)
        assert recall(sentence, on_page) >= 0.9, (page, on_page)
    assert any("OCR read" in w and "text layer" in w for w in result.warnings), result.warnings
    assert "no text layer (image-only or scanned PDF); OCR not applied" not in result.warnings


def test_image_only_pdf_without_readable_text_says_so(settings, store) -> None:
    result = pipeline.process_file(str(corpus_dir() / "pdf" / "imagemagick-images.pdf"), settings, store)
    assert result.status == "success"
    assert result.metadata["ocr_pages"] == [1, 2, 3, 4, 5, 6]  # 16x16 pixel images: nothing to read
    assert result.metadata["ocr_mean_confidence"] is None
    assert any("OCR found no text" in w for w in result.warnings), result.warnings


def test_mixed_pdf_ocrs_only_the_pages_without_a_text_layer(settings, store, docs_dir) -> None:
    layer_1 = ["Quarterly summary prepared by finance.", "All figures below are audited."]
    layer_3 = ["Appendix with contact details.", "Questions go to the controlling team."]
    path = docs_dir / "mixed.pdf"
    path.write_bytes(
        make_pdf([("text", layer_1), ("image", render(LINES_A)), ("text", layer_3), ("image", render(LINES_B))])
    )
    # the extraction step by step: the text layer, then OCR of what it lacks
    extraction = extract.extract(path, ".pdf", "application/pdf", settings, label=path.name)
    assert extraction.metadata["pages_without_text"] == [2, 4]
    merged = ocr_pipeline.apply_ocr(extraction, path, ".pdf", settings, path.name)
    per_page = {span.number: merged.text[span.start : span.end] for span in merged.pages}
    assert sorted(per_page) == [1, 2, 3, 4]
    assert per_page[1] == extraction.text[extraction.pages[0].start : extraction.pages[0].end]
    assert recall(" ".join(layer_1), per_page[1]) == 1.0 and recall(" ".join(layer_3), per_page[3]) == 1.0
    assert recall(" ".join(LINES_A), per_page[2]) >= 0.9, per_page[2]
    assert recall(" ".join(LINES_B), per_page[4]) >= 0.9, per_page[4]
    assert not words(per_page[2]) & {"quarterly", "appendix"}
    # and end to end
    result = pipeline.process_file(str(path), settings, store)
    assert result.status == "success", result.error
    assert result.metadata["ocr_pages"] == [2, 4] and result.metadata["page_count"] == 4
    text = document_text(store, result.document_id)
    assert text.index("Quarterly") < text.index("quick") < text.index("Appendix") < text.index("Tesseract")


@pytest.mark.parametrize(
    ("name", "fmt", "kind"),
    [("scan.png", "PNG", "png"), ("photo.jpg", "JPEG", "jpg"), ("old.bmp", "BMP", "bmp"), ("anim.gif", "GIF", "gif")],
)
def test_image_files_are_read_by_ocr(settings, store, docs_dir, name, fmt, kind) -> None:
    assert Path(name).suffix in SUPPORTED_EXTENSIONS
    path = docs_dir / name
    render(LINES_C, mode="RGB" if fmt == "JPEG" else "L").save(path, format=fmt)
    result = pipeline.process_file(str(path), settings, store)
    assert result.status == "success", result.error
    assert result.file_type == kind
    meta = result.metadata
    assert meta["image_format"] == fmt and meta["width"] == 1400 and meta["ocr_pages"] == [1]
    assert meta["mime_type"] == f"image/{ {'jpg': 'jpeg'}.get(kind, kind) }"
    assert recall(" ".join(LINES_C), document_text(store, result.document_id)) >= 0.9
    assert meta["ocr_mean_confidence"] > 70 and meta["word_count"] >= 10


def test_multi_page_tiff_pages_are_pages(settings, store, docs_dir) -> None:
    path = docs_dir / "fax.tiff"
    first, second = render(LINES_A), render(LINES_B)
    first.save(path, format="TIFF", save_all=True, append_images=[second], compression="tiff_deflate")
    result = pipeline.process_file(str(path), settings, store)
    assert result.status == "success", result.error
    assert result.metadata["ocr_pages"] == [1, 2] and result.pages == 2
    text = document_text(store, result.document_id)
    assert recall(" ".join(LINES_A + LINES_B), text) >= 0.9, text
    assert text.index("quick") < text.index("Tesseract")
    assert {c["page"] for c in store.get_chunks(result.document_id)} <= {1, 2}


def test_image_content_under_another_image_extension(settings, store, docs_dir) -> None:
    path = docs_dir / "really-a-png.jpg"
    render(LINES_C).save(path, format="PNG")
    result = pipeline.process_file(str(path), settings, store)
    assert result.status == "success" and result.metadata["mime_type"] == "image/png"


def test_broken_images_fail_clearly(settings, store, docs_dir) -> None:
    buffer = io.BytesIO()
    render(LINES_C).save(buffer, format="PNG")
    truncated = docs_dir / "cut.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    result = pipeline.process_file(str(truncated), settings, store)
    assert (result.status, result.error_type) == ("failed", "corrupt"), result.error
    text_as_png = docs_dir / "notes.png"
    text_as_png.write_text("just some words, not an image at all\n" * 5)
    result = pipeline.process_file(str(text_as_png), settings, store)
    assert (result.status, result.error_type) == ("rejected", "type_mismatch"), result.error
    assert "not a PNG image" in result.error
    bomb = docs_dir / "bomb.png"
    bomb.write_bytes(png_claiming(40_000, 40_000))  # 1.6 gigapixels declared in a file of a few bytes
    result = pipeline.process_file(str(bomb), settings, store)
    assert (result.status, result.error_type) == ("failed", "limit_exceeded"), result.error


def test_without_tesseract_on_path_scans_succeed_with_a_warning(
    settings, store, docs_dir, monkeypatch, generated_corpus
) -> None:
    monkeypatch.setenv("PATH", str(docs_dir))  # no tesseract here
    scan = corpus_file_or("pdf/testOCR.pdf", generated_corpus / "scan.pdf")
    result = pipeline.process_file(str(scan), settings, store)
    assert result.status == "success", result.error
    assert result.metadata["ocr_status"] == "skipped" and "ocr_pages" not in result.metadata
    assert any(w.startswith("OCR skipped: Tesseract is not installed") for w in result.warnings), result.warnings
    assert any("text layer" in w for w in result.warnings)
    image = docs_dir / "screenshot.png"
    render(LINES_C).save(image)
    result = pipeline.process_file(str(image), settings, store)
    assert result.status == "success" and result.text_chars == 0
    assert any(w.startswith("OCR skipped") for w in result.warnings)


def test_ocr_can_be_turned_off(settings_for, docs_dir, generated_corpus) -> None:
    settings = settings_for(MIDAS_OCR_ENABLED="false")
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    scan = corpus_file_or("pdf/testOCR.pdf", generated_corpus / "scan.pdf")
    result = pipeline.process_file(str(scan), settings, store)
    assert result.status == "success" and result.metadata["ocr_status"] == "off"
    assert any("MIDAS_OCR_ENABLED" in w for w in result.warnings)


def test_a_page_over_the_time_limit_is_a_warning_not_a_failure(settings_for, docs_dir) -> None:
    settings = settings_for(MIDAS_OCR_PAGE_TIMEOUT="0.05")
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    path = docs_dir / "slow.png"
    render([f"Line {i} with enough words to take a while" for i in range(30)], size=30).save(path)
    result = pipeline.process_file(str(path), settings, store)
    assert result.status == "success", result.error
    assert result.metadata["ocr_failed_pages"] == [1] and result.metadata["ocr_status"] == "failed"
    assert any("page 1: OCR failed" in w and "took longer than 0.05 s" in w for w in result.warnings)


def test_long_scans_continue_in_page_ranges(settings_for, docs_dir, generated_corpus) -> None:
    settings = settings_for(MIDAS_OCR_MAX_PAGES_PER_TASK="2", MIDAS_CHUNK_SIZE="60", MIDAS_CHUNK_OVERLAP="0")
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    path, sentences, _ = multi_page_scan(generated_corpus)
    result = pipeline.process_file(str(path), settings, store)
    assert result.status == "success", result.error
    meta = result.metadata
    assert meta["ocr_status"] == "pending" and meta["ocr_pending_pages"] == [1, 2, 3] and meta["ocr_pages"] == []
    assert any("queued for OCR on the analysis queue" in w for w in result.warnings)
    pages = ocr_pipeline.deferred_pages(meta)
    assert pages == [1, 2, 3]
    first = ocr_pipeline.continue_ocr(result.document_id, str(path), pages, settings, store)
    assert first == {"status": "partial", "document_id": result.document_id, "done": 2, "pending": [3]}
    assert store.get_document(result.document_id)["metadata"]["ocr_status"] == "pending"
    last = ocr_pipeline.continue_ocr(result.document_id, str(path), first["pending"], settings, store)
    assert last["status"] == "success" and last["ocr_pages"] == [1, 2, 3]
    document = store.get_document(result.document_id)
    assert document["metadata"]["ocr_status"] == "done" and "ocr_pending_pages" not in document["metadata"]
    assert not any("queued for OCR" in w for w in document["warnings"])
    expected = " ".join(sentences.values())
    assert recall(expected, document_text(store, result.document_id)) >= 0.9
    assert {c["page"] for c in store.get_chunks(result.document_id)} == {1, 2, 3}
    again = ocr_pipeline.continue_ocr(result.document_id, str(path), [3], settings, store)
    assert again["status"] == "skipped"


def test_a_changed_file_abandons_the_continued_ocr(settings_for, docs_dir) -> None:
    settings = settings_for(MIDAS_OCR_MAX_PAGES_PER_TASK="1")
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    path = docs_dir / "two-scans.pdf"
    path.write_bytes(make_pdf([("image", render(LINES_A)), ("image", render(LINES_B))]))
    result = pipeline.process_file(str(path), settings, store)
    assert result.metadata["ocr_status"] == "pending"
    path.write_bytes(make_pdf([("image", render(LINES_C))]))
    outcome = ocr_pipeline.continue_ocr(result.document_id, str(path), [1, 2], settings, store)
    assert outcome["status"] == "failed" and "changed since it was processed" in outcome["error"]
    document = store.get_document(result.document_id)
    assert document["status"] == "success" and document["metadata"]["ocr_status"] == "failed"


def test_a_long_scan_does_not_block_other_documents(isolated_stack, docs_dir, generated_corpus) -> None:
    """One worker process on both queues: a text file sent after a 3-page scan is done long before its OCR."""
    stack = isolated_stack(MIDAS_OCR_MAX_PAGES_PER_TASK="1")
    worker = stack.start_worker(queues=["documents", "analysis"], concurrency=1)
    store = DocumentStore(stack.settings.database_url_resolved)
    scan, sentences, phrase = multi_page_scan(generated_corpus)
    note = docs_dir / "note.txt"
    note.write_text("A short note that must not wait for a long scan to be read. " * 5)
    # The note is queued while the scan's first page is read, so it is waiting when the OCR
    # continues: the worker takes its queues in turn and reads the note between two pages.
    sent_scan = stack.send("background_tasks.document_tasks.process_document_file", str(scan))
    sent_note = stack.send("background_tasks.document_tasks.process_document_file", str(note))
    first = sent_scan.get(timeout=60)
    assert first["status"] == "success" and first["metadata"]["ocr_status"] == "pending"
    second = sent_note.get(timeout=60)
    assert second["status"] == "success"
    assert store.get_document(first["document_id"])["metadata"]["ocr_status"] == "pending"

    def ocr_done():
        document = store.get_document(first["document_id"])
        return document if document["metadata"]["ocr_status"] == "done" else None

    document = wait_until(ocr_done, timeout=90, interval=0.3, what="the continued OCR")
    assert document["metadata"]["ocr_pages"] == [1, 2, 3]
    expected = " ".join(sentences.values())
    assert recall(expected, document_text(store, first["document_id"])) >= 0.9
    assert store.search(phrase, limit=5, mode="keyword")[0].document_id == first["document_id"]
    assert worker.log_text().count("background_tasks.analysis_tasks.ocr_document_pages[") >= 3
