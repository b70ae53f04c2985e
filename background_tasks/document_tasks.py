"""Document tasks (queue ``documents``): thin wrappers over ``background_tasks.processing.pipeline``.

from background_tasks.document_tasks import process_document_file
process_document_file.delay("path/to/document.pdf").get(timeout=60)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from functools import lru_cache
from typing import Any

from celery import states

from background_tasks import analysis_tasks, keys
from background_tasks.errors import MidasError, PermanentError
from background_tasks.ops import ledger
from background_tasks.processing import batches, pipeline
from background_tasks.settings import get_settings
from background_tasks.storage.process_store import process_store
from background_tasks.task_base import MidasTask
from celery_config import app

log = logging.getLogger(__name__)

BATCH_POLL_MIN_S = 0.5
BATCH_POLL_MAX_S = 5.0


#: one store (engine, pool) per worker process, shared with the analysis tasks
document_store = process_store


class DocumentFileTask(MidasTask):
    """``process_document_file``: after the last retry the document is recorded as failed, not lost."""

    def give_up(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        file_path = args[0] if args else kwargs["file_path"]
        return pipeline.record_gave_up(
            document_store(), file_path, exc, self.request.id, in_transaction=ledger.outcome_hook(self)
        ).as_dict()


@app.task(bind=True, base=DocumentFileTask, name=keys.PROCESS_DOCUMENT_FILE)
def process_document_file(
    self, file_path: str, origin: dict[str, str] | None = None, reprocess: str | None = None
) -> dict[str, Any]:
    """Extract, chunk and store one document; returns the result dict (see README).

    ``origin``: where a source (mail, S3) took the file from, kept as ``metadata["origin"]``.
    ``reprocess``: the SHA-256 of known content to process again, replacing its document's
    result (``processing.manage.reprocess_document`` sends it).

    A ``TransientError`` (file still being written, database locked, storage
    read-only) is retried by the base class with backoff (``task_base``).
    """
    result = pipeline.process_file(
        file_path,
        get_settings(),
        document_store(),
        task_id=self.request.id,
        in_transaction=ledger.outcome_hook(self),
        origin=origin,
        reprocess=reprocess,
    ).as_dict()
    analysis_tasks.schedule_follow_ups(result)  # tables get profiled, long scans OCR'd, on the analysis queue
    # semantic search: a small document here, a larger one on the analysis queue; a run again is a new recording,
    # with an embedding task of its own
    again = f"{result.get('sha256')}:{result.get('chunks_created')}:again:{self.request.id}" if reprocess else None
    analysis_tasks.embed_or_schedule(result, again)
    return result


# max_retries=None on the task itself: its retries are its later runs, and retry(max_retries=None) would
# mean "the task's default" (3), failing every batch that takes longer than a few seconds.
@app.task(bind=True, name=keys.PROCESS_DOCUMENT_BATCH, max_retries=None)
def process_document_batch(
    self,
    file_paths: list[str],
    _state: dict[str, Any] | None = None,
    _children: list[str] | None = None,
    _started: float | None = None,
) -> dict[str, Any]:
    """Process many documents in parallel across all worker processes, any number of them.

    A run sends at most ``batches.QUEUE_CHUNK`` children and counts the ones
    that finished, within a third of the soft time limit, then retries itself
    with its state (``_state``) to go on: a batch of any size never runs out
    of time, and a worker that dies meanwhile loses nothing. ``_children`` and
    ``_started`` come from messages of MIDAS versions that sent everything at
    once. Returns counts for every file and per-file results for at most
    ``batches.RESULTS_CAP`` files; ``batch_file_results`` lists them all.
    """
    settings = get_settings()
    run_started = time.monotonic()
    if not isinstance(file_paths, list | tuple):
        # A string would otherwise be a batch of its characters.
        error = f"process_document_batch takes a list of paths, not {type(file_paths).__name__} ({file_paths!r:.80})"
        log.warning("%s", error)
        return {
            "total": 0, "succeeded": 0, "duplicates": 0, "failed": 0, "rejected": 0, "results": [],
            "results_complete": True, "failures": [], "duration_s": 0.0,
            "status": "rejected", "error_type": "invalid_argument", "error": error,
        }  # fmt: skip

    def keep_going() -> bool:
        return time.monotonic() - run_started < settings.task_soft_time_limit / 3

    total = len(file_paths)
    if _state is not None:
        state = batches.BatchState.from_message(_state)
    else:
        batch_id = self.request.id or uuid.uuid4().hex
        state = batches.BatchState(batch_id=batch_id, started=_started or time.time())
    if _children is not None:
        state = replace(state, queued=len(_children))

    def child_id(index: int) -> str:
        return _children[index] if _children is not None else keys.batch_child_task_id(state.batch_id, index)

    sent_before = state.queued
    if state.queued < total:
        state = batches.send_next(
            state,
            file_paths,
            _broker(),
            lambda path, task_id: process_document_file.apply_async(args=[path], task_id=task_id),
            lock_timeout=settings.task_time_limit + 5,
            mark_ttl=settings.result_expires_hours * 3600,
            keep_going=keep_going,
        )
    state = batches.check_finished(
        state, lambda i: _child_result(child_id(i), file_paths[i], status_only=True), keep_going=keep_going
    )
    if state.checked < total:
        sending = sent_before < state.queued < total
        # Still sending: go on at once, behind the files just sent. Otherwise poll without blocking a worker.
        delay = 0 if sending else min(BATCH_POLL_MAX_S, BATCH_POLL_MIN_S + 0.01 * (state.queued - state.checked))
        kwargs: dict[str, Any] = {"_state": state.as_message()}
        if _children is not None:
            kwargs["_children"] = _children
        raise self.retry(args=[file_paths], kwargs=kwargs, countdown=delay)
    return batches.summary(state, total, lambda i: _child_result(child_id(i), file_paths[i]), time.time())


@lru_cache(maxsize=1)
def _broker() -> Any:
    """The broker's Redis, where batches keep how many of their files were sent (one client per process)."""
    import redis

    return redis.Redis.from_url(app.conf.broker_url, socket_timeout=10)


def _child_result(task_id: str, path: str, status_only: bool = False) -> Any:
    """A finished child's per-file result (or just its status); None while it runs."""
    result = app.AsyncResult(task_id)
    if result.state not in states.READY_STATES:
        return None
    entry = batches.per_file_result(path, result.state, result.result)
    return entry["status"] if status_only else entry


def batch_file_results(batch_id: str, total: int, celery_app: Any = None) -> Iterator[dict[str, Any]]:
    """Every file's result of a batch, in order, while results are kept (``MIDAS_RESULT_EXPIRES_HOURS``).

    ``batch_id`` is the batch task's id (also in its summary); a file not finished yet shows ``status: pending``.
    """
    for index in range(total):
        result = (celery_app or app).AsyncResult(keys.batch_child_task_id(batch_id, index))
        if result.state not in states.READY_STATES:
            yield {"status": "pending", "index": index, "task_id": result.id}
            continue
        path = str((result.args or [""])[0])  # the task's arguments are kept with its result (result_extended)
        yield batches.per_file_result(path, result.state, result.result)


@app.task(bind=True, name=keys.EXTRACT_DOCUMENT_METADATA)
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


@app.task(name=keys.CLEANUP_OLD_PROCESSED_FILES)
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
