"""Stored analyses: one row per content (sha256) and kind, linked to its document when known.

An analysis made before its file was processed is linked by content, so the
document finds it afterwards too. What an analysis holds is the analysis
wing's business; here it is a JSON value with a status.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select

from background_tasks.storage.db import read_scope, session_scope, transient_db_errors
from background_tasks.storage.models import AnalysisRow, DocumentRow
from background_tasks.storage.schema import create_schema
from background_tasks.storage.values import upsert


def save(url: str, sha256: str, kind: str, status: str, result_json: Any, document_id: int | None) -> bool:
    """Insert or replace the analysis of one content and kind (a known document link is never dropped).

    False, and nothing saved, when ``document_id`` names a document deleted meanwhile.
    """
    create_schema(url)
    now = datetime.now(UTC)
    values = {
        "sha256": sha256,
        "kind": kind,
        "document_id": document_id,
        "status": status,
        "result_json": result_json,
        "created_at": now,
        "updated_at": now,
    }
    with transient_db_errors(), session_scope(url) as s:
        if document_id is not None and s.get(DocumentRow, document_id) is None:
            return False
        stmt = upsert(s, AnalysisRow).values(**values)
        changes = {k: stmt.excluded[k] for k in ("status", "result_json", "updated_at")}
        if document_id is not None:
            changes["document_id"] = stmt.excluded.document_id
        s.execute(stmt.on_conflict_do_update(index_elements=["sha256", "kind"], set_=changes))
    return True


def for_document(url: str, document_id: int, kinds: Sequence[str]) -> dict[str, Any] | None:
    """``{"document_id", <kind>: <result or None>, ..., "updated_at"}``, or None when the document has no analysis.

    Found by the document's id or by its content, so an analysis of the same bytes made earlier counts.
    """
    create_schema(url)
    with transient_db_errors(), read_scope(url) as s:
        sha256 = s.execute(select(DocumentRow.sha256).where(DocumentRow.id == document_id)).scalar_one_or_none()
        condition = AnalysisRow.document_id == document_id
        if sha256:
            condition = or_(condition, AnalysisRow.sha256 == sha256)
        rows = list(s.execute(select(AnalysisRow).where(condition).order_by(AnalysisRow.updated_at)).scalars())
    if not rows:
        return None
    out: dict[str, Any] = {"document_id": document_id, **dict.fromkeys(kinds)}
    for row in rows:
        out[row.kind] = row.result_json
    updated = max(row.updated_at for row in rows)
    out["updated_at"] = (updated if updated.tzinfo else updated.replace(tzinfo=UTC)).isoformat()
    return out
