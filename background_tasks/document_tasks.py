"""Document tasks (queue ``documents``): thin wrappers over ``background_tasks.pipeline``.

from background_tasks.document_tasks import process_document_file
process_document_file.delay("path/to/document.pdf").get(timeout=60)
"""

from __future__ import annotations

import ctypes
import gc
import logging
import random
import time
import uuid
from functools import lru_cache
from typing import Any

from celery import signals, states

from background_tasks import analysis_tasks, pipeline
from background_tasks.errors import MidasError, PermanentError, TransientError
from background_tasks.settings import get_settings
from background_tasks.store import DocumentStore
from celery_config import app

log = logging.getLogger(__name__)

BATCH_POLL_MIN_S = 0.5
BATCH_POLL_MAX_S = 5.0


@lru_cache(maxsize=1)
def document_store() -> DocumentStore:
    """One store (engine, pool) per worker process, created on first use."""
    settings = get_settings()
    # A row still "processing" is taken over only after the broker would have redelivered its task.
    store = DocumentStore(settings.database_url_resolved, stale_after_s=settings.visibility_timeout)
    store.create_schema()
    return store


@signals.worker_init.connect
def _preload_parsers(**_: Any) -> None:
    """In the worker's main process, before the pool forks: parsers load once, not per task."""
    missing = pipeline.preload_parsers()
    if missing:
        log.warning("optional parser libraries not available: %s", ", ".join(missing))
    # Keep the garbage collector off the preloaded objects: otherwise every pool process soon
    # holds a private copy of pages it could share with the main process (copy-on-write).
    gc.collect()
    gc.freeze()


_LIBC = None


@signals.task_postrun.connect
def _return_freed_memory(sender: Any = None, **_: Any) -> None:
    """After a document task, hand freed heap pages back to the OS (glibc keeps them otherwise),
    so a worker that just processed a 90 MB file drops back to its idle size."""
    global _LIBC
    if sender is None or not sender.name.startswith("background_tasks.document_tasks."):
        return
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        _LIBC = False


def retry_delay(retries: int, cap: float) -> float:
    """Exponential backoff with full jitter: 1, 2, 4, 8 … seconds, randomised, capped."""
    return random.uniform(0, min(cap, 2.0**retries)) + 0.5


@app.task(bind=True, name="background_tasks.document_tasks.process_document_file")
def process_document_file(self, file_path: str) -> dict[str, Any]:
    """Extract, chunk and store one document; returns the result dict (see README)."""
    settings = get_settings()
    store = document_store()
    try:
        result = pipeline.process_file(file_path, settings, store, task_id=self.request.id).as_dict()
        analysis_tasks.schedule_follow_ups(result)  # tables get profiled, long scans OCR'd, on the analysis queue
        return result
    except TransientError as exc:
        if self.request.retries >= settings.max_retries:
            log.warning("%s: giving up after %d retries: %s", file_path, self.request.retries, exc)
            return pipeline.record_gave_up(store, file_path, exc, self.request.id).as_dict()
        delay = retry_delay(self.request.retries, settings.retry_backoff_max)
        log.info("%s: %s; retry %d in %.1f s", file_path, exc, self.request.retries + 1, delay)
        raise self.retry(exc=exc, countdown=delay, max_retries=settings.max_retries) from None


def _uuid_name(name: str) -> str:
    """``name`` as uuid5 can hash it: a non-UTF-8 file name carries lone surrogates, which it cannot
    encode; those are written as backslash escapes of their bytes (valid names are unchanged)."""
    return name.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace")


# max_retries=None on the task itself: its retries are polls, and retry(max_retries=None) would
# mean "the task's default" (3), failing every batch that takes longer than a few seconds.
@app.task(bind=True, name="background_tasks.document_tasks.process_document_batch", max_retries=None)
def process_document_batch(
    self, file_paths: list[str], _children: list[str] | None = None, _started: float | None = None
) -> dict[str, Any]:
    """Process many documents in parallel across all worker processes.

    The first run enqueues one ``process_document_file`` per path; later runs
    (scheduled retries of this same task, carrying the child ids) look at the
    children without blocking a worker, until all are done. A worker that dies
    meanwhile loses nothing: the ids travel in the message.
    """
    if _children is None:
        _started = time.time()
        batch_id = self.request.id or uuid.uuid4().hex
        _children = []
        for index, path in enumerate(file_paths):
            child_id = str(uuid.uuid5(uuid.NAMESPACE_URL, _uuid_name(f"midas-batch:{batch_id}:{index}:{path}")))
            process_document_file.apply_async(args=[path], task_id=child_id)
            _children.append(child_id)
        log.info("batch %s: %d files enqueued", batch_id, len(_children))

    results = [app.AsyncResult(child_id) for child_id in _children]
    pending = sum(1 for r in results if r.state not in states.READY_STATES)
    if pending:
        delay = min(BATCH_POLL_MAX_S, BATCH_POLL_MIN_S + 0.01 * pending)
        raise self.retry(
            args=[file_paths],
            kwargs={"_children": _children, "_started": _started},
            countdown=delay,
        )
    return summarize_batch(file_paths, results, _started or time.time())


def summarize_batch(file_paths: list[str], results: list[Any], started: float) -> dict[str, Any]:
    """Totals and per-file results; a child that failed outright still gets an entry."""
    per_file = []
    for path, result in zip(file_paths, results, strict=True):
        if result.state == states.SUCCESS and isinstance(result.result, dict):
            per_file.append(result.result)
        else:
            error = result.result
            error_type = getattr(error, "error_type", None) or type(error).__name__
            per_file.append(
                {"status": "failed", "path": path, "error_type": error_type, "error": str(error) or result.state}
            )
    statuses = [r["status"] for r in per_file]
    return {
        "total": len(per_file),
        "succeeded": statuses.count("success"),
        "duplicates": statuses.count("duplicate"),
        "failed": statuses.count("failed"),
        "rejected": statuses.count("rejected"),
        "results": per_file,
        "duration_s": round(time.time() - started, 3),
    }


@app.task(bind=True, name="background_tasks.document_tasks.extract_document_metadata")
def extract_document_metadata(self, file_path: str) -> dict[str, Any]:
    """Quick metadata without full extraction where the format allows."""
    try:
        return {"status": "success", **pipeline.document_metadata(file_path, get_settings())}
    except PermanentError as exc:
        return {
            "status": pipeline.status_for(exc),
            "path": str(file_path),
            "error_type": exc.error_type,
            "error": exc.message,
        }
    except MidasError as exc:  # transient: metadata is cheap to ask again, report instead of retrying
        return {"status": "failed", "path": str(file_path), "error_type": exc.error_type, "error": exc.message}


@app.task(name="background_tasks.document_tasks.cleanup_old_processed_files")
def cleanup_old_processed_files(days: int | None = None) -> dict[str, Any]:
    """Remove working copies and processed artifacts older than the retention; never originals."""
    settings = get_settings()
    days = settings.retention_days if days is None else days
    removed_work = pipeline.remove_stale_work(settings, older_than_s=days * 86400)
    removed_inbox = pipeline.remove_processed_inbox(settings, document_store(), older_than_s=days * 86400)
    log.info("cleanup: %d working copies, %d inbox files removed", len(removed_work), len(removed_inbox))
    return {
        "days": days,
        "working_copies_removed": len(removed_work),
        "inbox_files_removed": len(removed_inbox),
        "removed": removed_work + removed_inbox,
    }
