"""Page results of an OCR that continues on the analysis queue, kept until its last range.

Each range's results are saved as they come, so the last range can rebuild
the document's text from stored results alone; afterwards they are forgotten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from background_tasks.storage.db import read_scope, session_scope, transient_db_errors
from background_tasks.storage.models import OcrPageRow


def save(url: str, document_id: int, results: Sequence[Mapping[str, Any]]) -> None:
    """Store (or replace) the results of these pages: ``{"page", "text", ...}`` or ``{"page", "error", ...}``."""
    rows = [
        {
            "document_id": document_id,
            "page": int(r["page"]),
            "text": (r.get("text") or "").replace("\x00", ""),
            "confidence": r.get("confidence"),
            "words": int(r.get("words") or 0),
            "seconds": r.get("seconds"),
            "error": r.get("error"),
            "error_type": r.get("error_type"),
        }
        for r in results
    ]
    if not rows:
        return
    numbers = [row["page"] for row in rows]
    for attempt in range(3):
        try:
            with transient_db_errors(), session_scope(url) as s:
                s.execute(delete(OcrPageRow).where(OcrPageRow.document_id == document_id, OcrPageRow.page.in_(numbers)))
                s.execute(insert(OcrPageRow), rows)
            return
        except IntegrityError:  # the same range saved by a duplicate task at the same moment
            if attempt == 2:
                raise


def load(url: str, document_id: int) -> list[dict[str, Any]]:
    """Every stored page result of a document, in page order, in the form ``save`` took them."""
    with transient_db_errors(), read_scope(url) as s:
        rows = s.execute(
            select(OcrPageRow).where(OcrPageRow.document_id == document_id).order_by(OcrPageRow.page)
        ).scalars()
        out = []
        for row in rows:
            if row.error:
                out.append({"page": row.page, "error": row.error, "error_type": row.error_type})
            else:
                out.append(
                    {
                        "page": row.page,
                        "text": row.text or "",
                        "confidence": row.confidence,
                        "words": row.words,
                        "seconds": row.seconds,
                    }
                )
        return out


def forget(url: str, document_id: int) -> None:
    """Drop a document's page results (its OCR is over)."""
    with transient_db_errors(), session_scope(url) as s:
        s.execute(delete(OcrPageRow).where(OcrPageRow.document_id == document_id))
