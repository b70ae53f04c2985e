"""A small corpus generated at test time: one real file of every supported type, with known words.

The shared corpus (``../shared/corpus``) is not part of a user's clone; these
files are, so every format is still read end to end there. Most come from
``scripts/make_samples.py`` (the samples ``make run`` submits); the legacy
Office files are written by ``tests/legacy_office.py`` (no installed library
writes .doc, .xls or .msg); the images and the scanned PDF are rendered with
Pillow for OCR. ``EXTRA_FILES`` stand in for shared-corpus files that show a
behaviour (a scanned PDF, cut-off JSON), so those tests run on a clone too.
"""

from __future__ import annotations

import importlib.util
import io
import json
import struct
from collections.abc import Mapping
from email.message import EmailMessage
from functools import cache
from pathlib import Path
from types import ModuleType

from tests import legacy_office

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: extension -> the generated file of that type
GENERATED_FILES: Mapping[str, str] = {
    "pdf": "two-pages.pdf",
    "docx": "report.docx",
    "doc": "memo.doc",
    "txt": "notes.txt",
    "rtf": "letter.rtf",
    "odt": "summary.odt",
    "csv": "sales.csv",
    "xlsx": "sales.xlsx",
    "xls": "budget.xls",
    "json": "config.json",
    "xml": "catalog.xml",
    "html": "page.html",
    "md": "readme.md",
    "log": "worker.log",
    "msg": "outlook.msg",
    "eml": "message.eml",
    "png": "scan.png",
}

PDF_PAGES = (
    ["Generated PDF", "The first page talks about harbour cranes."],
    ["The second page lists forty containers."],
)
DOC_PARAGRAPHS = ("Legacy memo for the warehouse team.", "Deliveries arrive every Tuesday morning.")
XLS_SHEETS = {
    "Budget": [["item", "cost", "owner"], ["paper", 12.5, "Ann"], ["toner", 80, "Ben"], ["chairs", 410, "Ann"]],
    "Notes": [["note", "author"], ["Budget approved by the board", "Ann"]],
}
MSG_FIELDS = {
    "subject": "Shipment delayed",
    "sender": "Carol Sender <carol@example.com>",
    "to": "Dave Receiver <dave@example.com>",
    "body": "The shipment of pallets is delayed until Friday.\r\nPlease inform the customers.",
}
SCAN_LINES = ("Scanned delivery note", "Invoice number 4711 was paid")
#: page number -> the sentence on that page of ``scan.pdf``
SCAN_PDF_PAGES = {
    1: "The first scanned page opens the report.",
    2: "The second scanned page lists twelve cranes.",
    3: "The third scanned page ends the tour.",
}
#: more files for behaviours the shared corpus shows with real documents: name -> what it stands for
EXTRA_FILES: Mapping[str, str] = {
    "scan.pdf": "an image-only PDF of three scanned pages (OCR of PDFs, like pdf/multi-page-images.pdf)",
    "records-cut-off.json": "JSON records whose array is never closed (like json/dots_simple.json)",
    "objects.rtf": "an RTF with embedded objects: a result text, a packaged file, an Excel sheet (RTF \\object)",
    "charts.doc": "a Word 97 document embedding an Excel chart and a packaged file (like doc/testWORD_2006ml.doc)",
    "equations.docx": "a Word document with equations (OMML, like docx/equations.docx)",
    "scan-attached.eml": "an e-mail whose only text is a scanned picture attached to it",
}
#: texts of the embedded objects of objects.rtf and charts.doc
OBJECT_RESULT = "The chart shows rising tides."
PACKAGED_TEXT = "Packaged notes mention the lighthouse keeper."
EMBEDDED_SHEET = {"Tides": [["month", "height"], ["March", 4.2], ["April", 4.6]]}
#: the equations of equations.docx as linear text
EQUATIONS = ("x=(-b±√(b^2-4ac))/(2a)", "∑_(i=1)^n x_i^2", "∛(x+1)", "lim_(n→∞) 1/n", "[1, 0; 0, 1]")
ATTACHED_SCAN_LINES = ("Receipt for the blue bicycle", "Total amount 120 EUR paid")
CITIES = ("Lisbon", "Porto", "Braga", "Faro", "Evora")
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@cache
def samples_script() -> ModuleType:
    """``scripts/make_samples.py`` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_samples", PROJECT_ROOT / "scripts" / "make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render_scan(lines: tuple[str, ...], size: int = 40) -> object:
    """A white page with black text, like a clean scan (a PIL image)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(FONT), size) if FONT.is_file() else ImageFont.load_default(size=size)
    image = Image.new("L", (1200, 120 + len(lines) * int(size * 1.8)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((60, 60 + i * int(size * 1.8)), line, fill=0, font=font)
    return image


def build(folder: Path) -> Path:
    """Write every file of ``GENERATED_FILES`` into ``folder`` (created) and return it."""
    samples = samples_script()
    samples.write_samples(folder)
    (folder / "report.pdf").unlink()  # the one-page sample; the two-page file below covers PDF
    first, second = PDF_PAGES
    (folder / "two-pages.pdf").write_bytes(samples._pdf(first, second, title="Generated two-page PDF"))
    (folder / "memo.doc").write_bytes(legacy_office.word97_document(DOC_PARAGRAPHS, "Warehouse memo", pages=1))
    (folder / "budget.xls").write_bytes(legacy_office.excel97_workbook(XLS_SHEETS, "Office budget"))
    (folder / "outlook.msg").write_bytes(legacy_office.outlook_message(**MSG_FIELDS))
    render_scan(SCAN_LINES).save(folder / "scan.png")  # type: ignore[attr-defined]
    first_scan, *more_scans = [render_scan((line,)) for line in SCAN_PDF_PAGES.values()]
    first_scan.save(folder / "scan.pdf", save_all=True, append_images=more_scans)  # type: ignore[attr-defined]
    (folder / "objects.rtf").write_bytes(rtf_with_objects())
    (folder / "charts.doc").write_bytes(doc_with_objects())
    docx_with_equations(folder / "equations.docx")
    (folder / "scan-attached.eml").write_bytes(mail_with_scan(ATTACHED_SCAN_LINES))
    records = [{"city": city, "stop": n, "note": f"stop {n} of the tour"} for n, city in enumerate(CITIES, 1)]
    (folder / "records-cut-off.json").write_text(json.dumps(records, indent=1)[:-2], encoding="utf-8")
    missing = [name for name in [*GENERATED_FILES.values(), *EXTRA_FILES] if not (folder / name).is_file()]
    assert not missing, missing
    return folder


# -- embedded objects, equations, attached scans ----------------------------------------------


def rtf_object(class_name: str, objdata: bytes, result: str = "") -> bytes:
    """An RTF ``\\object`` group: its class, its data in hex, and a result (text, or a picture as Word writes)."""
    shown = rb"{\rtlch " + result.encode("ascii") + b"}" if result else rb"{\*\shppict{\pict\wmetafile8 0100}}"
    hexed = b"\r\n".join(objdata.hex().encode()[i : i + 128] for i in range(0, len(objdata) * 2, 128))
    return (
        rb"{\object\objemb{\*\objclass "
        + class_name.encode()
        + rb"}\objw2000\objh1000{\*\objdata "
        + hexed
        + rb"}{\result "
        + shown
        + b"}}"
    )


def rtf_with_objects() -> bytes:
    """A letter with three objects: one showing its text, a packaged .txt file, an Excel 97 sheet."""
    package = legacy_office.ole1_object("Package", legacy_office.ole_package("notes.txt", PACKAGED_TEXT.encode()))
    workbook = legacy_office.ole1_object("Excel.Sheet.8", legacy_office.excel97_workbook(EMBEDDED_SHEET, "Tides"))
    chart = legacy_office.ole1_object("MSGraph.Chart.8", b"no compound file")
    return (
        rb"{\rtf1\ansi\ansicpg1252{\fonttbl{\f0 Arial;}}{\info{\title Objects letter}}\f0 Dear reader,\par "
        + rtf_object("MSGraph.Chart.8", chart, OBJECT_RESULT)
        + rb"\par See the attached notes.\par "
        + rtf_object("Package", package)
        + rtf_object("Excel.Sheet.8", workbook)
        + rb"\par Kind regards\par}"
    )


def doc_with_objects() -> bytes:
    """A Word 97 memo embedding an Excel chart (its Workbook stream) and a packaged text file."""
    package = legacy_office.ole_package("notes.txt", PACKAGED_TEXT.encode())
    objects = {
        "_1000": {
            "\x01CompObj": legacy_office.comp_obj("Microsoft Excel Chart", "Excel.Chart.8"),
            "Workbook": legacy_office.excel97_stream(EMBEDDED_SHEET),
        },
        "_1001": {
            "\x01CompObj": legacy_office.comp_obj("OLE Package", "Package"),
            "\x01Ole10Native": struct.pack("<I", len(package)) + package,
        },
    }
    return legacy_office.word97_document(DOC_PARAGRAPHS, "Tide memo", objects=objects)


def _r(text: str) -> str:
    return f"<m:r><m:t>{text}</m:t></m:r>"


def _wrap(tag: str, *parts: str) -> str:
    return f"<m:{tag}>{''.join(parts)}</m:{tag}>"


#: the OMML of ``EQUATIONS``, in order
EQUATION_XML = (
    "".join(
        (
            _r("x="),
            _wrap(
                "f",
                _wrap(
                    "num",
                    _r("-b±"),
                    _wrap(
                        "rad",
                        '<m:radPr><m:degHide m:val="1"/></m:radPr>',
                        _wrap("deg"),
                        _wrap("e", _wrap("sSup", _wrap("e", _r("b")), _wrap("sup", _r("2"))), _r("-4ac")),
                    ),
                ),
                _wrap("den", _r("2a")),
            ),
        )
    ),
    _wrap(
        "nary",
        '<m:naryPr><m:chr m:val="∑"/></m:naryPr>',
        _wrap("sub", _r("i=1")),
        _wrap("sup", _r("n")),
        _wrap("e", _wrap("sSubSup", _wrap("e", _r("x")), _wrap("sub", _r("i")), _wrap("sup", _r("2")))),
    ),
    _wrap("rad", _wrap("deg", _r("3")), _wrap("e", _r("x+1"))),
    _wrap(
        "func",
        _wrap("fName", _wrap("limLow", _wrap("e", _r("lim")), _wrap("lim", _r("n→∞")))),
        _wrap("e", _wrap("f", _wrap("num", _r("1")), _wrap("den", _r("n")))),
    ),
    _wrap(
        "d",
        '<m:dPr><m:begChr m:val="["/><m:endChr m:val="]"/></m:dPr>',
        _wrap(
            "e",
            _wrap(
                "m",
                _wrap("mr", _wrap("e", _r("1")), _wrap("e", _r("0"))),
                _wrap("mr", _wrap("e", _r("0")), _wrap("e", _r("1"))),
            ),
        ),
    ),
)


def docx_with_equations(path: Path) -> None:
    """A .docx with one display equation per paragraph of ``EQUATION_XML`` (python-docx, raw OMML)."""
    import docx
    from docx.oxml import parse_xml

    namespace = 'xmlns:m="http://schemas.openxmlformats.org/officeDocument/2006/math"'
    document = docx.Document()
    document.add_paragraph("Equations of the tide model")
    for xml in EQUATION_XML:
        paragraph = document.add_paragraph()
        paragraph._p.append(parse_xml(f"<m:oMathPara {namespace}><m:oMath>{xml}</m:oMath></m:oMathPara>"))
    document.add_paragraph("End of the equations")
    document.save(str(path))


def mail_with_scan(lines: tuple[str, ...], name: str = "receipt.png") -> bytes:
    """An e-mail whose body says little and whose attached PNG holds ``lines`` as a clean scan."""
    image = io.BytesIO()
    render_scan(lines).save(image, format="PNG")  # type: ignore[attr-defined]
    message = EmailMessage()
    message["Subject"] = "Scanned receipt"
    message["From"] = "Erin Example <erin@example.com>"
    message["To"] = "accounts@example.com"
    message["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
    message.set_content("See the attached receipt.")
    message.add_attachment(image.getvalue(), maintype="image", subtype="png", filename=name)
    return message.as_bytes()
