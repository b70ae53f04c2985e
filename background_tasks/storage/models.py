"""Every MIDAS table on one page.

One declarative ``Base`` (``storage.db``) holds them all, so ``storage.schema.create_schema``
builds the whole schema at once in any process, whichever wing it serves. The SQL that reads
and writes them lives beside them in ``storage/``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from background_tasks.statuses import DocumentStatus, LedgerState, sql_in
from background_tasks.storage.db import Base

# -- Documents, the paths they were seen at, and their chunks (the store) ----------------------


class DocumentRow(Base):
    """One distinct content (or one file rejected before it was read)."""

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    file_type: Mapped[str | None] = mapped_column(String(32))
    mime_type: Mapped[str | None] = mapped_column(String(255))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    metadata_json: Mapped[Any | None] = mapped_column(JSON)
    warnings_json: Mapped[Any | None] = mapped_column(JSON)
    text_chars: Mapped[int | None] = mapped_column(BigInteger)
    page_count: Mapped[int | None] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float | None] = mapped_column(Float)
    task_id: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        CheckConstraint(sql_in("status", DocumentStatus), name="ck_documents_status"),
        Index("ix_documents_status", "status"),
        Index("ix_documents_file_type", "file_type"),
        Index("ix_documents_created_at", "created_at"),
        # ids are never reused after a delete (SQLite otherwise hands out a deleted newest id again),
        # so an id a client holds, a task result or the ledger names never becomes another document
        {"sqlite_autoincrement": True},
    )


class DocumentPathRow(Base):
    """A path a document was seen at.

    Uniqueness and lookup go through ``path_hash`` (SHA-256 of the path), not
    the path itself: PostgreSQL cannot index text longer than ~2.7 kB and
    paths may be longer.
    """

    __tablename__ = "document_paths"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    path_hash: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("document_id", "path_hash", name="uq_document_paths_document_path"),
        Index("ix_document_paths_path_hash", "path_hash"),
    )


class ChunkRow(Base):
    """One chunk of a document's normalized text."""

    __tablename__ = "chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    chunk_index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    start_char: Mapped[int] = mapped_column(BigInteger)
    end_char: Mapped[int] = mapped_column(BigInteger)
    page: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("document_id", "chunk_index", name="uq_chunks_document_index"),
        # never reused either: search's cache of embeddings (storage.vectors) knows chunks by id
        {"sqlite_autoincrement": True},
    )


class ChunkEmbeddingRow(Base):
    """The embedding of one chunk by one model (``storage.vectors``): float32 little-endian bytes.

    One row per chunk: re-embedding with another model overwrites it, and search only ever
    compares vectors of the model it embeds the query with (``model``).
    """

    __tablename__ = "chunk_embeddings"

    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(200))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_chunk_embeddings_model_chunk", "model", "chunk_id"),
        Index("ix_chunk_embeddings_document", "document_id"),
    )


# -- OCR continued page by page on the analysis queue ------------------------------------------


class OcrPageRow(Base):
    """The OCR result of one page of a document whose OCR continues on the analysis queue."""

    __tablename__ = "ocr_pages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    page: Mapped[int] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float)
    words: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("document_id", "page", name="uq_ocr_pages_document_page"),)


# -- Analyses (data profiles and text analytics) -----------------------------------------------


class AnalysisRow(Base):
    """One analysis of one content: kind "data" (table profiles) or "text" (text analytics)."""

    __tablename__ = "analyses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    result_json: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("sha256", "kind", name="uq_analyses_sha256_kind"),
        Index("ix_analyses_document_id", "document_id"),
    )


# -- The watcher's memory of files it handed on ------------------------------------------------


class WatchedFile(Base):
    """One file the watcher has handled: what it looked like and which task it went to."""

    __tablename__ = "watcher_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    task_id: Mapped[str | None] = mapped_column(String(64))
    same_as: Mapped[str | None] = mapped_column(Text)  # a copy/rename: the path whose content was processed
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- Task history (one row per Celery task id) -------------------------------------------------


class TaskRecord(Base):
    """The life of one task (one Celery task id)."""

    __tablename__ = "task_history"

    task_id: Mapped[str] = mapped_column(String(155), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200), index=True)
    queue: Mapped[str | None] = mapped_column(String(100), index=True)
    worker: Mapped[str | None] = mapped_column(String(255))
    args_summary: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), index=True, default="pending")
    #: ordering of events (attempt * 10 + phase); a row only moves forward
    seq: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    parent_id: Mapped[str | None] = mapped_column(String(155))
    #: UTC (SQLite hands them back without the zone; ``epoch`` reads both)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    wait_s: Mapped[float | None] = mapped_column(Float)
    runtime_s: Mapped[float | None] = mapped_column(Float)
    result_summary: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_task_history_name_finished", "name", "finished_at"),)

    def as_dict(self) -> dict[str, Any]:
        return {c.name: getattr(self, c.name) for c in self.__table__.columns}


# -- Health samples (the monitoring time series) -----------------------------------------------


class HealthSample(Base):
    """One health check, kept as a time series for the dashboard."""

    __tablename__ = "health_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    #: the CPU the verdict judged: the mean over MIDAS_CPU_WINDOW_SECONDS of checks (ops.health_verdict)
    cpu_mean_percent: Mapped[float | None] = mapped_column(Float)
    load_1: Mapped[float | None] = mapped_column(Float)
    memory_percent: Mapped[float | None] = mapped_column(Float)
    swap_percent: Mapped[float | None] = mapped_column(Float)
    data_disk_percent: Mapped[float | None] = mapped_column(Float)
    redis_ok: Mapped[bool] = mapped_column(Boolean)
    redis_latency_ms: Mapped[float | None] = mapped_column(Float)
    redis_used_memory: Mapped[int | None] = mapped_column(BigInteger)
    workers: Mapped[int | None] = mapped_column(Integer)
    active_tasks: Mapped[int | None] = mapped_column(Integer)
    waiting_tasks: Mapped[int | None] = mapped_column(Integer)
    watcher_age_s: Mapped[float | None] = mapped_column(Float)
    reasons: Mapped[Any] = mapped_column(JSON)
    #: findings not yet held for MIDAS_HEALTH_HOLD_CHECKS checks: listed, not counted in ``status``
    pending: Mapped[Any | None] = mapped_column(JSON)
    #: this check's own level per finding key (those not ok), for judging the checks after it
    levels: Mapped[Any | None] = mapped_column(JSON)
    details: Mapped[Any] = mapped_column(JSON)


# -- Alert quiet periods -----------------------------------------------------------------------


class AlertState(Base):
    """When each kind of alert was last sent (the quiet period), and how many it covered."""

    __tablename__ = "alert_state"

    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_count: Mapped[int] = mapped_column(Integer, default=0)


# -- Storage write probes (health check) -------------------------------------------------------


class StorageProbe(Base):
    """The last successful storage probe per host and process (one row each, overwritten)."""

    __tablename__ = "storage_probes"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    written_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- The intake ledger (every submission until it is done) -----------------------------------


class LedgerEntry(Base):
    """One submitted task, from the moment it is published until it is done or failed for good.

    The broker may lose a message (kombu's Redis transport pops it before it records it as
    unacknowledged; a Redis restart without its append-only file forgets every queue); the
    ledger does not, so the reaper can send again what nobody holds.
    """

    __tablename__ = "ledger"

    task_id: Mapped[str] = mapped_column(String(155), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: ``{"args": [...], "kwargs": {...}}`` exactly as published (JSON, never pickle)
    call_json: Mapped[Any | None] = mapped_column(JSON)
    queue: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16))
    #: times a worker started it; times the reaper sent it again
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    resends: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_resent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: a running entry whose lease has passed lost its worker
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: the reaper looks at the entry again no earlier than this
    check_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    #: the document the task recorded and how, written in the transaction that recorded it
    document_id: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(20))

    __table_args__ = (
        CheckConstraint(sql_in("state", LedgerState), name="ck_ledger_state"),
        Index("ix_ledger_state_check_after", "state", "check_after"),
        Index("ix_ledger_worker_state", "worker", "state"),
        Index("ix_ledger_finished_at", "finished_at"),
    )


# -- Mail accounts: every mail taken, and each account's last run (sources/mail) ---------------


class MailMessageRow(Base):
    """One mail a mail account's fetch has taken, also when it gave no document, so it is never taken again.

    A mail is known by its place (account, folder, UIDVALIDITY, UID) and by its key (a SHA-256 of
    its Message-ID, or of its headers when it has none): a folder whose UIDVALIDITY changed is
    taken again by key, without doubles.
    """

    __tablename__ = "mail_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(64))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    message_key: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(Text)
    sender: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    rule: Mapped[str | None] = mapped_column(String(64))
    #: a ``statuses.MailOutcome``: submitted | no_document | no_rule | duplicate | too_large | failed | retry
    outcome: Mapped[str] = mapped_column(String(20))
    documents: Mapped[int] = mapped_column(Integer, default=0)
    #: what was submitted (file name, task id) and what was skipped (name, reason)
    parts_json: Mapped[Any | None] = mapped_column(JSON)
    detail: Mapped[str | None] = mapped_column(Text)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("account", "folder", "uidvalidity", "uid", name="uq_mail_messages_place"),
        Index("ix_mail_messages_account_key", "account", "message_key"),
    )


class MailAccountState(Base):
    """Each mail account's last run and running totals (``sources status``, the dashboard)."""

    __tablename__ = "mail_accounts"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_run_s: Mapped[float | None] = mapped_column(Float)
    seen: Mapped[int] = mapped_column(Integer, default=0)
    submitted: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    #: the last run's problem in plain words (never a secret), and since when it persists
    error: Mapped[str | None] = mapped_column(Text)
    error_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: the start of the last run that ended without an error (added to older databases by ``schema``)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MailAttemptRow(Base):
    """A mail whose taking stopped its account's fetch: how many runs it stopped, and the last error.

    Deleted once the mail is recorded. At MIDAS_MAX_REDELIVERIES the mail is recorded as ``failed``
    and the fetch goes on past it, so one poison mail never holds an account at the same place.
    """

    __tablename__ = "mail_attempts"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    folder: Mapped[str] = mapped_column(String(255), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- S3 sources: every object listed under a configured prefix, and each prefix's last listing ----------


class S3ObjectRow(Base):
    """One object under an S3 source prefix: what the last listing said of it, and what was submitted.

    ``state`` is ``pending`` (new or changed, not submitted yet), ``submitted`` or ``deleted``
    (gone from the bucket; its document is kept). ``uri_hash`` is ``values.path_hash`` of the
    object's URI, the same as its document's path, so the two can be joined.
    """

    __tablename__ = "s3_objects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(1100))
    uri: Mapped[str] = mapped_column(Text)
    uri_hash: Mapped[str] = mapped_column(String(64), unique=True)
    etag: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    last_modified: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16))
    submitted_etag: Mapped[str | None] = mapped_column(String(255))
    task_id: Mapped[str | None] = mapped_column(String(155))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: the start of the listing that last saw it; older than the last complete listing means deleted
    listed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("state IN ('pending', 'submitted', 'deleted')", name="ck_s3_objects_state"),
        Index("ix_s3_objects_source_state", "source", "state"),
    )


class S3SourceRun(Base):
    """The last listing of one S3 source prefix (one row per source, overwritten)."""

    __tablename__ = "s3_source_runs"

    source: Mapped[str] = mapped_column(String(1100), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float] = mapped_column(Float)
    listed: Mapped[int] = mapped_column(Integer, default=0)
    submitted: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    #: the start of the last listing that ended without an error (added to older databases by ``schema``)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
