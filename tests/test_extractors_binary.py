"""Binary, office and mail extractors, content detection and zip-bomb checks.

Two kinds of input: every corpus file of the formats (real documents from
other projects' test suites, read in place) and hostile files generated here
in ``tmp_path`` (zip bombs, lying ZIP headers, random bytes, truncations).
Every outcome must be an ``Extraction`` or a ``MidasError``; nothing else, and
no hang (each test has a timeout).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from background_tasks.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    MidasError,
    MissingDependency,
    ResourceLimitExceeded,
    TypeMismatch,
)
from background_tasks.extraction import detect, zipsafe
from background_tasks.extraction.extractors import SUPPORTED_EXTENSIONS, Extraction, Limits, extractor_for
from background_tasks.extraction.extractors.mail import (
    ENCRYPTED_WARNING,
    MAX_ATTACHMENT_DEPTH,
    EmlExtractor,
    MsgExtractor,
)
from background_tasks.extraction.extractors.metadata import KEYS, iso_utc, shaped
from background_tasks.extraction.extractors.opendocument import OdtExtractor
from background_tasks.extraction.extractors.pdf import NO_TEXT_LAYER, PdfExtractor
from background_tasks.extraction.extractors.rtf import RtfExtractor
from background_tasks.extraction.extractors.word import DocExtractor, DocxExtractor
from tests.corpus import corpus_dir, corpus_files, expected_references, word_recall

pytestmark = pytest.mark.timeout(60)

FORMATS = ("pdf", "docx", "doc", "odt", "rtf", "msg", "eml")
EXTRACTORS = {
    ".pdf": PdfExtractor,
    ".docx": DocxExtractor,
    ".doc": DocExtractor,
    ".odt": OdtExtractor,
    ".rtf": RtfExtractor,
    ".msg": MsgExtractor,
    ".eml": EmlExtractor,
}


def _collect(exts: tuple[str, ...]) -> list[Path]:
    """Corpus files at collection time; an absent corpus is reported by ``test_corpus_is_present``."""
    files: list[Path] = []
    for ext in exts:
        try:
            files.extend(corpus_files(ext))
        except BaseException:  # pytest.skip/fail outside a test: the corpus is missing
            return []
    return files


def _rel(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


CORPUS = _collect(FORMATS)
ALL_CORPUS = _collect(
    ("pdf", "docx", "doc", "odt", "rtf", "msg", "eml", "xls", "xlsx", "csv", "txt", "md", "log", "html", "xml", "json")
)


def run(path: Path, limits: Limits | None = None) -> Extraction:
    """What the pipeline does: resolve the real type, then run the registered extractor."""
    extension, mime_type = detect.resolve_extension(path, path.suffix)
    return extractor_for(extension, mime_type).extract(path, limits or Limits())


def outcome(path: Path, limits: Limits | None = None) -> Extraction | MidasError:
    try:
        return run(path, limits)
    except MidasError as exc:
        return exc


@functools.cache
def corpus_outcome(path: Path) -> Extraction | MidasError:
    """Corpus results are shared by the outcome and recall tests (GeoTopo alone takes seconds)."""
    return outcome(path)


def test_corpus_is_present() -> None:
    assert corpus_dir().is_dir()
    assert CORPUS, "no corpus files of the binary formats found"


# ====================================================================== corpus: every file


@pytest.mark.parametrize("path", CORPUS, ids=_rel)
def test_corpus_file_ends_in_extraction_or_midas_error(path: Path) -> None:
    result = corpus_outcome(path)
    assert isinstance(result, (Extraction, MidasError)), type(result)
    if isinstance(result, MidasError):
        assert result.message.strip()
        assert type(result) is not MidasError  # always a specific subclass with its own error_type
        return
    assert isinstance(result.text, str)
    result.text.encode("utf-8")  # no lone surrogates or other unencodable leftovers
    json.dumps(dict(result.metadata))  # storable as JSON: ISO strings, not datetime objects
    for span in result.pages:
        assert 0 <= span.start < span.end <= len(result.text)
        assert span.number >= 1
    assert all(isinstance(w, str) and w for w in result.warnings)


@pytest.mark.parametrize("path", CORPUS, ids=_rel)
def test_corpus_fast_metadata_ends_in_dict_or_midas_error(path: Path) -> None:
    try:
        extension, mime_type = detect.resolve_extension(path, path.suffix)
        metadata = extractor_for(extension, mime_type).metadata(path, Limits())
    except MidasError:
        return
    assert isinstance(metadata, dict)
    json.dumps(metadata)


# ====================================================================== corpus: reference texts

#: the README's 90 % holds unless the reference contains words that are not in the rendered document
_RECALL_EXCEPTIONS = {
    # the reference is the LaTeX source: preamble words (article, booktabs, lipsum, tabular, lcccc, h) are never
    # printed, and "km\textsuperscript{2}" is rendered as "km2"
    "multicolumn.pdf": 0.85,
    # the reference is paperless' HTML rendering: it keeps the entities &lt; &gt; as words and shows the date in
    # UTC (09:23), while the message says 11:23 +0200
    "html.eml": 0.85,
}
REFERENCES = [pair for pair in (expected_references() if CORPUS else []) if pair[0].suffix.lstrip(".") in FORMATS]


@pytest.mark.parametrize("pair", REFERENCES, ids=lambda pair: _rel(pair[0]))
def test_reference_word_recall(pair: tuple[Path, Path]) -> None:
    source, reference = pair
    extraction = corpus_outcome(source)
    assert isinstance(extraction, Extraction), extraction
    recall = word_recall(extraction.text, reference)
    minimum = _RECALL_EXCEPTIONS.get(source.name, 0.90)
    assert recall >= minimum, f"{_rel(source)}: word recall {recall:.3f} < {minimum}"


# ====================================================================== corpus: hard cases


def _corpus(rel: str) -> Path:
    path = corpus_dir() / rel
    assert path.is_file(), rel
    return path


def test_encrypted_pdf_without_empty_password_is_an_encrypted_error() -> None:
    with pytest.raises(EncryptedDocument):
        run(_corpus("pdf/2206.01062_pg3.pdf"))


@pytest.mark.parametrize("name", ["imagemagick-images.pdf", "testOCR.pdf", "multi-page-images.pdf"])
def test_image_only_pdf_succeeds_with_no_text_layer_warning(name: str) -> None:
    extraction = run(_corpus(f"pdf/{name}"))
    assert NO_TEXT_LAYER in extraction.warnings
    assert extraction.metadata["text_layer"] is False
    assert extraction.metadata["page_count"] >= 1


def test_pdf_with_broken_pages_keeps_the_readable_ones() -> None:
    # pypdf fails on pages 2, 12 and 13; PDFium reads what is left of them
    extraction = run(_corpus("pdf/testPDF_bad_page_303226.pdf"))
    assert extraction.metadata["page_count"] == 19
    assert [span.number for span in extraction.pages] == list(range(1, 20))
    per_page = {span.number: extraction.text[span.start : span.end] for span in extraction.pages}
    assert "brown plastic belt" in per_page[13]
    assert len(extraction.text) > 10_000


def test_pdf_with_broken_pages_without_pdfium_warns_per_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # import fails: pypdf alone, as before PDFium
    extraction = run(_corpus("pdf/testPDF_bad_page_303226.pdf"))
    failed = [w for w in extraction.warnings if w.startswith("page ")]
    assert [w.split(":")[0] for w in failed] == ["page 2", "page 12", "page 13"], extraction.warnings
    assert extraction.metadata["pages_without_text"] == [2, 12, 13]
    assert extraction.metadata["page_count"] == 19
    assert len(extraction.pages) == 16
    assert len(extraction.text) > 10_000


def test_truncated_pdf_gives_partial_text_with_warning() -> None:
    extraction = run(_corpus("pdf/truncated_pdflatex-4-pages.pdf"))
    assert "blind text" in extraction.text
    assert extraction.metadata["partial"] is True
    assert any("damaged" in w for w in extraction.warnings)


def test_pdf_with_junk_before_header_is_read() -> None:
    extraction = run(_corpus("pdf/invalid_pdf.pdf"))
    assert extraction.metadata["page_count"] == 2
    assert len(extraction.text) > 500


def test_pdf_metadata_fields_and_page_spans() -> None:
    path = _corpus("pdf/GeoTopo-komprimiert.pdf")
    metadata = PdfExtractor().metadata(path, Limits())
    assert metadata["title"] == "Geometrie und Topologie"
    assert metadata["authors"] == ["Martin Thoma"]
    assert metadata["created"] == "2016-12-31T17:43:23Z"  # written as 18:43:23+01:00
    assert metadata["page_count"] == 117
    assert metadata["encrypted"] is False
    assert "producer" in metadata


def test_truncated_docx_is_corrupt() -> None:
    with pytest.raises(CorruptDocument):
        run(_corpus("docx/testWORD_truncated.docx"))


def test_strict_ooxml_docx_is_read() -> None:
    extraction = run(_corpus("docx/Strict.docx"))
    assert "Some text" in extraction.text
    assert extraction.metadata["authors"] == ["Cragun, Randy"]


def test_docx_headers_footers_and_hidden_merged_cell() -> None:
    extraction = run(_corpus("docx/docx-hdrftr.docx"))
    assert "Main document" in extraction.text
    assert "First header para" in extraction.text
    assert "I should not be included" not in extraction.text  # content of a vertically merged continuation cell


def test_docx_tables_lists_and_core_properties() -> None:
    extraction = run(_corpus("docx/word_sample.docx"))
    assert "Leaves | Ash, Elm, Maple | 50" in extraction.text
    assert extraction.metadata["authors"] == ["Christoph Auer"]
    assert extraction.metadata["created"].startswith("2024-10-09T12:43")
    assert extraction.metadata["revision"] == "7"


def test_password_protected_doc_is_an_encrypted_error() -> None:
    with pytest.raises(EncryptedDocument):
        run(_corpus("doc/testWORD_protected_passtika.doc"))


def test_doc_tracked_changes_deleted_text_is_left_out() -> None:
    extraction = run(_corpus("doc/testWORD_2006ml.doc"))
    assert "frog" not in extraction.text
    assert extraction.text.count("Second paragraph") == 1  # the moved-away copy is a deletion in .doc
    assert "Mattmann" in extraction.text
    assert "HYPERLINK" not in extraction.text  # field codes are not text
    assert extraction.metadata["title"] == "My Document Title"


def test_doc_metadata_lists_every_author() -> None:
    metadata = DocExtractor().metadata(_corpus("doc/testWORD_multi_authors.doc"), Limits())
    assert metadata["authors"] == ["Allison, Timothy B.", "author2", "author3"]
    assert metadata["subject"] == "subject"
    assert metadata["created"].startswith("2015-10-07")


def test_word6_doc_falls_back_to_catdoc(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="background_tasks.extraction.extractors.word.doc"):
        extraction = run(_corpus("doc/testWORD6.doc"))
    assert "quick brown fox" in extraction.text
    assert extraction.metadata["authors"] == ["Nevin Nollop"]
    # antiword gives up on Word 6 ("the text stream of this file is too small"), catdoc reads it:
    # a success, so no warning about it on the document, only a line in the worker's log.
    assert extraction.warnings == ()
    assert any("antiword failed" in r.getMessage() and "used catdoc" in r.getMessage() for r in caplog.records)


def test_doc_without_converters_names_the_debian_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    with pytest.raises(MissingDependency, match="antiword"):  # Word 6: only the external tools can read it
        DocExtractor().extract(_corpus("doc/testWORD6.doc"), Limits())
    extraction = DocExtractor().extract(_corpus("doc/greek_heading_styles.doc"), Limits())  # Word 97: built-in
    assert "Überschriften" in extraction.text
    assert any("built-in" in w for w in extraction.warnings)


def test_encrypted_odt_is_an_encrypted_error() -> None:
    with pytest.raises(EncryptedDocument):
        run(_corpus("odt/testODTEncrypted.odt"))


def test_odt_that_is_not_a_zip() -> None:
    path = _corpus("odt/testODTnotaZipFile.odt")
    with pytest.raises(TypeMismatch, match="plain text"):
        detect.resolve_extension(path, ".odt")
    with pytest.raises(CorruptDocument):
        OdtExtractor().extract(path, Limits())


def test_odt_tables_and_metadata() -> None:
    extraction = run(_corpus("odt/simpletable.odt"))
    assert "Cell 1 | Cell 2" in extraction.text
    assert extraction.metadata["authors"] == ["Søren Roug"]


def test_rtf_code_page_1250_without_mojibake() -> None:
    extraction = run(_corpus("rtf/ansicpg1250.rtf"))
    assert "Proszę o zapoznanie się z poniższą klauzulą" in extraction.text
    assert extraction.metadata["title"] == "DANE WNIOSKODAWCY"


def test_rtf_japanese_text_and_unicode_title() -> None:
    extraction = run(_corpus("rtf/testRTFJapanese.rtf"))
    assert "ゾルゲの処刑記録" in extraction.text
    assert extraction.metadata["title"] == "ゾルゲと尾崎、淡々と最期"


def test_rtf_invalid_unicode_escapes_are_replaced() -> None:
    extraction = run(_corpus("rtf/testRTFInvalidUnicode.rtf"))
    assert "Unpaired hi \ufffd here" in extraction.text
    extraction.text.encode("utf-8")


@pytest.mark.parametrize("rel", ["msg/fake-encrypted.msg", "eml/fake-encrypted.eml"])
def test_encrypted_mail_gives_headers_and_a_warning(rel: str) -> None:
    extraction = run(_corpus(rel))
    assert extraction.metadata["encrypted"] is True
    assert ENCRYPTED_WARNING in extraction.warnings
    assert "Michael Elkins" in extraction.text
    assert "BEGIN PGP" not in extraction.text


def test_msg_with_nested_msg_and_pdf_attachments() -> None:
    extraction = run(_corpus("msg/testMSG_att_msg.msg"))
    assert "--- Attachment: Test Attachment ---" in extraction.text
    assert "--- Attachment: smbprn.00009008.KdcPjl.pdf ---" in extraction.text
    assert extraction.metadata["attachments"] == ["Test Attachment", "smbprn.00009008.KdcPjl.pdf"]
    assert extraction.metadata["created"] == "2010-06-17T23:54:19Z"


def test_msg_with_doc_attachment_extracts_it() -> None:
    extraction = run(_corpus("msg/testMSG_att_doc.msg"))
    assert "--- Attachment: test-unicode.doc ---" in extraction.text
    assert "école" in extraction.text
    assert extraction.metadata["subject"] == "test pièce jointe 1"


def test_msg_8bit_strings_use_the_message_code_page() -> None:
    extraction = run(_corpus("msg/testMSG_chinese.msg"))
    assert extraction.metadata["subject"] == "Alfresco MSG format testing ( MSG 格式測試 )"
    assert "中文測試" in extraction.text


def test_msg_cc_and_message_id() -> None:
    extraction = run(_corpus("msg/fake-email-with-cc-and-bcc.msg"))
    assert extraction.metadata["cc"] == ["steve@unstructured.io"]
    assert extraction.metadata["message_id"] == "<14DDEF33-2BA7-4CDD-A4D8-E7C5873B37F2@gmail.com>"
    assert extraction.text.startswith("Subject: Fake email with cc and bcc recipients\nFrom: ")


def test_utf16_eml_is_parsed() -> None:
    extraction = run(_corpus("eml/fake-email-utf-16.eml"))
    assert extraction.metadata["subject"] == "Test Email"
    assert "Roses are red" in extraction.text


def test_eml_with_malformed_content_type_keeps_the_body() -> None:
    extraction = run(_corpus("eml/fake-email-malformed-encoding.eml"))
    assert "Violets are blue" in extraction.text


def test_non_utf8_eml_is_decoded() -> None:
    extraction = run(_corpus("eml/email-no-utf8-2008-07-16.062410.eml"))
    assert extraction.metadata["subject"] == "RE: שלום"
    assert "סלבה היקר" in extraction.text
    assert extraction.metadata["created"] == "2008-07-16T06:24:06Z"  # sent 09:24:06 +0300


def test_html_only_eml_becomes_visible_text() -> None:
    extraction = run(_corpus("eml/mime-html-only.eml"))
    assert "Scott Fahlman" in extraction.text
    assert "<" not in extraction.text.split("\n\n", 1)[1]


def test_broken_and_empty_eml() -> None:
    with pytest.raises(CorruptDocument):
        run(_corpus("eml/broken.eml"))
    with pytest.raises(EmptyDocument):
        run(_corpus("eml/empty.eml"))


def test_eml_attachment_pdf_is_extracted() -> None:
    extraction = run(_corpus("eml/test-incremental-updates.eml"))
    assert "--- Attachment: testPDF_incrementalUpdates.pdf ---" in extraction.text


# ====================================================================== detection of every corpus file

_KIND_BY_EXT = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".doc": "doc",
    ".odt": "odt",
    ".rtf": "rtf",
    ".msg": "msg",
    ".xls": "xls",
    ".xlsx": "xlsx",
    ".eml": "email",
    ".html": "html",
    ".xml": "xml",
}
_TEXT_EXTS = {".csv", ".txt", ".md", ".log", ".json"}
_KIND_EXCEPTIONS = {
    "testWORD_truncated.docx": "zip",  # truncated: the signature is ZIP, the directory is gone
    "testODTnotaZipFile.odt": "text",
    "broken.eml": "text",
    "empty.eml": "text",  # whitespace only
    "testEXCEL_protected_passtika.xlsx": "encrypted-ooxml",
    "empty.txt": "empty",
    "fake-html-lang-de.html": "html",
}


@pytest.mark.parametrize("path", ALL_CORPUS, ids=_rel)
def test_sniff_detects_corpus_file_type(path: Path) -> None:
    detected = detect.sniff(path)
    if path.name in _KIND_EXCEPTIONS:
        assert detected.kind == _KIND_EXCEPTIONS[path.name]
    elif path.suffix in _TEXT_EXTS:
        assert detected.kind in {"text", "json", "xml", "html", "email"}, detected
    else:
        assert detected.kind == _KIND_BY_EXT[path.suffix], detected


# ====================================================================== generated files: helpers


def make_pdf(pages: list[str], title: str = "Generated", compress: bool = True) -> bytes:
    """A small valid PDF of Helvetica text, lines split at "\\n", one string per page (byte offsets computed)."""
    objects: list[bytes] = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, text in enumerate(pages):
        lines = " 0 -14 Td ".join(f"({line}) Tj" for line in text.split("\n"))
        content = f"BT /F1 12 Tf 72 720 Td {lines} ET".encode("latin-1")
        page = "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
        page += f"/Contents {5 + 2 * i} 0 R >>"
        objects.append(page.encode())
        if compress:
            data = zlib.compress(content)
            objects.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream")
        else:
            objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objects.append(f"<< /Title ({title}) /Author (Ada Lovelace; Charles Babbage) >>".encode())
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>\n".encode())
    out.write(f"startxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def make_docx(path: Path, paragraphs: list[str]) -> Path:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    document.core_properties.author = "Grace Hopper"
    document.core_properties.title = "Generated docx"
    document.save(str(path))
    return path


def add_member(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)


def rewrite_member(path: Path, name: str, data: bytes) -> None:
    """Replace one member of a ZIP package (used to inject hostile XML into a generated docx)."""
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, content in members:
            zf.writestr(info.filename, data if info.filename == name else content)


def lie_about_size(path: Path, name: str, declared: int) -> None:
    """Patch the local and central headers of ``name`` to declare ``declared`` uncompressed bytes."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    struct.pack_into("<I", raw, info.header_offset + 22, declared)  # local header: uncompressed size
    central = raw.rfind(b"PK\x05\x06")
    cd_offset = struct.unpack_from("<I", raw, central + 16)[0]
    pos = cd_offset
    while raw[pos : pos + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", raw, pos + 28)
        if raw[pos + 46 : pos + 46 + name_len].decode() == name:
            struct.pack_into("<I", raw, pos + 24, declared)
        pos += 46 + name_len + extra_len + comment_len
    path.write_bytes(bytes(raw))


# ====================================================================== generated: PDF


def test_generated_pdf_pages_metadata_and_spans(tmp_path: Path) -> None:
    path = tmp_path / "two.pdf"
    path.write_bytes(make_pdf(["Alpha page text", "Beta page text"]))
    extraction = run(path)
    assert [span.number for span in extraction.pages] == [1, 2]
    first, second = extraction.pages
    assert "Alpha page text" in extraction.text[first.start : first.end]
    assert "Beta page text" in extraction.text[second.start : second.end]
    assert extraction.metadata["title"] == "Generated"
    assert extraction.metadata["authors"] == ["Ada Lovelace", "Charles Babbage"]
    assert extraction.metadata["page_count"] == 2


def test_generated_pdf_encryption(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    source = tmp_path / "plain.pdf"
    source.write_bytes(make_pdf(["Secret page"]))
    locked, open_ = tmp_path / "locked.pdf", tmp_path / "owner-only.pdf"
    for target, user in ((locked, "hunter2"), (open_, "")):
        writer = PdfWriter()
        writer.append(PdfReader(source))
        writer.encrypt(user_password=user, owner_password="owner", algorithm="AES-128")
        with target.open("wb") as handle:
            writer.write(handle)
    with pytest.raises(EncryptedDocument):
        run(locked)
    extraction = run(open_)
    assert "Secret page" in extraction.text
    assert extraction.metadata["encrypted"] is True
    assert any("empty password" in w for w in extraction.warnings)


THREE_PAGES = [
    "First page talks about apples",
    "Second page ends in a hyphen-\nated word, then more",
    "Third page closes the document",
]


def _spans(extraction: Extraction) -> dict[int, str]:
    return {span.number: extraction.text[span.start : span.end] for span in extraction.pages}


def _no_pypdf_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from pypdf import PageObject

    def refuse(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("pypdf text extraction is switched off in this test")

    monkeypatch.setattr(PageObject, "extract_text", refuse)


def test_pdf_page_text_comes_from_pdfium_on_its_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "three.pdf"
    path.write_bytes(make_pdf(THREE_PAGES))
    _no_pypdf_text(monkeypatch)  # every page's text must come from PDFium
    extraction = run(path)
    pages = _spans(extraction)
    assert sorted(pages) == [1, 2, 3]
    assert pages[1] == "First page talks about apples"
    # PDFium marks the line-end hyphen (U+FFFE); the word is joined, CRLF and markers are gone
    assert pages[2] == "Second page ends in a hyphenated word, then more"
    assert pages[3] == "Third page closes the document"
    assert extraction.metadata["page_count"] == 3
    assert extraction.metadata["text_layer"] is True
    assert "pages_without_text" not in extraction.metadata
    assert not extraction.warnings


def test_pdf_encrypted_with_empty_password_reads_through_pdfium(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pypdf import PdfReader, PdfWriter

    source = tmp_path / "plain.pdf"
    source.write_bytes(make_pdf(THREE_PAGES))
    target = tmp_path / "owner-only.pdf"
    writer = PdfWriter()
    writer.append(PdfReader(source))
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-128")
    with target.open("wb") as handle:
        writer.write(handle)
    _no_pypdf_text(monkeypatch)
    extraction = run(target)
    assert _spans(extraction)[3] == "Third page closes the document"
    assert extraction.metadata["encrypted"] is True


def test_pdf_text_without_pdfium_comes_from_pypdf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "three.pdf"
    path.write_bytes(make_pdf(THREE_PAGES))
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # not installed
    pages = _spans(run(path))
    assert sorted(pages) == [1, 2, 3]
    assert pages[2] == "Second page ends in a hyphen-\nated word, then more"  # pypdf's rendering


def test_pdf_pdfium_failures_fall_back_to_pypdf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pypdfium2

    path = tmp_path / "three.pdf"
    path.write_bytes(make_pdf(THREE_PAGES))
    original = pypdfium2.PdfPage.get_textpage
    calls: list[int] = []

    def fail_on_second_page(self: pypdfium2.PdfPage) -> pypdfium2.PdfTextPage:
        calls.append(1)
        if len(calls) == 2:  # pages are read in order, once each
            raise pypdfium2.PdfiumError("simulated failure on page 2")
        return original(self)

    # PDFium fails on one page: that page from pypdf, the others from PDFium, all on their page
    monkeypatch.setattr(pypdfium2.PdfPage, "get_textpage", fail_on_second_page)
    extraction = run(path)
    pages = _spans(extraction)
    assert pages == {1: THREE_PAGES[0], 2: THREE_PAGES[1], 3: THREE_PAGES[2]}
    assert len(calls) == 3
    assert not extraction.warnings
    monkeypatch.undo()

    # PDFium cannot open the file at all: pypdf's text for every page
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise pypdfium2.PdfiumError("Failed to load document (simulated)")

    monkeypatch.setattr(pypdfium2, "PdfDocument", refuse)
    assert _spans(run(path)) == {1: THREE_PAGES[0], 2: THREE_PAGES[1], 3: THREE_PAGES[2]}


@pytest.mark.parametrize("compress", [True, False], ids=["flate", "unfiltered"])
def test_truncated_generated_pdf_is_salvaged_or_corrupt(tmp_path: Path, compress: bool) -> None:
    data = make_pdf(["Recoverable words here", "Second page words"], compress=compress)
    path = tmp_path / "cut.pdf"
    path.write_bytes(data[: data.index(b"6 0 obj")])  # cut after the first page's content stream
    result = outcome(path)
    assert isinstance(result, (Extraction, CorruptDocument))
    if isinstance(result, Extraction):
        assert "Recoverable words here" in result.text
        assert result.warnings


def test_pdf_header_only_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "stub.pdf"
    path.write_bytes(b"%PDF-1.7\n%%EOF\n")
    with pytest.raises(CorruptDocument):
        run(path)


# ====================================================================== generated: zip bombs and lies


def test_zip_bomb_docx_is_rejected_by_ratio(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "bomb.docx", ["harmless"])
    add_member(path, "word/media/zeros.bin", bytes(32 * 1024 * 1024))  # 32 MiB of zeros, ~32 KiB compressed
    with pytest.raises(ResourceLimitExceeded, match=r"word/media/zeros\.bin"):
        run(path)


def test_zip_bomb_docx_is_rejected_by_total_size(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "big.docx", ["harmless"])
    add_member(path, "word/media/noise.bin", os.urandom(2 * 1024 * 1024))  # incompressible: ratio ~1
    with pytest.raises(ResourceLimitExceeded, match=r"noise\.bin"):
        run(path, Limits(max_decompressed_bytes=1024 * 1024))
    assert "harmless" in run(path).text  # under the default limit the same file is fine


def test_docx_declaring_a_gigabyte_member_is_refused_before_reading(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "declared.docx", ["tiny"])
    lie_about_size(path, "word/document.xml", 1 << 30)  # claims 1 GiB uncompressed
    with pytest.raises(ResourceLimitExceeded, match=r"word/document\.xml"):
        run(path)


def test_check_zip_reports_member_and_totals(tmp_path: Path) -> None:
    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.txt", b"a" * 1000)
        zf.writestr("b.txt", b"b" * 1000)
    assert [i.filename for i in zipsafe.check_zip(path, 10_000)] == ["a.txt", "b.txt"]
    with pytest.raises(ResourceLimitExceeded, match=r"b\.txt"):
        zipsafe.check_zip(path, 1500)
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"plain words")
    with pytest.raises(CorruptDocument):
        zipsafe.check_zip(not_zip, 10_000)


def test_docx_member_whose_declared_size_lies(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "liar.docx", ["x" * 50])
    with zipfile.ZipFile(path) as zf:
        document = zf.read("word/document.xml")
    padded = document.replace(b"?>", b"?><!--" + b"0" * (8 * 1024 * 1024) + b"-->", 1)  # inflates to 8 MiB
    rewrite_member(path, "word/document.xml", padded)
    lie_about_size(path, "word/document.xml", 1000)  # ...but claims 1000 bytes
    assert zipsafe.check_zip(path, 2 * 1024 * 1024)  # the lie passes the declared-size check,
    with pytest.raises(CorruptDocument):  # but reading stops at the declared size and the CRC check fails
        run(path, Limits(max_decompressed_bytes=2 * 1024 * 1024))
    with zipfile.ZipFile(path) as zf, pytest.raises(CorruptDocument, match=r"word/document\.xml"):
        zipsafe.read_member(zf, "word/document.xml", 4096)


def test_read_member_caps_real_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.txt", b"y" * 100_000)
    with zipfile.ZipFile(path) as zf:
        assert len(zipsafe.read_member(zf, "big.txt", 100_000)) == 100_000
        with pytest.raises(ResourceLimitExceeded, match=r"big\.txt"):
            zipsafe.read_member(zf, "big.txt", 99_999)


def test_docx_external_entity_is_not_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT", encoding="utf-8")
    path = make_docx(tmp_path / "xxe.docx", ["placeholder"])
    with zipfile.ZipFile(path) as zf:
        document = zf.read("word/document.xml").decode("utf-8")
    doctype = f'<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    document = document.replace("?>", "?>" + doctype, 1).replace("placeholder", "before &xxe; after")
    rewrite_member(path, "word/document.xml", document.encode("utf-8"))
    result = outcome(path)
    if isinstance(result, Extraction):
        assert "TOP-SECRET-CONTENT" not in result.text
    else:
        assert "TOP-SECRET-CONTENT" not in result.message


def test_deeply_nested_docx_tables_hit_the_nesting_limit(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "deep.docx", ["marker"])
    with zipfile.ZipFile(path) as zf:
        document = zf.read("word/document.xml").decode("utf-8")
    cell = "<w:p><w:r><w:t>core</w:t></w:r></w:p>"
    for _ in range(40):
        cell = f"<w:tbl><w:tr><w:tc>{cell}</w:tc></w:tr></w:tbl><w:p/>"
    document = document.replace("<w:sectPr", cell + "<w:sectPr", 1)
    rewrite_member(path, "word/document.xml", document.encode("utf-8"))
    assert "core" in run(path).text  # default limit (200 levels) is enough
    with pytest.raises(ResourceLimitExceeded):
        run(path, Limits(max_nesting=20))


# ====================================================================== generated: type mismatches


@pytest.mark.parametrize("suffix", [".pdf", ".docx", ".doc", ".msg", ".odt", ".rtf"])
def test_random_bytes_are_a_type_mismatch(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"file{suffix}"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(TypeMismatch, match="random binary data"):
        detect.resolve_extension(path, suffix)
    with pytest.raises(MidasError):  # the extractor alone also refuses cleanly
        EXTRACTORS[suffix]().extract(path, Limits())


@pytest.mark.parametrize("suffix", [".pdf", ".docx", ".doc", ".odt", ".rtf", ".msg", ".eml"])
def test_empty_files(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(EmptyDocument):
        detect.resolve_extension(path, suffix)
    with pytest.raises(EmptyDocument):
        EXTRACTORS[suffix]().extract(path, Limits())


def test_doc_that_is_really_rtf(tmp_path: Path) -> None:
    path = tmp_path / "letter.doc"
    path.write_bytes(rb"{\rtf1\ansi\ansicpg1252 Dear reader,\par caf\'e9 au lait\par}")
    assert detect.resolve_extension(path, ".doc") == (".rtf", "application/rtf")
    assert "café au lait" in run(path).text


def test_docx_that_is_really_a_pdf(tmp_path: Path) -> None:
    path = tmp_path / "report.docx"
    path.write_bytes(make_pdf(["Hidden PDF"]))
    assert detect.resolve_extension(path, ".docx") == (".pdf", "application/pdf")
    assert "Hidden PDF" in run(path).text


def test_doc_that_is_really_a_docx(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "renamed.doc", ["Modern content"])
    assert detect.resolve_extension(path, ".doc")[0] == ".docx"
    assert "Modern content" in run(path).text


def test_text_extensions_keep_their_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('{"looks": "like json"}\n', encoding="utf-8")
    assert detect.resolve_extension(path, ".csv") == (".csv", "text/csv")
    binary = tmp_path / "notes.txt"
    binary.write_bytes(os.urandom(2048))
    with pytest.raises(TypeMismatch):
        detect.resolve_extension(binary, ".txt")


def test_sniff_text_flavours(tmp_path: Path) -> None:
    cases = {
        "a.bin": ("\ufeff<html><body>hi</body></html>".encode("utf-16-le"), "html"),
        "b.bin": (b'<?xml version="1.0"?><root/>', "xml"),
        "c.bin": (b'{"a": 1}', "json"),
        "d.bin": (b"From: a@b.c\nTo: d@e.f\nSubject: hi\n\nbody", "email"),
        "e.bin": ("Grüße aus Köln".encode("cp1252"), "text"),
        "f.bin": (b"{\\rtf1 hello}", "rtf"),
    }
    for name, (data, kind) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert detect.sniff(path).kind == kind, name


def test_encrypted_ooxml_package_is_reported_as_encrypted() -> None:
    path = _corpus("xlsx/testEXCEL_protected_passtika.xlsx")
    with pytest.raises(EncryptedDocument):
        detect.resolve_extension(path, ".docx")
    with pytest.raises(EncryptedDocument):
        DocxExtractor().extract(path, Limits())


# ====================================================================== generated: ODT, RTF, mail


def make_odt(path: Path, body: str) -> Path:
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" office:version="1.2">'
        f"<office:body><office:text>{body}</office:text></office:body></office:document-content>"
    )
    meta = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-meta xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<office:meta><dc:title>Generated ODT</dc:title><meta:initial-creator>Ada</meta:initial-creator>"
        "<meta:creation-date>2024-01-02T03:04:05</meta:creation-date></office:meta></office:document-meta>"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.text", compress_type=zipfile.ZIP_STORED)
        zf.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("meta.xml", meta, compress_type=zipfile.ZIP_DEFLATED)
    return path


def test_generated_odt_structure_and_tracked_deletions(tmp_path: Path) -> None:
    body = (
        "<text:tracked-changes><text:changed-region text:id='c1'><text:deletion>"
        "<text:p>DELETED WORDS</text:p></text:deletion></text:changed-region></text:tracked-changes>"
        "<text:h text:outline-level='1'>Heading One</text:h>"
        "<text:p>Two<text:s text:c='3'/>spaces<text:tab/>tab<text:line-break/>next "
        "<text:span>span</text:span> tail<text:note><text:note-citation>1</text:note-citation>"
        "<text:note-body><text:p>Footnote body</text:p></text:note-body></text:note></text:p>"
        "<text:list><text:list-item><text:p>First item</text:p></text:list-item>"
        "<text:list-item><text:p>Second item</text:p></text:list-item></text:list>"
        "<table:table><table:table-row><table:table-cell><text:p>A1</text:p></table:table-cell>"
        "<table:covered-table-cell/><table:table-cell><text:p>C1</text:p></table:table-cell></table:table-row>"
        "</table:table>"
    )
    path = make_odt(tmp_path / "gen.odt", body)
    extraction = run(path)
    text = extraction.text
    assert "DELETED WORDS" not in text
    assert "Heading One" in text
    assert "Two   spaces\ttab\nnext span tail" in text
    assert "First item\nSecond item" in text
    assert "A1 |  | C1" in text
    assert text.rstrip().endswith("Footnote body")
    assert extraction.metadata["title"] == "Generated ODT"
    assert extraction.metadata["authors"] == ["Ada"]
    assert extraction.metadata["created"] == "2024-01-02T03:04:05Z"


def _odt_with_doctype(path: Path, doctype: str, body: str) -> Path:
    make_odt(path, body)
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    members["content.xml"] = members["content.xml"].replace(b"?>", b"?>" + doctype.encode(), 1)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_odt_external_entity_is_not_fetched(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT", encoding="utf-8")
    doctype = f'<!DOCTYPE office:document-content [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    path = _odt_with_doctype(tmp_path / "xxe.odt", doctype, "<text:p>start &xxe; end</text:p>")
    extraction = run(path)
    assert "start" in extraction.text and "end" in extraction.text
    assert "TOP-SECRET-CONTENT" not in extraction.text


def test_odt_entity_expansion_bomb_is_refused(tmp_path: Path) -> None:
    laughs = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    path = _odt_with_doctype(
        tmp_path / "laughs.odt", f"<!DOCTYPE office:document-content [{laughs}]>", "<text:p>&lol9;</text:p>"
    )
    result = outcome(path)
    if isinstance(result, Extraction):
        assert len(result.text) < 10_000  # the entity is left unexpanded
    else:
        assert isinstance(result, ResourceLimitExceeded), result


def test_generated_rtf_code_page_and_surrogate_pairs(tmp_path: Path) -> None:
    path = tmp_path / "pl.rtf"
    raw = (
        rb"{\rtf1\ansi\ansicpg1250{\info{\title Tytu\'b3}{\author Jan;Ola}"
        rb"{\creatim\yr2023\mo4\dy5\hr6\min7}}"
        rb"Za\'bf\'f3\'b3\'e6 g\'ea\'9cl\'b9 ja\'9f\'f1 \u-10179?\u-8704? koniec\par}"
    )
    path.write_bytes(raw)
    extraction = run(path)
    assert "Zażółć gęślą jaźń 😀 koniec" in extraction.text
    assert extraction.metadata == {"title": "Tytuł", "authors": ["Jan", "Ola"], "created": "2023-04-05T06:07:00Z"}


def _mail(subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "Alice <alice@example.org>"
    message["To"] = "Bob <bob@example.org>, carol@example.org"
    message["Date"] = "Mon, 01 Jan 2024 10:00:00 +0100"
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@example.org>"
    message.set_content(body)
    return message


def test_generated_eml_with_attachments(tmp_path: Path) -> None:
    message = _mail("Quarterly report", "See the attached files.")
    message.add_attachment(
        rb"{\rtf1\ansi Attached RTF words\par}", maintype="application", subtype="rtf", filename="notes.rtf"
    )
    message.add_attachment(os.urandom(2048), maintype="application", subtype="pdf", filename="broken.pdf")
    message.add_attachment(b"\x89PNG\r\n\x1a\n" + os.urandom(64), maintype="image", subtype="png", filename="a.png")
    path = tmp_path / "report.eml"
    path.write_bytes(message.as_bytes())
    extraction = run(path)
    assert extraction.metadata["to"] == ["Bob <bob@example.org>", "carol@example.org"]
    assert extraction.metadata["created"] == "2024-01-01T09:00:00Z"
    assert extraction.metadata["attachments"] == ["notes.rtf", "broken.pdf", "a.png"]
    assert "--- Attachment: notes.rtf ---\nAttached RTF words" in extraction.text
    assert any("broken.pdf" in w for w in extraction.warnings)  # a failing attachment is a warning
    assert "--- Attachment: a.png ---" not in extraction.text  # images are listed, not extracted


def test_generated_utf16_eml_keeps_non_ascii(tmp_path: Path) -> None:
    source = "Subject: Grüße aus 中国\nFrom: a@example.org\nContent-Type: text/plain; charset=utf-8\n\nKöln 中文 body\n"
    path = tmp_path / "utf16.eml"
    path.write_bytes(source.encode("utf-16"))
    extraction = run(path)
    assert extraction.metadata["subject"] == "Grüße aus 中国"
    assert "Köln 中文 body" in extraction.text


def test_generated_eml_nesting_depth_is_limited(tmp_path: Path) -> None:
    message = _mail("level 5", "innermost body")
    for level in range(4, -1, -1):
        outer = _mail(f"level {level}", f"body of level {level}")
        outer.add_attachment(message)
        message = outer
    path = tmp_path / "nested.eml"
    path.write_bytes(message.as_bytes())
    extraction = run(path)
    for level in range(MAX_ATTACHMENT_DEPTH + 1):
        assert f"body of level {level}" in extraction.text
    assert "innermost body" not in extraction.text
    assert any("nested too deeply" in w for w in extraction.warnings)


def test_generated_html_only_eml_drops_scripts(tmp_path: Path) -> None:
    message = EmailMessage()
    message["Subject"] = "html"
    message["From"] = "a@example.org"
    message.set_content(
        "<html><head><style>p{color:red}</style><script>alert('x')</script></head>"
        "<body><p>Visible&nbsp;paragraph</p><table><tr><td>c1</td><td>c2</td></tr></table></body></html>",
        subtype="html",
    )
    path = tmp_path / "html.eml"
    path.write_bytes(message.as_bytes())
    text = run(path).text
    assert "Visible paragraph" in text
    assert "c1 | c2" in text  # table cells as the HTML extractor joins them
    assert "alert" not in text
    assert "color:red" not in text


def test_long_html_mail_body_is_truncated_not_refused(tmp_path: Path) -> None:
    message = EmailMessage()
    message["Subject"] = "long"
    message["From"] = "a@example.org"
    message.set_content("<html><body>" + "<p>word after word</p>" * 500 + "</body></html>", subtype="html")
    path = tmp_path / "long.eml"
    path.write_bytes(message.as_bytes())
    extraction = run(path, Limits(max_text_chars=1000))
    assert len(extraction.text) == 1000 and "word after word" in extraction.text
    assert "text truncated at 1000 characters" in extraction.warnings


# ====================================================================== mail: the registry handed in


def test_detection_and_the_registry_know_the_same_extensions() -> None:
    """detect keeps its own list (it must not import the registry, which imports mail, which uses detect)."""
    assert set(detect.MIME_BY_EXTENSION) == SUPPORTED_EXTENSIONS


def test_mail_attachments_need_the_registry_handed_in(tmp_path: Path) -> None:
    message = _mail("with rtf", "See the notes.")
    message.add_attachment(
        rb"{\rtf1\ansi Attached RTF words\par}", maintype="application", subtype="rtf", filename="n.rtf"
    )
    path = tmp_path / "notes.eml"
    path.write_bytes(message.as_bytes())
    registered = extractor_for(".eml", "message/rfc822")
    assert isinstance(registered, EmlExtractor) and registered.extractor_for is extractor_for
    assert "--- Attachment: n.rtf ---\nAttached RTF words" in registered.extract(path, Limits()).text
    alone = EmlExtractor().extract(path, Limits())  # no registry: the attachment is listed, with the reason
    assert alone.metadata["attachments"] == ["n.rtf"] and "--- Attachment:" not in alone.text
    assert any("'n.rtf' not extracted: the mail extractor was given no extractors" in w for w in alone.warnings)


# ====================================================================== metadata: one convention for every format

#: keys an extractor once used for what the shared keys (``metadata.KEYS``) now hold
_OLD_KEYS = {"author", "creator", "artist", "generator", "software", "lang", "date", "date_raw", "published"}
_TEXT_KEYS = ("title", "subject", "description", "language", "application", "producer", "last_modified_by", "revision")


def _check_convention(metadata: Mapping[str, Any]) -> None:
    """The shape README "Metadata" promises: authors and keywords lists, dates ISO 8601 in UTC."""
    assert not _OLD_KEYS & set(metadata), sorted(_OLD_KEYS & set(metadata))
    for key in ("authors", "keywords"):
        if key in metadata:
            value = metadata[key]
            assert isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value), value
    for key in ("created", "modified"):
        if key in metadata:
            value = metadata[key]
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}Z)?", value), value
            parsed = datetime.fromisoformat(value)
            assert "T" not in value or parsed.utcoffset() == timedelta(0)
    for key in _TEXT_KEYS:
        if key in metadata:
            assert isinstance(metadata[key], str) and metadata[key].strip(), (key, metadata[key])
    if "page_count" in metadata and metadata["page_count"] is not None:
        assert isinstance(metadata["page_count"], int) and metadata["page_count"] > 0


def _jpeg_with_exif(tmp_path: Path) -> Path:
    from PIL import Image

    image = Image.new("RGB", (40, 20), "white")
    exif = image.getexif()
    exif[0x013B] = "Ada Lovelace; Charles Babbage"  # Artist
    exif[0x0132] = "2021:03:04 05:06:07"  # DateTime
    exif[0x0131] = "GIMP 2.10"  # Software
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif)
    return path


def _html_with_meta(tmp_path: Path) -> Path:
    path = tmp_path / "page.html"
    path.write_text(
        "<html lang='de'><head><title>Seite</title><meta name='author' content='Lovelace, Ada; Babbage'>"
        "<meta name='generator' content='Hugo 0.120'><meta name='dc.date' content='2021-03-04'>"
        "<meta name='keywords' content='a, b;a'></head><body><p>Text</p></body></html>",
        encoding="utf-8",
    )
    return path


#: One row per format: a corpus file (or a maker of one) and shared keys it must have, with values to pin.
METADATA_ROWS: list[tuple[str, str | Callable[[Path], Path], dict[str, Any]]] = [
    (
        "pdf",
        "pdf/GeoTopo-komprimiert.pdf",
        {
            "authors": ["Martin Thoma"],
            "application": "LaTeX with hyperref package",  # the PDF's Creator: a program, not a person
            "created": "2016-12-31T17:43:23Z",
            "modified": ...,
            "producer": ...,
            "keywords": ...,
        },
    ),
    (
        "docx",
        "docx/word_sample.docx",
        {"authors": ["Christoph Auer"], "created": ..., "application": ...},
    ),
    (
        "doc",
        "doc/testWORD_multi_authors.doc",
        {"authors": ..., "keywords": ["tag"], "modified": ...},
    ),
    ("odt", "odt/simpletable.odt", {"authors": ..., "created": ..., "application": ...}),
    ("rtf", "rtf/testRTFJapanese.rtf", {"authors": ..., "created": "2004-10-28T10:19:00Z"}),
    (
        "xlsx",
        "xlsx/testEXCEL.strict.xlsx",
        {"authors": ["Nick Burch"], "keywords": ..., "created": ...},
    ),
    (
        "xls",
        "xls/testEXCEL.xls",
        {"authors": ["Keith Bennett"], "application": ..., "modified": ...},
    ),
    ("eml", "eml/email-no-utf8-2008-07-16.062410.eml", {"authors": ..., "created": ...}),
    ("msg", "msg/testMSG.msg", {"authors": ..., "created": "2009-01-29T19:16:40Z"}),
    ("html", "html/test_blog.html", {"authors": ..., "created": "2023-04-21T00:00:00Z"}),
    (
        "html-generated",
        _html_with_meta,
        {
            "authors": ["Lovelace, Ada", "Babbage"],
            "application": "Hugo 0.120",
            "created": "2021-03-04",  # a date without a time stays a date
            "language": "de",
            "keywords": ["a", "b"],
        },
    ),
    ("xml", "xml/test_rss.xml", {"authors": ["Frank X. Shaw"], "title": ...}),
    ("json", "json/not-unstructured-payload.json", {"title": ...}),
    ("md", "md/wiki.md", {"title": "IBM"}),
    ("log", "log/u_ex160110.log", {"application": "Microsoft Internet Information Services 8.5"}),
    ("csv", "csv/stanley-cups.csv", {}),
    ("txt", "txt/fake-text-utf-16.txt", {}),
    (
        "image",
        _jpeg_with_exif,
        {
            "authors": ["Ada Lovelace", "Charles Babbage"],
            "modified": "2021-03-04T05:06:07Z",  # EXIF DateTime: when the file was last changed
            "application": "GIMP 2.10",
        },
    ),
]


@pytest.mark.parametrize(("fmt", "source", "expected"), METADATA_ROWS, ids=[row[0] for row in METADATA_ROWS])
def test_every_format_follows_the_metadata_convention(
    tmp_path: Path, fmt: str, source: str | Callable[[Path], Path], expected: dict[str, Any]
) -> None:
    metadata = run(_corpus(source) if isinstance(source, str) else source(tmp_path)).metadata
    _check_convention(metadata)
    for key, value in expected.items():
        assert key in metadata, (fmt, key, sorted(metadata))
        if value is not ...:
            assert metadata[key] == value, (fmt, key)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2021, 3, 4, 6, 6, 7, tzinfo=timezone(timedelta(hours=1))), "2021-03-04T05:06:07Z"),
        (datetime(2021, 3, 4, 5, 6, 7, 123456), "2021-03-04T05:06:07Z"),  # no zone: taken as UTC
        (date(2021, 3, 4), "2021-03-04"),
        ("2021-03-04", "2021-03-04"),
        ("2021-03-04T05:06:07Z", "2021-03-04T05:06:07Z"),  # W3CDTF (OOXML core properties)
        ("2021-03-04T07:06:07.5+02:00", "2021-03-04T05:06:07Z"),
        (" 2021-03-04T05:06:07 ", "2021-03-04T05:06:07Z"),  # OpenDocument, no zone
        ("Thu, 04 Mar 2021 06:06:07 +0100", "2021-03-04T05:06:07Z"),  # RFC 2822 (mail)
        ("2021:03:04 05:06:07", "2021-03-04T05:06:07Z"),  # EXIF
        ("0000:00:00 00:00:00", None),  # EXIF for "not set"
        ("sometime in March", None),
        ("", None),
        (None, None),
        (1614834367, None),
        (datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))), None),  # before year 1 in UTC
    ],
)
def test_iso_utc(value: Any, expected: str | None) -> None:
    assert iso_utc(value) == expected


def test_shaped_values_and_unreadable_dates() -> None:
    values = {
        "authors": "Lovelace, Ada; ; Babbage",
        "keywords": "a, b;a,,c",
        "created": "2021-03-04T05:06:07+00:00",
        "modified": "last Tuesday",
        "title": "  ",
        "page_count": 3,
    }
    assert shaped(values) == {
        "authors": ["Lovelace, Ada", "Babbage"],  # commas belong to names; semicolons separate authors
        "keywords": ["a", "b", "c"],
        "created": "2021-03-04T05:06:07Z",
        "modified_raw": "last Tuesday",  # kept for a human, never under the date key
        "page_count": 3,
    }


def test_readme_lists_every_metadata_key() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Metadata", 1)[1].split("\n#", 1)[0]
    for key in KEYS:
        assert f"`{key}`" in section, key
