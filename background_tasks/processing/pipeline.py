"""The document pipeline as plain functions: path in, frozen result out.

``process_file`` is what ``process_document_file`` runs: take the file in
(vet the path, wait for it to be complete, copy it privately, hashing on the
way: ``intake``), claim its content in the store (so the same content is
processed once, also when a task is redelivered), identify the real type,
extract in the isolated parser process, OCR the pages that have no text layer
(``ocr_pipeline``), and finish (normalise, chunk, record: ``finish``).
Permanent errors are recorded and returned; ``TransientError`` propagates so
the task can retry it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from background_tasks.errors import (
    ContentChanged,
    InvalidArgument,
    MidasError,
    PermanentError,
    RejectedError,
    StorageUnavailable,
    TransientError,
)
from background_tasks.extraction.extractors import Limits
from background_tasks.extraction.isolation import run_isolated
from background_tasks.processing.extract import extract, metadata_payload
from background_tasks.processing.finish import finish, normalise
from background_tasks.processing.intake import file_facts, take_in
from background_tasks.processing.ocr_pipeline import apply_ocr
from background_tasks.processing.origin import origin_metadata
from background_tasks.settings import Settings
from background_tasks.storage.store import DocumentStore, InTransaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessResult:
    """What ``process_document_file`` returns (as a dict)."""

    status: str  # success | duplicate | failed | rejected
    path: str
    document_id: int | None = None
    file_type: str | None = None
    sha256: str | None = None
    chunks_created: int = 0
    pages: int | None = None
    text_chars: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    duration_s: float = 0.0
    error_type: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        if self.status not in {"failed", "rejected"}:
            data.pop("error_type")
            data.pop("error")
        return data


def status_for(exc: PermanentError) -> str:
    return "rejected" if isinstance(exc, RejectedError) else "failed"


# -- the pipeline ----------------------------------------------------------------


def process_file(
    raw_path: str,
    settings: Settings,
    store: DocumentStore,
    task_id: str | None = None,
    in_transaction: InTransaction | None = None,
    origin: object = None,
    reprocess: object = None,
    complete: bool = False,
) -> ProcessResult:
    """Process one document end to end. Raises only TransientError (retry later).

    ``in_transaction`` runs in the transaction that records the outcome, success
    or failure (a duplicate records nothing; busy content raises TransientError).
    ``origin`` (from a source: mail, S3) is checked and kept as ``metadata["origin"]``.
    ``reprocess`` (a SHA-256, from ``processing.manage.reprocess_document``) processes
    that known content again, replacing its document's result; a file that no longer
    holds it is ``rejected`` as ``content_changed`` and nothing is recorded.
    ``complete``: the caller vouches the file is written whole (it saw it stable, or wrote it
    itself), so it is read without waiting ``MIDAS_STABILITY_SECONDS`` for a fresh file.
    """
    started = time.monotonic()
    # What is recorded as the path: a NUL byte or a non-string argument is recorded as its repr.
    path_text = raw_path if isinstance(raw_path, str) and "\x00" not in raw_path else repr(raw_path)
    document_id: int | None = None
    sha256: str | None = None
    file_type: str | None = Path(path_text).suffix.lower().lstrip(".") or None
    size: int | None = None

    def elapsed() -> float:
        return round(time.monotonic() - started, 4)

    def failed(exc: MidasError) -> ProcessResult:
        return _record_failure(
            store, exc, path_text, sha256, document_id, file_type, size, elapsed(), task_id, in_transaction
        )

    try:
        extra = origin_metadata(origin)
        expected = reprocess_sha256(reprocess)
        with take_in(raw_path, settings, wait_until_complete=not complete) as copy:
            original = copy.original
            path_text = copy.where
            if expected is not None and copy.sha256 != expected:
                return _content_changed(path_text, copy.sha256, expected, file_type, elapsed())
            sha256, size = copy.sha256, copy.size
            kind = copy.identify(refuse_empty=True)
            file_type = kind.file_type
            claim = store.claim(sha256, path_text, file_type, kind.mime_type, size, task_id, force=expected is not None)
            document_id = claim.document_id
            if claim.state == "busy":
                document_id = None  # not ours to record on
                raise TransientError(f"{original.name}: the same content is being processed by another task")
            if claim.state == "duplicate":
                return _duplicate(store, claim.document_id, path_text, file_type, sha256, task_id, elapsed)
            extraction = extract(copy.copy, kind.extension, kind.mime_type, settings, label=original.name)
            extraction = apply_ocr(extraction, copy.copy, kind.extension, settings, original.name, elapsed())
            facts = file_facts(copy, kind.mime_type)

        body = normalise(extraction, {**facts, **extraction.metadata, **extra})
        del extraction  # large documents: one copy of the text at a time (raw -> normalised -> chunks)
        page_count = body.page_count(file_type)
        done = finish(
            store, document_id, body, settings, page_count=page_count, elapsed=elapsed, in_transaction=in_transaction
        )
        log.info("%s: %d chunks, %d characters in %.3f s", original.name, done.chunks, done.text_chars, done.duration_s)
        return ProcessResult(
            status="success",
            path=path_text,
            document_id=document_id,
            file_type=file_type,
            sha256=sha256,
            chunks_created=done.chunks,
            pages=page_count,
            text_chars=done.text_chars,
            metadata=done.metadata,
            warnings=body.warnings,
            duration_s=done.duration_s,
        )
    except TransientError:
        raise
    except MidasError as exc:  # permanent, or neither permanent nor transient: treated as permanent
        return failed(exc)
    except OSError as exc:
        if exc.filename and Path(os.fsdecode(exc.filename)).is_relative_to(settings.work_dir):
            # MIDAS's own working folder cannot be written: a storage fault, not the document's.
            raise StorageUnavailable(f"{Path(path_text).name}: {exc.strerror or exc} ({exc.filename})") from exc
        # The file vanished or became unreadable between checks: a clear, permanent error.
        err = PermanentError(f"{Path(path_text).name}: {exc.strerror or exc}")
        err.error_type = "io_error"
        return failed(err)


def reprocess_sha256(value: object) -> str | None:
    """The ``reprocess`` argument: None, or the SHA-256 of the content to process again (``InvalidArgument``)."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise InvalidArgument(f"reprocess must be the SHA-256 of a document's content, not {value!r:.80}")
    return value


def _content_changed(path: str, sha256: str, expected: str, file_type: str | None, duration: float) -> ProcessResult:
    """Processing again found other content at the path: said, not recorded (the document stays as it was)."""
    exc = ContentChanged(
        f"{Path(path).name} no longer holds the content of the document being processed again "
        f"(SHA-256 {sha256[:12]}…, not {expected[:12]}…); nothing was changed"
    )
    log.warning("%s: %s", path, exc.message)
    return _error_result(exc, "rejected", path, None, file_type, sha256, duration)


def _error_result(
    exc: MidasError, status: str, path: str, document_id: int | None, file_type: str | None, sha256: str | None,
    duration: float,
) -> ProcessResult:  # fmt: skip
    return ProcessResult(
        status=status,
        path=path,
        document_id=document_id,
        file_type=file_type,
        sha256=sha256,
        duration_s=duration,
        error_type=exc.error_type,
        error=exc.message,
    )


def _duplicate(
    store: DocumentStore,
    document_id: int,
    path: str,
    file_type: str,
    sha256: str,
    task_id: str | None,
    elapsed: Callable[[], float],
) -> ProcessResult:
    """The content was processed before; by this very task when it was redelivered after storing its result."""
    known = store.get_document(document_id) or {}
    # Our own task, redelivered after it stored its result but before it was acknowledged:
    # report what that first delivery did instead of calling it a duplicate.
    own = task_id is not None and known.get("task_id") == task_id
    if not own:
        log.info("%s: same content as document %s, not processed again", Path(path).name, document_id)
    return ProcessResult(
        status="success" if own else "duplicate",
        path=path,
        document_id=document_id,
        file_type=known.get("file_type", file_type),
        sha256=sha256,
        chunks_created=(known.get("chunk_count") or 0) if own else 0,
        warnings=tuple(known.get("warnings") or ()) if own else (),
        pages=known.get("page_count"),
        text_chars=known.get("text_chars") or 0,
        metadata=known.get("metadata") or {},
        duration_s=elapsed(),
    )


def _record_failure(
    store: DocumentStore,
    exc: MidasError,
    path: str,
    sha256: str | None,
    document_id: int | None,
    file_type: str | None,
    size: int | None,
    duration: float,
    task_id: str | None,
    in_transaction: InTransaction | None = None,
) -> ProcessResult:
    status = status_for(exc) if isinstance(exc, PermanentError) else "failed"
    log.warning("%s: %s (%s)", path, exc.message, exc.error_type)
    document_id = store.record_failure(
        path,
        status,
        exc.error_type,
        exc.message,
        sha256=sha256,
        document_id=document_id,
        file_type=file_type,
        size_bytes=size,
        duration_s=duration,
        task_id=task_id,
        in_transaction=in_transaction,
    )
    return _error_result(exc, status, path, document_id, file_type, sha256, duration)


def record_gave_up(
    store: DocumentStore,
    raw_path: str,
    exc: TransientError,
    task_id: str | None,
    in_transaction: InTransaction | None = None,
) -> ProcessResult:
    """After the last retry of a transient error: record it as failed for good."""
    suffix = Path(str(raw_path)).suffix.lower().lstrip(".") or None
    return _record_failure(store, exc, str(raw_path), None, None, suffix, None, 0.0, task_id, in_transaction)


def document_metadata(raw_path: str, settings: Settings) -> dict[str, Any]:
    """Quick metadata: file facts plus what the format declares, without full extraction where possible."""
    with take_in(raw_path, settings, wait_until_complete=False) as copy:
        kind = copy.identify(refuse_empty=True)
        facts = file_facts(copy, kind.mime_type)
        found = run_isolated(
            metadata_payload,
            (str(copy.copy), kind.extension, kind.mime_type, Limits.from_settings(settings)),
            timeout=settings.extract_timeout,
            label=copy.original.name,
        )
    return {**facts, "file_type": kind.file_type, **found}


def remove_stale_work(settings: Settings, older_than_s: float) -> list[str]:
    """Working copies left behind by a worker that died mid-file. Never touches originals."""
    removed: list[str] = []
    root = settings.work_dir
    if not root.is_dir():
        return removed
    cutoff = time.time() - older_than_s
    for entry in root.iterdir():
        try:
            if entry.stat().st_mtime >= cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                for sub in sorted(entry.rglob("*"), reverse=True):
                    (sub.rmdir if sub.is_dir() and not sub.is_symlink() else sub.unlink)()
                entry.rmdir()
            else:
                entry.unlink()
            removed.append(str(entry))
        except OSError as exc:
            log.warning("could not remove %s: %s", entry, exc)
    return removed


def remove_processed_inbox(settings: Settings, store: DocumentStore, older_than_s: float) -> list[str]:
    """Uploaded copies in the data dir's inbox, once processed and older than the retention.

    The inbox holds MIDAS's own copies of uploads (from the dashboard), never a
    user's original; files not yet processed are kept.
    """
    removed: list[str] = []
    inbox = settings.inbox_dir
    if not inbox.is_dir():
        return removed
    cutoff = time.time() - older_than_s
    for entry in inbox.rglob("*"):
        try:
            if entry.is_symlink() or not entry.is_file() or entry.stat().st_mtime >= cutoff:
                continue
            known = store.find_by_path(str(entry.resolve()))
            if known and known[0]["status"] in {"success", "failed", "rejected"}:
                entry.unlink()
                removed.append(str(entry))
        except OSError as exc:
            log.warning("could not remove %s: %s", entry, exc)
    return removed
