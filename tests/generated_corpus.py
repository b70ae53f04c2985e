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
import json
from collections.abc import Mapping
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
}
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
    records = [{"city": city, "stop": n, "note": f"stop {n} of the tour"} for n, city in enumerate(CITIES, 1)]
    (folder / "records-cut-off.json").write_text(json.dumps(records, indent=1)[:-2], encoding="utf-8")
    missing = [name for name in [*GENERATED_FILES.values(), *EXTRA_FILES] if not (folder / name).is_file()]
    assert not missing, missing
    return folder
