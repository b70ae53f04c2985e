"""Files inside files: objects embedded in RTF and Word documents, pictures attached to e-mails, equations.

The fixtures are real files written here (tests/generated_corpus.py and
tests/legacy_office.py) and the shared corpus's documents; every extractor
runs through the registry, as the pipeline runs it, and hostile objects
(broken hex, lying sizes, objects inside objects inside objects) must end as
text or a warning, never as an error of the document or a hang.
"""

from __future__ import annotations

import io
import random
import struct
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import docx
import olefile
import pytest
from docx.oxml import parse_xml
from PIL import Image
from striprtf.striprtf import rtf_to_text as striprtf_text

from background_tasks.errors import ResourceLimitExceeded
from background_tasks.extraction import detect
from background_tasks.extraction.extractors import Extraction, Limits, extractor_for
from background_tasks.extraction.extractors.base import InnerOcr
from background_tasks.extraction.extractors.embedded import MAX_DEPTH, MAX_EMBEDDED_OBJECTS
from background_tasks.extraction.extractors.rtf import RtfExtractor, _fix_charsets, _read
from background_tasks.extraction.extractors.rtf.convert import rtf_to_text
from background_tasks.extraction.extractors.word import DocExtractor
from background_tasks.extraction.tesseract import OcrOptions
from tests import legacy_office
from tests.corpus import corpus_dir
from tests.generated_corpus import (
    ATTACHED_SCAN_LINES,
    DOC_PARAGRAPHS,
    EQUATIONS,
    MSG_FIELDS,
    OBJECT_RESULT,
    PACKAGED_TEXT,
    doc_with_objects,
    docx_with_equations,
    mail_with_scan,
    render_scan,
    rtf_object,
    rtf_with_objects,
)

pytestmark = pytest.mark.timeout(120)

OCR = Limits(inner_ocr=InnerOcr(OcrOptions()))


def run(path: Path, limits: Limits | None = None) -> Extraction:
    """What the pipeline does: resolve the real type, then run the registered extractor."""
    extension, mime_type = detect.resolve_extension(path, path.suffix)
    return extractor_for(extension, mime_type).extract(path, limits or Limits())


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def rtf(*body: bytes) -> bytes:
    return rb"{\rtf1\ansi\ansicpg1252 Before.\par " + b"".join(body) + rb"\par After.\par}"


def package(name: str, data: bytes) -> bytes:
    return legacy_office.ole1_object("Package", legacy_office.ole_package(name, data))


# ====================================================================== RTF: the converter


def test_the_rtf_converter_writes_what_striprtf_writes(generated_corpus: Path) -> None:
    """The faster tokenizer keeps striprtf's output on every RTF without objects or binary data."""
    paths = [generated_corpus / "letter.rtf"]
    try:
        paths += sorted((corpus_dir() / "rtf").glob("*.rtf"))
    except pytest.skip.Exception:  # a clone without the shared corpus: the generated letter only
        pass
    for path in paths:
        source = _fix_charsets(_read(path))
        assert rtf_to_text(source)[0] == striprtf_text(source, errors="replace"), path.name


def test_the_rtf_converter_matches_striprtf_on_random_rtf() -> None:
    """Random mixes of the tokens RTF is made of: the same text as striprtf whenever striprtf gives one."""
    pieces = [
        "{", "}", "{", "}", "\\par ", "\\b ", "\\b0 ", "\\f1 ", "\\f0 ", "\\'e9", "\\'c4\\'e3", "\\u8364?",
        "\\u-3913 ", "\\uc0 ", "\\uc2 ", "\\*\\foo ", "\\fonttbl ", "\\pict ", "\\tab ", "\\~", "\\{", "\\}",
        "\\\\", "\\line ", "\\emdash ", "\r\n", "text ", "word", " ", "\\fldinst ", "\\fldrslt ",
        "\\cell ", "\\row ", "\\-", "\\_",
    ]  # fmt: skip
    header = "{\\rtf1\\ansi\\ansicpg1252{\\fonttbl{\\f0 Arial;}{\\f1\\fcharset204 Times;}}"
    rng = random.Random(19)
    compared = 0
    for _ in range(400):
        source = header + "".join(rng.choice(pieces) for _ in range(rng.randint(1, 60))) + "}"
        try:
            expected = striprtf_text(source, errors="replace")
        except Exception:  # striprtf fails on some mixes; ours must not
            rtf_to_text(source)
            continue
        assert rtf_to_text(source)[0] == expected, source
        compared += 1
    assert compared > 300


def test_binary_picture_data_is_skipped_not_read_as_text(tmp_path: Path) -> None:
    blob = bytes(range(256)) * 4  # braces and backslashes among the bytes
    source = (
        rb"{\rtf1\ansi Seen {\*\shppict{\pict\pngblip\bin" + str(len(blob)).encode() + b" " + blob + rb"}} too.\par}"
    )
    extraction = RtfExtractor().extract(write(tmp_path, "bin.rtf", source), Limits())
    assert extraction.text == "Seen  too."


# ====================================================================== RTF: embedded objects


def test_rtf_objects_give_their_result_text_and_their_embedded_files(tmp_path: Path) -> None:
    extraction = run(write(tmp_path, "objects.rtf", rtf_with_objects()))
    assert f"Dear reader,\n{OBJECT_RESULT}\nSee the attached notes." in extraction.text
    assert f"--- Embedded: notes.txt ---\n{PACKAGED_TEXT}" in extraction.text
    assert "--- Embedded: Excel.Sheet.8 ---\n## Sheet: Tides" in extraction.text
    assert "month: April | height: 4.6" in extraction.text
    assert extraction.text.index("Kind regards") < extraction.text.index("--- Embedded:")
    assert extraction.metadata["embedded_objects"] == ["MSGraph.Chart.8", "notes.txt", "Excel.Sheet.8"]
    assert extraction.metadata["title"] == "Objects letter"
    assert extraction.warnings == ()


def test_rtf_object_with_result_text_is_not_read_twice(tmp_path: Path) -> None:
    data = package("same.txt", b"Data words never shown.")
    extraction = run(write(tmp_path, "r.rtf", rtf(rtf_object("Package", data, "Result words shown."))))
    assert "Result words shown." in extraction.text
    assert "Data words never shown." not in extraction.text


def test_rtf_embedded_word_document_is_read_as_a_doc(tmp_path: Path) -> None:
    inner = legacy_office.word97_document(("Embedded memo about the harbour.",), "Inner")
    source = rtf(rtf_object("Word.Document.8", legacy_office.ole1_object("Word.Document.8", inner)))
    extraction = run(write(tmp_path, "w.rtf", source))
    assert "--- Embedded: Word.Document.8 ---\nEmbedded memo about the harbour." in extraction.text


@pytest.mark.parametrize(
    "objdata",
    [
        b"",
        b"zz-not-hex at all ;:",
        b"0105000002000000",  # cut off in the class name
        b"01050000020000000800000050616368616700000000000000000000ffffff7f41",  # a native size beyond the data
        b"0105000001000000",  # a linked object: no data here
        b"123",  # an odd number of digits
    ],
)
def test_malformed_rtf_objdata_never_fails_the_document(tmp_path: Path, objdata: bytes) -> None:
    source = rtf(rb"{\object\objemb{\*\objclass Package}{\*\objdata " + objdata + rb"}}")
    extraction = run(write(tmp_path, "bad.rtf", source))
    assert extraction.text.startswith("Before.") and extraction.text.endswith("After.")
    assert extraction.metadata["embedded_objects"] == ["Package"]


def test_broken_embedded_file_is_a_warning(tmp_path: Path) -> None:
    source = rtf(rtf_object("Package", package("broken.docx", b"PK\x03\x04 not really a zip")))
    extraction = run(write(tmp_path, "b.rtf", source))
    assert extraction.text == "Before.\n\nAfter."
    assert any(w.startswith("embedded object 'broken.docx' not read:") for w in extraction.warnings), (
        extraction.warnings
    )


def test_unclosed_object_group_ends_the_text_without_error(tmp_path: Path) -> None:
    source = rb"{\rtf1\ansi Start {\object{\*\objclass X}{\result {Partial result"
    extraction = run(write(tmp_path, "open.rtf", source))
    assert extraction.text == "Start Partial result"


def test_rtf_object_larger_than_the_limit_is_listed_with_a_warning(tmp_path: Path) -> None:
    source = rtf(rtf_object("Package", package("big.txt", b"big words " * 20_000)))
    extraction = run(write(tmp_path, "big.rtf", source), Limits(max_decompressed_bytes=50_000))
    assert "big words" not in extraction.text
    assert extraction.metadata["embedded_objects"] == ["Package"]
    assert any("larger than the decompression limit" in w for w in extraction.warnings), extraction.warnings


def test_rtf_inside_rtf_inside_rtf_stops_at_the_depth_limit(tmp_path: Path) -> None:
    top = MAX_DEPTH + 2
    inner = rb"{\rtf1\ansi Level 0 words.\par}"
    for level in range(1, top + 1):
        inner = rtf(b"Level %d words. " % level, rtf_object("Package", package(f"level{level - 1}.rtf", inner)))
    extraction = run(write(tmp_path, "deep.rtf", inner))
    levels = [level for level in range(top + 1) if f"Level {level} words." in extraction.text]
    assert levels == list(range(top - MAX_DEPTH, top + 1)), levels
    assert any("nested too deeply" in w for w in extraction.warnings), extraction.warnings


def test_many_rtf_objects_are_read_up_to_the_count_limit(tmp_path: Path) -> None:
    objects = [rtf_object("Package", package(f"n{i}.txt", b"note %d." % i)) for i in range(MAX_EMBEDDED_OBJECTS + 5)]
    extraction = run(write(tmp_path, "many.rtf", rtf(*objects)))
    assert f"note {MAX_EMBEDDED_OBJECTS - 1}." in extraction.text
    assert f"note {MAX_EMBEDDED_OBJECTS}." not in extraction.text
    assert len(extraction.metadata["embedded_objects"]) == MAX_EMBEDDED_OBJECTS + 5
    assert any(f"more than {MAX_EMBEDDED_OBJECTS} embedded objects" in w for w in extraction.warnings)


def test_rtf_objects_need_the_registry_handed_in(tmp_path: Path) -> None:
    path = write(tmp_path, "objects.rtf", rtf_with_objects())
    alone = RtfExtractor().extract(path, Limits())  # no registry: result text stays, data is listed, not read
    assert OBJECT_RESULT in alone.text and PACKAGED_TEXT not in alone.text
    assert any("listed, not read" in w for w in alone.warnings), alone.warnings


# ====================================================================== legacy .doc: the ObjectPool


def test_doc_objects_are_read_after_the_text(tmp_path: Path) -> None:
    extraction = run(write(tmp_path, "charts.doc", doc_with_objects()))
    text = extraction.text
    assert text.startswith(DOC_PARAGRAPHS[0])
    assert "--- Embedded: Excel.Chart.8 ---\n## Sheet: Tides" in text
    assert f"--- Embedded: notes.txt ---\n{PACKAGED_TEXT}" in text
    assert extraction.metadata["embedded_objects"] == ["Excel.Chart.8", "notes.txt"]
    assert extraction.metadata["title"] == "Tide memo"


def test_doc_embedded_word_document_and_unreadable_objects(tmp_path: Path) -> None:
    inner = legacy_office.word97_document(("Inner document paragraph.",), "Inner")
    with olefile.OleFileIO(io.BytesIO(inner)) as ole:
        streams = {name: ole.openstream(name).read() for name in ("WordDocument", "1Table")}
    objects = {
        "_1": {"\x01CompObj": legacy_office.comp_obj("Microsoft Word Document", "Word.Document.8"), **streams},
        "_2": {"\x01CompObj": legacy_office.comp_obj("PowerPoint", "PowerPoint.Show.8"), "PowerPoint Document": b"x"},
        "_3": {"\x01CompObj": b"\x00" * 5, "\x01Ole10Native": struct.pack("<I", 999) + b"\x02\x00no terminator"},
    }
    source = legacy_office.word97_document(DOC_PARAGRAPHS, "Outer", objects=objects)
    extraction = run(write(tmp_path, "outer.doc", source))
    assert "--- Embedded: Word.Document.8 ---\nInner document paragraph." in extraction.text
    assert extraction.metadata["embedded_objects"] == ["Word.Document.8", "PowerPoint.Show.8", "_3"]


def test_doc_objects_of_the_corpus() -> None:
    path = corpus_dir() / "doc/testWORD_2006ml.doc"
    extraction = run(path)
    assert "--- Embedded: AcroExch.Document.11 ---\nApache Tika - Apache Tika" in extraction.text
    assert "Category 1 | Series 1: 4.3 | Series 2: 2.4 | Series 3: 2" in extraction.text
    assert "frog" not in extraction.text  # the tracked deletion stays deleted
    large = run(corpus_dir() / "doc/testLargeOLEDoc.doc")
    assert large.text.count("This is an embedded file.") > 30_000


def test_doc_object_over_the_limit_is_a_warning(tmp_path: Path) -> None:
    extraction = run(write(tmp_path, "charts.doc", doc_with_objects()), Limits(max_decompressed_bytes=3000))
    assert "## Sheet: Tides" not in extraction.text
    assert any("'Excel.Chart.8' not read: larger than the decompression limit" in w for w in extraction.warnings)


def test_doc_objects_need_the_registry_handed_in(tmp_path: Path) -> None:
    extraction = DocExtractor().extract(write(tmp_path, "charts.doc", doc_with_objects()), Limits())
    assert PACKAGED_TEXT not in extraction.text and extraction.metadata["embedded_objects"]


# ====================================================================== e-mail: picture attachments OCR'd


def test_eml_picture_attachment_is_ocrd(tmp_path: Path) -> None:
    extraction = run(write(tmp_path, "scan.eml", mail_with_scan(ATTACHED_SCAN_LINES)), OCR)
    section = extraction.text.split("--- Attachment: receipt.png ---\n", 1)[1]
    for line in ATTACHED_SCAN_LINES:
        assert line in section
    assert any("'receipt.png': OCR read" in w for w in extraction.warnings), extraction.warnings


def test_msg_picture_attachment_is_ocrd(tmp_path: Path) -> None:
    image = io.BytesIO()
    render_scan(ATTACHED_SCAN_LINES).save(image, format="PNG")  # type: ignore[attr-defined]
    message = legacy_office.outlook_message(**MSG_FIELDS, attachments={"receipt.png": image.getvalue()})
    extraction = run(write(tmp_path, "scan.msg", message), OCR)
    assert f"--- Attachment: receipt.png ---\n{ATTACHED_SCAN_LINES[0]}" in extraction.text
    assert extraction.metadata["attachments"] == ["receipt.png"]


def test_scanned_pdf_attachment_is_ocrd(tmp_path: Path) -> None:
    pdf = io.BytesIO()
    render_scan(("A scanned contract page",)).save(pdf, format="PDF")  # type: ignore[attr-defined]
    message = EmailMessage()
    message["Subject"], message["From"] = "contract", "a@example.org"
    message.set_content("Attached.")
    message.add_attachment(pdf.getvalue(), maintype="application", subtype="pdf", filename="contract.pdf")
    extraction = run(write(tmp_path, "pdf.eml", message.as_bytes()), OCR)
    assert "--- Attachment: contract.pdf ---\nA scanned contract page" in extraction.text
    assert not any("text layer" in w for w in extraction.warnings), extraction.warnings


def test_attachment_ocr_respects_the_setting_and_the_limits(tmp_path: Path) -> None:
    path = write(tmp_path, "scan.eml", mail_with_scan(ATTACHED_SCAN_LINES))
    off = run(path)  # OCR turned off: listed, not read
    assert off.metadata["attachments"] == ["receipt.png"] and ATTACHED_SCAN_LINES[0] not in off.text
    none_left = run(path, Limits(inner_ocr=InnerOcr(OcrOptions(), max_images=0)))
    assert ATTACHED_SCAN_LINES[0] not in none_left.text
    assert any("the message's OCR limit was reached" in w for w in none_left.warnings)
    no_time = run(path, Limits(inner_ocr=InnerOcr(OcrOptions(), budget_s=0.5)))
    assert ATTACHED_SCAN_LINES[0] not in no_time.text
    assert any("OCR limit" in w for w in no_time.warnings)


def test_attachment_ocr_budget_is_shared_with_attached_messages(tmp_path: Path) -> None:
    outer = message_from_bytes(mail_with_scan(("First receipt scanned",), "first.png"), policy=policy.default)
    inner = message_from_bytes(mail_with_scan(("Second receipt scanned",), "second.png"), policy=policy.default)
    outer.add_attachment(inner)  # type: ignore[attr-defined]
    extraction = run(write(tmp_path, "two.eml", outer.as_bytes()), Limits(inner_ocr=InnerOcr(OcrOptions(), 1)))
    assert "First receipt scanned" in extraction.text
    assert "Second receipt scanned" not in extraction.text


def test_without_tesseract_attachments_are_listed_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "scan.eml", mail_with_scan(ATTACHED_SCAN_LINES))
    missing = str(tmp_path / "bin" / "tesseract")
    extraction = run(path, Limits(inner_ocr=InnerOcr(OcrOptions(command=missing))))
    assert extraction.metadata["attachments"] == ["receipt.png"]
    assert any(w.startswith("attachments not OCR'd: Tesseract is not installed") for w in extraction.warnings)


def test_oversized_picture_attachment_is_refused_before_ocr(tmp_path: Path) -> None:
    image = io.BytesIO()
    Image.new("L", (4000, 4000), 255).save(image, format="PNG")
    message = EmailMessage()
    message["Subject"], message["From"] = "big", "a@example.org"
    message.set_content("Big picture.")
    message.add_attachment(image.getvalue(), maintype="image", subtype="png", filename="big.png")
    limits = Limits(max_decompressed_bytes=1_000_000, inner_ocr=OCR.inner_ocr)
    extraction = run(write(tmp_path, "big.eml", message.as_bytes()), limits)
    assert any("'big.png' not extracted:" in w and "MIDAS_MAX_DECOMPRESSED_MB" in w for w in extraction.warnings)


# ====================================================================== .docx equations


def test_docx_equations_keep_their_structure(tmp_path: Path) -> None:
    path = tmp_path / "equations.docx"
    docx_with_equations(path)
    extraction = run(path)
    assert extraction.text.split("\n") == ["Equations of the tide model", *EQUATIONS, "End of the equations"]


def test_docx_equations_of_the_corpus() -> None:
    extraction = run(corpus_dir() / "docx/equations.docx")
    assert "sin θ=(mλ)/a=((1)(550×10^(-6) mm))/(2.5 mm)=2.2×10^(-4)" in extraction.text
    assert "a/λ=m/(sin θ)=1/(sin 45.0^∘)=1.41." in extraction.text
    assert "For m=1," in extraction.text


def test_deeply_nested_equation_is_a_limit_not_a_crash(tmp_path: Path) -> None:
    inner = "<m:r><m:t>x</m:t></m:r>"
    for _ in range(100):
        inner = f"<m:f><m:num>{inner}</m:num><m:den><m:r><m:t>2</m:t></m:r></m:den></m:f>"
    document = docx.Document()
    namespace = 'xmlns:m="http://schemas.openxmlformats.org/officeDocument/2006/math"'
    document.add_paragraph()._p.append(parse_xml(f"<m:oMath {namespace}>{inner}</m:oMath>"))
    path = tmp_path / "deep.docx"
    document.save(str(path))
    with pytest.raises(ResourceLimitExceeded):
        run(path, Limits(max_nesting=50))
    assert run(path).text.endswith("/2")
