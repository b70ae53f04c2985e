"""Writing documents: who processes a content (``claim``), and recording what came of it.

One row per distinct content (``sha256``), however many paths it was seen
at; failures and rejections are recorded too, so every file the user dropped
in has an answer. ``record_success`` and ``record_failure`` each end in one
transaction that sets the document's final status; ``in_transaction`` lets a
caller write its own rows in that same transaction (the intake ledger's
``finish_in``), so the outcome and the ledger entry are committed together or
not at all. The user's files are never touched here: only database rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from background_tasks.errors import TransientError
from background_tasks.processing.chunking import Chunk
from background_tasks.storage.db import session_scope
from background_tasks.storage.models import ChunkEmbeddingRow, ChunkRow, DocumentPathRow, DocumentRow
from background_tasks.storage.values import (
    MAX_ERROR_CHARS,
    MAX_META_STRING,
    Conflict,
    as_utc,
    check_sha,
    clean_path,
    clean_text,
    db_call,
    file_type_of,
    json_safe,
    path_hash,
    upsert,
    utc_now,
)

logger = logging.getLogger(__name__)

#: Chunks written per transaction: keeps SQLite's write lock short for documents with thousands of chunks.
CHUNK_WRITE_BATCH = 500
FAILURE_STATUSES = ("failed", "rejected")
#: Attempts at a compare-and-set before a claim or a failure record gives up as transient.
_RACE_ATTEMPTS = 20

#: Called with the session of the transaction that records a document's outcome, the document's id
#: and its new status, before it commits. It may run more than once when the record is retried
#: after a race; only the committed run counts.
InTransaction = Callable[[Session, int, str], object]


@dataclass(frozen=True)
class Claim:
    """Outcome of ``DocumentStore.claim``.

    ``state`` is one of:

    * ``new``: a row was created in ``processing``; process the file;
    * ``resume``: a ``processing``/``failed``/``rejected`` row was taken over
      (a redelivered task, or a retry); process the file;
    * ``duplicate``: the content was already processed successfully; the path
      was recorded, nothing else changed; do not process;
    * ``busy``: another live task is processing the same content right now;
      the path was recorded; do not process.
    """

    document_id: int
    state: str
    attempts: int = 1


#: statements built once (per dialect): building one costs more than SQLite takes to run it
_PATH_UPSERTS: dict[str, Any] = {}
_CLAIM_LOOKUP = select(
    DocumentRow.id, DocumentRow.status, DocumentRow.attempts, DocumentRow.task_id, DocumentRow.updated_at
).where(DocumentRow.sha256 == bindparam("sha256"))
_NEW_DOCUMENT = insert(DocumentRow).returning(DocumentRow.id)
_DELETE_CHUNKS = delete(ChunkRow).where(ChunkRow.document_id == bindparam("document_id"))
_CHUNK_IDS = select(ChunkRow.chunk_index, ChunkRow.id).where(ChunkRow.document_id == bindparam("document_id"))
_RECORD_SUCCESS = (
    update(DocumentRow)
    .where(DocumentRow.id == bindparam("document_id"))
    .values(
        status="success",
        metadata_json=bindparam("metadata_json", type_=DocumentRow.metadata_json.type),
        warnings_json=bindparam("warnings_json", type_=DocumentRow.warnings_json.type),
        text_chars=bindparam("text_chars"),
        page_count=bindparam("page_count"),
        chunk_count=bindparam("chunk_count"),
        error_type=None,
        error=None,
        finished_at=bindparam("finished_at", type_=DocumentRow.finished_at.type),
        updated_at=bindparam("finished_at", type_=DocumentRow.updated_at.type),
        duration_s=bindparam("duration_s"),
    )
)


def _path_upsert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    stmt = _PATH_UPSERTS.get(dialect)
    if stmt is None:
        stmt = upsert(session, DocumentPathRow)
        stmt = _PATH_UPSERTS[dialect] = stmt.on_conflict_do_update(
            index_elements=["document_id", "path_hash"],
            set_={"last_seen": stmt.excluded.last_seen, "path": stmt.excluded.path},
        )
    return stmt


def add_path(session: Session, document_id: int, path: Any, now: datetime) -> None:
    """Record (or refresh) that ``document_id`` was seen at ``path``."""
    if path is None:
        return
    stored = clean_path(path)
    values = {
        "document_id": document_id,
        "path": stored,
        "path_hash": path_hash(stored),
        "first_seen": now,
        "last_seen": now,
    }
    session.execute(_path_upsert(session), values)


# --------------------------------------------------------------------------
# Claiming
# --------------------------------------------------------------------------


@db_call
def claim(
    url: str,
    stale_after: timedelta,
    sha256: str,
    path: Any,
    file_type: str | None = None,
    mime_type: str | None = None,
    size_bytes: int | None = None,
    task_id: str | None = None,
    force: bool = False,
) -> Claim:
    """Decide who processes the content ``sha256`` (see ``Claim``). Race-safe.

    Of several processes claiming the same content at once exactly one
    gets ``new`` or ``resume``; the unique constraint on ``sha256`` and a
    compare-and-set on ``attempts`` decide, the losers re-read and retry.

    ``force`` (processing a document again) takes over a ``success`` row too,
    instead of calling the content a duplicate, and drops its old result (chunks,
    their embeddings and search entries) in the same transaction, so the row is
    never ``success`` with chunks of two runs. A redelivery of the task that
    already recorded its result still finds it (``duplicate`` of its own).
    """
    sha256 = check_sha(sha256)
    task_id = clean_text(task_id[:255]) if task_id else None
    file_type = file_type_of(file_type)
    for _ in range(_RACE_ATTEMPTS):
        try:
            return _try_claim(url, stale_after, sha256, path, file_type, mime_type, size_bytes, task_id, force)
        except (IntegrityError, Conflict) as error:
            logger.debug("claim of %s raced with another process, re-reading: %s", sha256[:12], error)
    raise TransientError(f"could not claim document {sha256[:12]}: too many concurrent changes")


def _try_claim(
    url: str,
    stale_after: timedelta,
    sha256: str,
    path: Any,
    file_type: str | None,
    mime_type: str | None,
    size_bytes: int | None,
    task_id: str | None,
    force: bool = False,
) -> Claim:
    now = utc_now()
    mime_type = clean_text(mime_type[:255]) if mime_type else None
    with session_scope(url) as s:
        row = s.execute(_CLAIM_LOOKUP, {"sha256": sha256}).one_or_none()
        if row is None:
            new_values = {
                "sha256": sha256,
                "file_type": file_type,
                "mime_type": mime_type,
                "size_bytes": size_bytes,
                "status": "processing",
                "attempts": 1,
                "chunk_count": 0,
                "created_at": now,
                "updated_at": now,
                "started_at": now,
                "task_id": task_id,
            }
            document_id = s.execute(_NEW_DOCUMENT, new_values).scalar_one()
            add_path(s, document_id, path, now)
            return Claim(document_id, "new", 1)
        same_task = task_id is not None and row.task_id == task_id
        if row.status == "success" and (not force or same_task):
            add_path(s, row.id, path, now)
            return Claim(row.id, "duplicate", row.attempts)
        stale = (as_utc(row.updated_at) or now) < now - stale_after
        if row.status == "processing" and not same_task and not stale:
            add_path(s, row.id, path, now)
            return Claim(row.id, "busy", row.attempts)
        changes: dict[str, Any] = {
            "status": "processing",
            "attempts": DocumentRow.attempts + 1,
            "task_id": task_id,
            "started_at": now,
            "updated_at": now,
            "finished_at": None,
            "error_type": None,
            "error": None,
        }
        if file_type:
            changes["file_type"] = file_type
        if mime_type:
            changes["mime_type"] = mime_type
        if size_bytes is not None:
            changes["size_bytes"] = size_bytes
        result = s.execute(
            update(DocumentRow)
            .where(
                DocumentRow.id == row.id,
                DocumentRow.attempts == row.attempts,
                DocumentRow.status == row.status,
            )
            .values(**changes)
        )
        if result.rowcount != 1:
            raise Conflict(f"document {row.id} changed while claiming")
        if row.status == "success":  # forced: the old result goes with the takeover
            drop_result(s, row.id)
        add_path(s, row.id, path, now)
        return Claim(row.id, "resume", row.attempts + 1)


def drop_result(session: Session, document_id: int) -> None:
    """Remove a document's chunks (with their embeddings and search entries); its row says 0 chunks."""
    session.execute(delete(ChunkEmbeddingRow).where(ChunkEmbeddingRow.document_id == document_id))
    session.execute(delete(ChunkRow).where(ChunkRow.document_id == document_id))
    session.execute(update(DocumentRow).where(DocumentRow.id == document_id).values(chunk_count=0))


# --------------------------------------------------------------------------
# Recording the outcome
# --------------------------------------------------------------------------


@db_call
def record_success(
    url: str,
    document_id: int,
    metadata: Mapping[str, Any] | None,
    chunks: Sequence[Chunk],
    text_chars: int,
    page_count: int | None = None,
    warnings: Iterable[str] = (),
    duration_s: float | None = None,
    in_transaction: InTransaction | None = None,
    embeddings: tuple[Mapping[str, Any], Sequence[bytes]] | None = None,
) -> None:
    """Store the result: old chunks replaced, then status ``success``.

    Replacing (not appending) makes a redelivered task harmless. The chunks
    go in in transactions of ``CHUNK_WRITE_BATCH`` rows, so a long document
    (thousands of chunks, each indexed for search) does not hold SQLite's
    one write lock for a third of a second while other workers wait. The
    status changes with the last batch, and ``in_transaction`` runs in that
    transaction: until it commits search does not see the document, and a
    task that dies half-way leaves it ``processing`` for the redelivered
    task, which starts by deleting what was written. ``embeddings`` (the
    model as ``metadata["embedding"]`` names it, one vector per chunk) are
    written with the last batch: a small document is recorded, searchable
    both ways, in one transaction.
    """
    now = utc_now()
    rows = [
        {
            "document_id": document_id,
            "chunk_index": c.index,
            "text": clean_text(c.text),
            "start_char": c.start,
            "end_char": c.end,
            "page": c.page,
        }
        for c in chunks
    ]
    batches = [rows[i : i + CHUNK_WRITE_BATCH] for i in range(0, len(rows), CHUNK_WRITE_BATCH)] or [[]]
    for number, batch in enumerate(batches):
        with session_scope(url) as s:
            if number == 0:
                # with one batch the status update below checks this in the same transaction
                exists = select(DocumentRow.id).where(DocumentRow.id == document_id)
                if len(batches) > 1 and s.scalar(exists) is None:
                    raise LookupError(f"no document with id {document_id}")
                s.execute(_DELETE_CHUNKS, {"document_id": document_id})
            last = number == len(batches) - 1
            if last:
                outcome = {
                    "document_id": document_id,
                    "metadata_json": json_safe(dict(metadata or {})),
                    "warnings_json": [clean_text(str(w), MAX_META_STRING) for w in warnings],
                    "text_chars": text_chars,
                    "page_count": page_count,
                    "chunk_count": len(rows),
                    "finished_at": now,
                    "duration_s": duration_s,
                }
                result = s.execute(_RECORD_SUCCESS, outcome)
                if result.rowcount != 1:
                    raise LookupError(f"no document with id {document_id}")
            if batch:
                s.execute(insert(ChunkRow), batch)
            if last and embeddings is not None:
                _insert_embeddings(s, document_id, *embeddings)
            if last and in_transaction is not None:
                in_transaction(s, document_id, "success")


def _insert_embeddings(session: Session, document_id: int, model: Mapping[str, Any], vectors: Sequence[bytes]) -> None:
    """The vectors of the document's chunks just written, one per chunk in order."""
    found = session.execute(_CHUNK_IDS, {"document_id": document_id})
    ids = {index: chunk_id for index, chunk_id in found}
    rows = [
        {"chunk_id": ids[index], "document_id": document_id, "model": model["key"], "dim": model["dim"], "vector": blob}
        for index, blob in enumerate(vectors)
    ]
    if rows:
        session.execute(insert(ChunkEmbeddingRow), rows)


@db_call
def record_failure(
    url: str,
    path: Any,
    status: str,
    error_type: str,
    error: str,
    sha256: str | None = None,
    document_id: int | None = None,
    file_type: str | None = None,
    size_bytes: int | None = None,
    duration_s: float | None = None,
    task_id: str | None = None,
    in_transaction: InTransaction | None = None,
) -> int:
    """Record a failed or rejected file; returns the document id.

    Updates the claimed row (``document_id``, else the row of ``sha256``),
    or creates one. A file rejected before it was read has no sha256: its
    row is found again by path and error type, so re-rejecting the same
    file does not pile up rows. A success row is never downgraded.
    ``in_transaction`` runs in the transaction that writes the record.
    """
    if status not in FAILURE_STATUSES:
        raise ValueError(f"status must be one of {FAILURE_STATUSES}, got {status!r}")
    sha256 = check_sha(sha256) if sha256 else None
    failure = _Failure(path, status, error_type, error, sha256, document_id, file_type, size_bytes, duration_s, task_id)
    for _ in range(_RACE_ATTEMPTS):
        try:
            return _try_record_failure(url, failure, in_transaction)
        except (IntegrityError, Conflict) as exc:
            logger.debug("recording failure raced with another process, retrying: %s", exc)
    raise TransientError("could not record failure: too many concurrent changes")


@dataclass(frozen=True)
class _Failure:
    path: Any
    status: str
    error_type: str
    error: str
    sha256: str | None
    document_id: int | None
    file_type: str | None
    size_bytes: int | None
    duration_s: float | None
    task_id: str | None


def _try_record_failure(url: str, failure: _Failure, in_transaction: InTransaction | None) -> int:
    now = utc_now()
    path, status, sha256 = failure.path, failure.status, failure.sha256
    file_type = file_type_of(failure.file_type)
    changes: dict[str, Any] = {
        "status": status,
        "error_type": clean_text(str(failure.error_type)[:64]),
        "error": clean_text(str(failure.error), MAX_ERROR_CHARS),
        "finished_at": now,
        "updated_at": now,
        "duration_s": failure.duration_s,
    }
    if failure.task_id:
        changes["task_id"] = clean_text(failure.task_id[:255])
    if file_type:
        changes["file_type"] = file_type
    if failure.size_bytes is not None:
        changes["size_bytes"] = failure.size_bytes
    with session_scope(url) as s:
        row = None
        if failure.document_id is not None:
            row = s.execute(
                select(DocumentRow.id, DocumentRow.status).where(DocumentRow.id == failure.document_id)
            ).one_or_none()
        if row is None and sha256 is not None:
            row = s.execute(
                select(DocumentRow.id, DocumentRow.status).where(DocumentRow.sha256 == sha256)
            ).one_or_none()
        if row is None and sha256 is None and path is not None:
            stored = clean_path(path)
            row = s.execute(
                select(DocumentRow.id, DocumentRow.status)
                .join(DocumentPathRow, DocumentPathRow.document_id == DocumentRow.id)
                .where(
                    DocumentPathRow.path_hash == path_hash(stored),
                    DocumentRow.sha256.is_(None),
                    DocumentRow.status == status,
                    DocumentRow.error_type == changes["error_type"],
                )
                .order_by(DocumentRow.id.desc())
                .limit(1)
            ).one_or_none()
        if row is not None:
            if row.status != "success":
                result = s.execute(
                    update(DocumentRow)
                    .where(DocumentRow.id == row.id, DocumentRow.status != "success")
                    .values(**changes)
                )
                if result.rowcount != 1:
                    raise Conflict(f"document {row.id} changed while recording its failure")
            add_path(s, row.id, path, now)
            document_id = row.id
        else:
            doc = DocumentRow(
                sha256=sha256,
                attempts=1 if sha256 else 0,
                chunk_count=0,
                created_at=now,
                **changes,
            )
            s.add(doc)
            s.flush()
            add_path(s, doc.id, path, now)
            document_id = doc.id
        if in_transaction is not None:
            in_transaction(s, document_id, status)
        return document_id


# --------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------


@db_call
def delete_older_than(url: str, days: float) -> int:
    """Delete rows created more than ``days`` ago (with their paths and chunks). Files are not touched."""
    if days < 0 or not math.isfinite(days):
        raise ValueError(f"days must be a non-negative number, got {days!r}")
    cutoff = utc_now() - timedelta(days=days)
    with session_scope(url) as s:
        result = s.execute(delete(DocumentRow).where(DocumentRow.created_at < cutoff))
        return int(result.rowcount or 0)
