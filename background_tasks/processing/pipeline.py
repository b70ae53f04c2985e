"""The document pipeline as plain functions: path in, frozen result out.

``process_file`` is what ``process_document_file`` runs: vet the path, wait
for the file to be complete, copy it privately (hashing on the way), claim its
content in the store (so the same content is processed once, also when a task
is redelivered), detect the real type, extract in an isolated child process,
OCR the pages that have no text layer (``ocr_pipeline``), normalise, chunk,
and record. Permanent errors are recorded and returned; ``TransientError``
propagates so the task can retry it.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from background_tasks.errors import (
    EmptyDocument,
    MidasError,
    PermanentError,
    RejectedError,
    StorageUnavailable,
    TransientError,
)
from background_tasks.extraction import detect
from background_tasks.extraction.extractors import Limits
from background_tasks.extraction.isolation import run_isolated
from background_tasks.processing.chunking import chunk_text, normalize_with_pages
from background_tasks.processing.extract import extract, metadata_payload
from background_tasks.processing.intake import Intake, take_in
from background_tasks.processing.ocr_pipeline import apply_ocr
from background_tasks.processing.textstats import detect_language, word_count
from background_tasks.settings import Settings
from background_tasks.storage.store import DocumentStore

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


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def file_facts(intake: Intake, mime_type: str | None) -> dict[str, Any]:
    """Metadata every file has, whatever its format (times from the descriptor intake opened)."""
    original, st, sha256, size = intake.original, intake.stat, intake.sha256, intake.size
    return {
        "file_name": original.name,
        "extension": original.suffix.lower(),
        "mime_type": mime_type or mimetypes.guess_type(original.name)[0] or "application/octet-stream",
        "size_bytes": size,
        "sha256": sha256,
        "modified_at": _iso(st.st_mtime),
        "created_at": _iso(getattr(st, "st_birthtime", st.st_ctime)),
    }


# -- extraction in the child process ------------------------------------------

# -- the pipeline ----------------------------------------------------------------


def process_file(raw_path: str, settings: Settings, store: DocumentStore, task_id: str | None = None) -> ProcessResult:
    """Process one document end to end. Raises only TransientError (retry later)."""
    started = time.monotonic()
    # What is recorded as the path: a NUL byte or a non-string argument is recorded as its repr.
    path_text = raw_path if isinstance(raw_path, str) and "\x00" not in raw_path else repr(raw_path)
    document_id: int | None = None
    sha256: str | None = None
    file_type: str | None = Path(path_text).suffix.lower().lstrip(".") or None
    size: int | None = None

    def elapsed() -> float:
        return round(time.monotonic() - started, 4)

    try:
        with take_in(raw_path, settings) as copy:
            original = copy.original
            path_text = str(original)
            sha256, size = copy.sha256, copy.size
            if size == 0:
                raise EmptyDocument(f"{original.name} is empty (0 bytes)")
            extension, mime_type = detect.resolve_extension(copy.copy, original.suffix.lower())
            file_type = extension.lstrip(".")
            claim = store.claim(sha256, path_text, file_type, mime_type, size, task_id)
            document_id = claim.document_id
            if claim.state == "busy":
                document_id = None  # not ours to record on
                raise TransientError(f"{original.name}: the same content is being processed by another task")
            if claim.state == "duplicate":
                known = store.get_document(document_id) or {}
                # Our own task, redelivered after it stored its result but before it was acknowledged:
                # report what that first delivery did instead of calling it a duplicate.
                own = task_id is not None and known.get("task_id") == task_id
                if not own:
                    log.info("%s: same content as document %s, not processed again", original.name, document_id)
                return ProcessResult(
                    status="success" if own else "duplicate",
                    path=path_text,
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
            extraction = extract(copy.copy, extension, mime_type, settings, label=original.name)
            extraction = apply_ocr(extraction, copy.copy, extension, settings, original.name, elapsed())
            facts = file_facts(copy, mime_type)

        # Large documents: keep one copy of the text at a time (raw -> normalised -> chunks).
        text, pages = normalize_with_pages(extraction.text, extraction.pages)
        warnings = list(extraction.warnings)
        metadata = {**facts, **extraction.metadata}
        del extraction
        if not text.strip() and not warnings:
            warnings.append("no text found in the document")
        metadata.setdefault("word_count", word_count(text))
        if "language" not in metadata or not metadata.get("language"):
            metadata["language"] = detect_language(text)
        text_chars = len(text)
        chunks = chunk_text(text, settings.chunk_size, settings.chunk_overlap, pages)
        del text
        page_count = metadata.get("page_count") or (len(pages) if pages and file_type == "pdf" else None)
        duration = elapsed()
        store.record_success(
            document_id,
            metadata=metadata,
            chunks=chunks,
            text_chars=text_chars,
            page_count=page_count,
            warnings=warnings,
            duration_s=duration,
        )
        log.info("%s: %d chunks, %d characters in %.3f s", original.name, len(chunks), text_chars, duration)
        return ProcessResult(
            status="success",
            path=path_text,
            document_id=document_id,
            file_type=file_type,
            sha256=sha256,
            chunks_created=len(chunks),
            pages=page_count,
            text_chars=text_chars,
            metadata=metadata,
            warnings=tuple(warnings),
            duration_s=duration,
        )
    except TransientError:
        raise
    except PermanentError as exc:
        return _record_failure(store, exc, path_text, sha256, document_id, file_type, size, elapsed(), task_id)
    except MidasError as exc:  # a MidasError that is neither permanent nor transient: treat as permanent
        return _record_failure(store, exc, path_text, sha256, document_id, file_type, size, elapsed(), task_id)
    except OSError as exc:
        if exc.filename and Path(os.fsdecode(exc.filename)).is_relative_to(settings.work_dir):
            # MIDAS's own working folder cannot be written: a storage fault, not the document's.
            raise StorageUnavailable(f"{Path(path_text).name}: {exc.strerror or exc} ({exc.filename})") from exc
        # The file vanished or became unreadable between checks: a clear, permanent error.
        err = PermanentError(f"{Path(path_text).name}: {exc.strerror or exc}")
        err.error_type = "io_error"
        return _record_failure(store, err, path_text, sha256, document_id, file_type, size, elapsed(), task_id)


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
    )
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


def record_gave_up(store: DocumentStore, raw_path: str, exc: TransientError, task_id: str | None) -> ProcessResult:
    """After the last retry of a transient error: record it as failed for good."""
    suffix = Path(str(raw_path)).suffix.lower().lstrip(".") or None
    return _record_failure(store, exc, str(raw_path), None, None, suffix, None, 0.0, task_id)


def document_metadata(raw_path: str, settings: Settings) -> dict[str, Any]:
    """Quick metadata: file facts plus what the format declares, without full extraction where possible."""
    with take_in(raw_path, settings, wait_until_complete=False) as copy:
        original = copy.original
        if copy.size == 0:
            raise EmptyDocument(f"{original.name} is empty (0 bytes)")
        extension, mime_type = detect.resolve_extension(copy.copy, original.suffix.lower())
        facts = file_facts(copy, mime_type)
        found = run_isolated(
            metadata_payload,
            (str(copy.copy), extension, mime_type, Limits.from_settings(settings)),
            timeout=settings.extract_timeout,
            work_dir=settings.work_dir,
            label=original.name,
        )
    return {**facts, "file_type": extension.lstrip("."), **found}


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
