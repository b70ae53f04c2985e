"""Write the small sample documents in samples/ that `make run` submits.

They are generated (not copied from anywhere), so they are ours to ship.
Run again after changing this script: `python scripts/make_samples.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "samples"

PARAGRAPHS = [
    "MIDAS processes documents in the background.",
    "Each document becomes searchable text, metadata and chunks. Workers pick up tasks from Redis queues, "
    "and results are stored in SQLite or PostgreSQL.",
    "The quarterly report shows revenue of 1,250,000 EUR, up 12 percent on the previous quarter.",
]


def _pdf(lines: list[str], *more_pages: list[str], title: str = "MIDAS sample PDF") -> bytes:
    """A minimal valid PDF with a text layer (Helvetica, WinAnsi): one page of ``lines``, one per ``more_pages``."""

    def content(page_lines: list[str]) -> bytes:
        text_ops = ["BT", "/F1 12 Tf", "72 720 Td", "14 TL"]
        for line in page_lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            text_ops.append(f"({escaped}) Tj T*")
        text_ops.append("ET")
        stream = "\n".join(text_ops).encode("latin-1")
        return b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream"

    def page(contents: int) -> bytes:
        return (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {contents} 0 R ".encode()
            + b"/Resources << /Font << /F1 5 0 R >> >> >>"
        )

    # objects 1-6 as in a one-page file; further pages (page, contents) from 7 on
    kids = ["3 0 R"] + [f"{7 + 2 * i} 0 R" for i in range(len(more_pages))]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>".encode(),
        page(4),
        content(lines),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        f"<< /Title ({title}) /Author (MIDAS) >>".encode("latin-1"),
    ]
    for i, page_lines in enumerate(more_pages):
        objects += [page(8 + 2 * i), content(page_lines)]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write_samples(out: Path) -> None:
    """Write the samples into ``out`` (the tests' generated corpus starts from them too)."""
    out.mkdir(exist_ok=True)
    text = "\n\n".join(PARAGRAPHS) + "\n"
    (out / "notes.txt").write_text(text, encoding="utf-8")
    (out / "readme.md").write_text("# MIDAS sample\n\n" + text + "\n- queues\n- workers\n", encoding="utf-8")
    (out / "worker.log").write_text(
        "2026-01-05 10:00:01 INFO worker started\n2026-01-05 10:00:02 INFO task received: process_document_file\n"
        "2026-01-05 10:00:03 WARNING retrying after a locked file\n",
        encoding="utf-8",
    )
    (out / "sales.csv").write_text(
        "region,quarter,revenue\nNorth,Q1,1200\nSouth,Q1,950\nNorth,Q2,1320\nSouth,Q2,1010\n", encoding="utf-8"
    )
    (out / "config.json").write_text(
        json.dumps({"service": "midas", "queues": ["default", "documents"], "limits": {"max_file_mb": 100}}, indent=2),
        encoding="utf-8",
    )
    (out / "catalog.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<catalog><title>Sample catalog</title>'
        "<book><name>Background processing</name><price>25.00</price></book></catalog>\n",
        encoding="utf-8",
    )
    (out / "page.html").write_text(
        "<!doctype html><html><head><title>MIDAS sample page</title><style>p{color:red}</style>"
        "<script>var hidden = 'never indexed';</script></head><body><h1>Welcome</h1>"
        + "".join(f"<p>{p}</p>" for p in PARAGRAPHS)
        + "</body></html>\n",
        encoding="utf-8",
    )
    (out / "message.eml").write_text(
        "From: Alice Example <alice@example.com>\nTo: Bob Example <bob@example.com>\nCc: team@example.com\n"
        "Subject: Quarterly report\nDate: Mon, 05 Jan 2026 10:00:00 +0000\nMIME-Version: 1.0\n"
        'Content-Type: text/plain; charset="utf-8"\n\n' + text,
        encoding="utf-8",
    )
    (out / "letter.rtf").write_text(
        r"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0 Helvetica;}}{\info{\title Sample letter}{\author MIDAS}}"
        r"\f0\pard Dear reader,\par " + r"\par ".join(PARAGRAPHS) + r"\par Kind regards\par }" + "\n",
        encoding="ascii",
    )
    (out / "report.pdf").write_bytes(_pdf(["MIDAS sample PDF", *PARAGRAPHS[2:], "Page one of one."]))

    import docx

    document = docx.Document()
    document.core_properties.title = "MIDAS sample DOCX"
    document.core_properties.author = "MIDAS"
    document.add_heading("Sample report", level=1)
    for paragraph in PARAGRAPHS:
        document.add_paragraph(paragraph)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Quarter", "Revenue"
    table.cell(1, 0).text, table.cell(1, 1).text = "Q1", "1200"
    document.save(out / "report.docx")

    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Sales"
    for row in [("region", "quarter", "revenue"), ("North", "Q1", 1200), ("South", "Q1", 950)]:
        sheet.append(row)
    workbook.create_sheet("Notes").append(["MIDAS sample workbook"])
    workbook.properties.creator = "MIDAS"
    workbook.save(out / "sales.xlsx")

    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    odt = OpenDocumentText()
    odt.text.addElement(H(outlinelevel=1, text="Sample OpenDocument"))
    for paragraph in PARAGRAPHS:
        odt.text.addElement(P(text=paragraph))
    odt.save(str(out / "summary.odt"))


def main() -> None:
    write_samples(OUT)
    print(f"wrote {len(list(OUT.iterdir()))} files to {OUT}")


if __name__ == "__main__":
    main()
