"""The S3 sources' memory: every object listed under a prefix, what was submitted, and each prefix's last listing.

A listing upserts what it saw page by page; an object is ``pending`` when it is new or its ETag
differs from the one last submitted, so a restart (or a second listing) submits nothing that
was submitted before. Objects a complete listing no longer saw are marked ``deleted``: their
documents are kept, and ``deleted_documents`` names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, case, func, select, update

from background_tasks.statuses import DocumentStatus
from background_tasks.storage.db import read_scope, session_scope
from background_tasks.storage.models import DocumentPathRow, DocumentRow, S3ObjectRow, S3SourceRun
from background_tasks.storage.schema import create_schema
from background_tasks.storage.values import as_utc, path_hash, upsert


@dataclass(frozen=True)
class ListedObject:
    """One object as ListObjectsV2 reported it."""

    uri: str
    etag: str
    size: int
    last_modified: datetime | None


@dataclass(frozen=True)
class PendingObject:
    id: int
    uri: str
    etag: str


@dataclass(frozen=True)
class SourceFigures:
    """What ``sources status`` shows of one prefix."""

    source: str
    last_run_at: datetime | None
    last_run_s: float | None
    error: str | None
    seen: int
    submitted: int
    failed: int
    deleted: int
    last_success_at: datetime | None = None


def record_listed(url: str, source: str, objects: Sequence[ListedObject], listed_at: datetime) -> None:
    """Upsert one page of a listing: new objects and changed ETags become pending, unchanged ones keep their state."""
    if not objects:
        return
    create_schema(url)
    table = S3ObjectRow.__table__
    rows = [
        {
            "source": source,
            "uri": obj.uri,
            "uri_hash": path_hash(obj.uri),
            "etag": obj.etag,
            "size": obj.size,
            "last_modified": obj.last_modified,
            "state": "pending",
            "first_seen": listed_at,
            "listed_at": listed_at,
        }
        for obj in objects
    ]
    with session_scope(url) as session:
        stmt = upsert(session, table).values(rows)
        state = case((stmt.excluded.etag == table.c.submitted_etag, "submitted"), else_="pending")
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.uri_hash],
                set_={
                    "etag": stmt.excluded.etag,
                    "size": stmt.excluded.size,
                    "last_modified": stmt.excluded.last_modified,
                    "listed_at": stmt.excluded.listed_at,
                    "state": state,
                    "deleted_at": None,
                },
            )
        )


def mark_deleted(url: str, source: str, listed_at: datetime, now: datetime) -> int:
    """After a complete listing that began at ``listed_at``: what it did not see is gone from the bucket."""
    create_schema(url)
    with session_scope(url) as session:
        result = session.execute(
            update(S3ObjectRow)
            .where(S3ObjectRow.source == source, S3ObjectRow.state != "deleted", S3ObjectRow.listed_at < listed_at)
            .values(state="deleted", deleted_at=now)
        )
        return result.rowcount


def pending(url: str, source: str, limit: int) -> list[PendingObject]:
    """The oldest ``limit`` objects of ``source`` waiting to be submitted."""
    create_schema(url)
    with read_scope(url) as session:
        rows = session.execute(
            select(S3ObjectRow.id, S3ObjectRow.uri, S3ObjectRow.etag)
            .where(S3ObjectRow.source == source, S3ObjectRow.state == "pending")
            .order_by(S3ObjectRow.id)
            .limit(limit)
        )
        return [PendingObject(*row) for row in rows]


def mark_submitted(url: str, submitted: Sequence[tuple[PendingObject, str]], now: datetime) -> None:
    """Objects whose task was published (each with its task id); one that changed meanwhile stays pending."""
    if not submitted:
        return
    table = S3ObjectRow.__table__
    stmt = (
        update(table)
        .where(and_(table.c.id == bindparam("b_id"), table.c.etag == bindparam("b_etag")))
        .values(state="submitted", submitted_etag=bindparam("b_etag"), task_id=bindparam("b_task"), submitted_at=now)
    )
    with session_scope(url) as session:
        session.connection().execute(
            stmt, [{"b_id": obj.id, "b_etag": obj.etag, "b_task": task_id} for obj, task_id in submitted]
        )


def record_run(
    url: str,
    source: str,
    started_at: datetime,
    duration_s: float,
    listed: int,
    submitted: int,
    failed: int,
    error: str | None,
) -> None:
    """Keep the last listing of ``source`` (overwrites the one before; one without an error is the last success)."""
    create_schema(url)
    values = {
        "source": source,
        "started_at": started_at,
        "duration_s": duration_s,
        "listed": listed,
        "submitted": submitted,
        "failed": failed,
        "error": error,
    }
    if error is None:
        values["last_success_at"] = started_at
    with session_scope(url) as session:
        stmt = upsert(session, S3SourceRun.__table__).values(values)
        session.execute(stmt.on_conflict_do_update(index_elements=["source"], set_=values))


def _failed_documents(source: str):
    badly = [str(s) for s in DocumentStatus.finished_badly()]
    return (
        select(func.count(func.distinct(S3ObjectRow.id)))
        .join(DocumentPathRow, DocumentPathRow.path_hash == S3ObjectRow.uri_hash)
        .join(DocumentRow, DocumentRow.id == DocumentPathRow.document_id)
        .where(S3ObjectRow.source == source, S3ObjectRow.state == "submitted", DocumentRow.status.in_(badly))
    )


def figures(url: str, sources: Sequence[str]) -> list[SourceFigures]:
    """Per source: objects seen (not deleted), submitted, whose documents failed, deleted, and the last listing."""
    create_schema(url)
    out: list[SourceFigures] = []
    with read_scope(url) as session:
        for source in sources:
            counts = dict(
                session.execute(
                    select(S3ObjectRow.state, func.count())
                    .where(S3ObjectRow.source == source)
                    .group_by(S3ObjectRow.state)
                ).all()
            )
            run = session.get(S3SourceRun, source)
            out.append(
                SourceFigures(
                    source=source,
                    last_run_at=as_utc(run.started_at) if run else None,
                    last_run_s=run.duration_s if run else None,
                    error=run.error if run else None,
                    seen=counts.get("pending", 0) + counts.get("submitted", 0),
                    submitted=counts.get("submitted", 0),
                    failed=session.scalar(_failed_documents(source)) or 0,
                    deleted=counts.get("deleted", 0),
                    last_success_at=as_utc(run.last_success_at) if run and run.last_success_at else None,
                )
            )
    return out


def deleted_documents(url: str, source: str | None = None) -> list[int]:
    """Documents whose object was removed from its bucket (kept, and flagged by this)."""
    create_schema(url)
    query = (
        select(func.distinct(DocumentPathRow.document_id))
        .join(S3ObjectRow, S3ObjectRow.uri_hash == DocumentPathRow.path_hash)
        .where(S3ObjectRow.state == "deleted")
    )
    if source is not None:
        query = query.where(S3ObjectRow.source == source)
    with read_scope(url) as session:
        return sorted(session.scalars(query))
