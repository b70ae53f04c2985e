"""Celery's database result backend, made safe: results are JSON only, and write failures are not lost.

``celery_config`` maps the ``db+`` URL scheme to ``JsonDatabaseBackend``, so
``db+sqlite:///…`` and ``db+postgresql+psycopg://…`` keep working unchanged.

Never unpickled: Celery's ``DatabaseBackend`` falls back to ``pickle.loads``
for a ``result`` that does not decode with the configured serializer and
starts with ``\\x80`` (rows of Celery versions before celery/celery#3025).
Anyone who can write a row into ``celery_taskmeta`` could then run code in
every process that reads it: ``AsyncResult.get``, the dashboard, the batch
task. Here every stored value (``result``, and ``args``, ``kwargs``,
``children`` of extended results) is decoded as JSON or refused with
``UnsafeResult``; nothing is ever unpickled. Failures are rebuilt by
Celery only from exception classes already imported (``sys.modules``).

Write failures: STARTED and RETRY are progress reports; when they cannot be
written the task goes on, and its outcome is written when it ends. The outcome
itself is written by the task base class inside the task
(``store_outcome``), so a results database that cannot be written makes the
task retry (``StorageUnavailable``) instead of acknowledging a message whose
result is lost; the write Celery's tracer makes afterwards is then skipped.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import states
from celery.backends.database import DatabaseBackend
from celery.exceptions import BackendStoreError, ImproperlyConfigured
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.utils.encoding import ensure_bytes
from sqlalchemy.exc import SQLAlchemyError

from background_tasks.errors import StorageUnavailable, TransientError, UnsafeResult
from background_tasks.storage.db import is_storage_unavailable, is_transient
from background_tasks.storage.sqlite_guard import StorageNotWritable

log = logging.getLogger(__name__)

#: the path ``celery_config`` gives Celery for the ``db`` backend alias
BACKEND_PATH = "background_tasks.storage.result_backend:JsonDatabaseBackend"
#: states reported on the way; the outcome written later is what counts
PROGRESS_STATES = frozenset({states.STARTED, states.RETRY})
_PICKLE_MARK = b"\x80"


def _root_cause(exc: BaseException) -> BaseException:
    while (exc.__cause__ or exc.__context__) is not None and isinstance(exc, BackendStoreError):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


class JsonDatabaseBackend(DatabaseBackend):
    """``DatabaseBackend`` that stores and reads JSON only and never loses an outcome silently."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.serializer != "json":
            raise ImproperlyConfigured(f"{type(self).__name__} stores JSON only, not {self.serializer!r} results")
        #: ids whose outcome the task base class stored already in this process
        self._stored_early: set[str] = set()

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        """Celery retries database errors at once, a few times, each with a logged traceback. Files the
        guard found read-only stay so for longer than that: fail fast; the task retries with backoff."""
        if isinstance(getattr(exc, "orig", None), StorageNotWritable):
            return False
        return super().exception_safe_to_retry(exc)

    # -- reading: JSON or nothing -------------------------------------------------

    def _decode_stored_result(self, payload: Any) -> Any:
        """Decode a stored ``result`` as JSON; anything else (a pickle above all) is refused."""
        if payload is None:
            return None
        payload = ensure_bytes(payload)
        if payload[:1] == _PICKLE_MARK:
            raise UnsafeResult("the stored result is a pickle; MIDAS reads JSON results only and never unpickles")
        try:
            return self.decode(payload)
        except (DecodeError, ContentDisallowed, ValueError) as exc:
            raise UnsafeResult(f"the stored result is not JSON ({exc}); it is refused") from None

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        try:
            return super()._get_task_meta_for(task_id)
        except UnsafeResult as exc:
            raise UnsafeResult(f"task {task_id}: {exc.message}") from None
        except (DecodeError, ContentDisallowed) as exc:  # args, kwargs or children that are not JSON
            raise UnsafeResult(f"task {task_id}: a stored value is not JSON ({exc}); it is refused") from None

    def _restore_group(self, group_id: str) -> Any:
        try:
            return super()._restore_group(group_id)
        except UnsafeResult as exc:
            raise UnsafeResult(f"group {group_id}: {exc.message}") from None

    # -- writing --------------------------------------------------------------------

    def store_outcome(
        self, task_id: str, result: Any, state: str, traceback: str | None = None, request: Any = None
    ) -> None:
        """Store a task's outcome from inside the task, so that failing to store it can be retried.

        Raises ``StorageUnavailable`` (the database cannot be written) or
        ``TransientError`` (locked, busy); other errors pass through.
        """
        try:
            super().store_result(task_id, result, state, traceback=traceback, request=request)
        except (BackendStoreError, SQLAlchemyError) as exc:
            cause = _root_cause(exc)
            detail = str(getattr(cause, "orig", None) or cause).strip().splitlines()
            message = f"the results database cannot be written now: {detail[0] if detail else type(cause).__name__}"
            if is_storage_unavailable(cause):
                raise StorageUnavailable(message) from exc
            if is_transient(cause):
                raise TransientError(message) from exc
            raise
        self._stored_early.add(task_id)

    def store_result(
        self, task_id: str, result: Any, state: str, traceback: str | None = None, request: Any = None, **kwargs: Any
    ) -> Any:
        """Celery's write, minus what ``store_outcome`` already wrote; a lost progress report is only logged."""
        if task_id in self._stored_early:
            self._stored_early.discard(task_id)
            if state in states.READY_STATES:
                return result  # the tracer's copy of the outcome the task stored itself
        try:
            return super().store_result(task_id, result, state, traceback=traceback, request=request, **kwargs)
        except (BackendStoreError, SQLAlchemyError) as exc:
            if state not in PROGRESS_STATES:
                raise
            log.info("could not record %s of task %s (%s); its outcome is stored when it ends", state, task_id, exc)
            return result
