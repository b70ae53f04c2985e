"""The intake ledger around each task: recorded as it is published, leased while it runs, closed after.

Publishing goes through the app's AMQP (``LedgeredAMQP``), so every ``.delay()`` and
``apply_async`` of a document or analysis task is recorded, whoever sends it (users' code, the
watcher, batches, the dashboard, the reaper itself). The worker process that runs a task holds
a lease on its entry and a thread renews it; when the process or its host dies the lease runs
out and the reaper (``ops.reaper``) sends the task again. A ledger write that fails is logged
and never fails a task or a publish: the worker's ``start`` enters a task that was published
without an entry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import signals
from celery.app.amqp import AMQP
from celery.utils.saferepr import saferepr
from kombu.utils.objects import cached_property

from background_tasks import keys
from background_tasks.processing.intake import anchor_path
from background_tasks.statuses import LedgerState
from background_tasks.storage import ledger as ledger_store
from background_tasks.storage.ledger import Submission

log = logging.getLogger(__name__)

#: task modules whose tasks carry documents: they are kept in the ledger (monitoring tasks are not)
LEDGER_TASK_PREFIXES = (f"{keys.DOCUMENT_TASKS}.", f"{keys.ANALYSIS_TASKS}.")


def is_ledgered(task_name: str | None) -> bool:
    return bool(task_name) and task_name.startswith(LEDGER_TASK_PREFIXES)


def _now() -> datetime:
    return datetime.now(UTC)


def _split_body(body: Any) -> tuple[list[Any], dict[str, Any]]:
    if isinstance(body, list | tuple) and len(body) >= 2:
        args, kwargs = body[0], body[1]
        return list(args or ()), dict(kwargs or {})
    return [], {}


# -- leases ------------------------------------------------------------------------------


class Leases:
    """The tasks this process runs, and the thread that writes their ledger events.

    Starts and finishes are queued and written by one thread in one transaction every
    ``FLUSH_DELAY`` s, with the lease renewals, so a task pays no ledger transaction of its
    own (two per task cost a quarter of the throughput of tiny documents). Nothing is lost by
    the delay: a task whose start was not written yet is held by its live worker (the reaper
    asks the workers first), and one whose finish was lost with its process runs again when
    its lease runs out, finding its stored result.
    """

    #: seconds the writer waits to gather events before it writes them
    FLUSH_DELAY = 0.2
    #: events kept while the database cannot be written (older ones are dropped and logged)
    MAX_PENDING = 20_000

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, str]] = {}  # task id -> (database url, worker)
        self._started: dict[str, tuple[str, ledger_store.Started]] = {}  # task id -> (url, event)
        self._finished: list[tuple[str, ledger_store.Finished]] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease_s = 30.0
        self._last_renewal = 0.0
        self.renewals = 0
        self.flushes = 0

    def begin(self, url: str, event: ledger_store.Started) -> None:
        task_id = event.submission.task_id
        with self._lock:
            self._running[task_id] = (url, event.worker)
            self._started[task_id] = (url, event)
            self._lease_s = event.lease_s
            self._ensure_thread()
        self._wake.set()

    def end(self, url: str, event: ledger_store.Finished) -> None:
        with self._lock:
            self._running.pop(event.task_id, None)
            self._finished.append((url, event))
            self._ensure_thread()
        self._wake.set()

    def remove(self, task_id: str) -> None:
        """The task left without an outcome (a retry re-opened its entry as queued): forget it."""
        with self._lock:
            self._running.pop(task_id, None)
            self._started.pop(task_id, None)

    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._write_forever, name="midas-ledger-writer", daemon=True)
            self._thread.start()

    def _write_forever(self) -> None:
        while True:
            interval = max(1.0, self._lease_s / 3)
            if self._wake.wait(interval):
                time.sleep(self.FLUSH_DELAY)
                self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # never let the writer die
                log.warning("ledger: writer error: %s", exc)

    def flush(self) -> None:
        """Write the queued starts and finishes now, and renew the leases when they are due."""
        with self._lock:
            started, self._started = self._started, {}
            finished, self._finished = self._finished, []
            renew_due = time.monotonic() - self._last_renewal >= max(1.0, self._lease_s / 3)
            running = dict(self._running) if renew_due else {}
        by_url: dict[str, tuple[list[ledger_store.Started], list[ledger_store.Finished]]] = {}
        for url, start_event in started.values():
            by_url.setdefault(url, ([], []))[0].append(start_event)
        for url, finish_event in finished:
            by_url.setdefault(url, ([], []))[1].append(finish_event)
        for url, (starts, finishes) in by_url.items():
            try:
                ledger_store.apply(url, starts, finishes)
                self.flushes += 1
            except Exception as exc:
                log.warning("ledger: could not write %d starts, %d finishes: %s", len(starts), len(finishes), exc)
                self._put_back(url, starts, finishes)
        if renew_due:
            self._renew(running)

    def _put_back(self, url: str, starts: list[ledger_store.Started], finishes: list[ledger_store.Finished]) -> None:
        with self._lock:
            for event in starts:
                if event.submission.task_id in self._running:  # not finished meanwhile
                    self._started.setdefault(event.submission.task_id, (url, event))
            self._finished[:0] = [(url, e) for e in finishes]
            if len(self._finished) > self.MAX_PENDING:
                dropped = len(self._finished) - self.MAX_PENDING
                del self._finished[:dropped]
                log.warning("ledger: dropped %d finish events (their tasks run again when their leases end)", dropped)

    def _renew(self, running: dict[str, tuple[str, str]]) -> None:
        self._last_renewal = time.monotonic()
        by_target: dict[tuple[str, str], list[str]] = {}
        for task_id, target in running.items():
            by_target.setdefault(target, []).append(task_id)
        for (url, worker), task_ids in by_target.items():
            try:
                ledger_store.renew(url, worker, self._lease_s, _now(), task_ids)
                self.renewals += 1
            except Exception as exc:
                log.warning("ledger: could not renew the leases of %d tasks: %s", len(task_ids), exc)


leases = Leases()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=leases._reset)


# -- signal handlers ---------------------------------------------------------------------


class LedgeredAMQP(AMQP):
    """Celery's AMQP with the ledger written as each message is published (``Celery(amqp=...)``).

    Publishing is where a submission is known for sure, by whichever app sends it, so the entry
    goes to that app's database (``midas_database_url``), not whatever this process's
    environment names: a publisher bound to another MIDAS (a test's private stack, a second
    site) records in the right ledger.
    """

    @cached_property
    def send_task_message(self) -> Callable[..., Any]:  # type: ignore[override]
        send = self._create_task_sender()
        conf = self.app.conf

        def send_and_record(producer: Any, name: str, message: Any, **options: Any) -> Any:
            if name in PATH_ARGUMENTS:
                message = anchor_paths(name, message, self.argsrepr_maxsize)
            if conf.get("midas_ledger") and is_ledgered(name):
                _record_publish(conf, name, message, options)
            return send(producer, name, message, **options)

        return send_and_record


#: tasks that take the sender's paths: argument name, and whether it is a list of paths
PATH_ARGUMENTS = {
    "background_tasks.document_tasks.process_document_file": ("file_path", False),
    "background_tasks.document_tasks.process_document_batch": ("file_paths", True),
}


def anchor_paths(name: str, message: Any, repr_size: int = 1024) -> Any:
    """The message with its relative paths made absolute in the sender's directory (``intake.anchor_path``).

    Resolved here, as it is published, because the worker resolving them would use its own directory.
    """
    keyword, is_list = PATH_ARGUMENTS[name]
    body = message.body
    if not (isinstance(body, list | tuple) and len(body) >= 2):
        return message
    args, kwargs = list(body[0] or ()), dict(body[1] or {})
    if args:
        given = args[0]
    elif keyword in kwargs:
        given = kwargs[keyword]
    else:
        return message
    if is_list:
        paths = [anchor_path(v) for v in given] if isinstance(given, list | tuple) else given
    else:
        paths = anchor_path(given)
    if paths == given:
        return message
    if args:
        args[0] = paths
    else:
        kwargs[keyword] = paths
    headers = message.headers
    if isinstance(headers, dict) and "argsrepr" in headers:  # what Flower and the task events show
        headers["argsrepr"] = saferepr(args, repr_size)
        headers["kwargsrepr"] = saferepr(kwargs, repr_size)
    return message._replace(body=(args, kwargs, *body[2:]))


def _queue_name(options: dict[str, Any], conf: Any) -> str | None:
    queue = options.get("queue")
    if isinstance(queue, str):
        return queue
    if queue is not None and getattr(queue, "name", None):
        return queue.name
    return options.get("routing_key") or conf.get("task_default_queue")


def _record_publish(conf: Any, name: str, message: Any, options: dict[str, Any]) -> None:
    try:
        headers = message.headers or {}
        task_id = headers.get("id")
        if not task_id:
            return
        args, kwargs = _split_body(message.body)
        ledger_store.record_sent(
            conf.midas_database_url,
            [Submission(task_id, name, args, kwargs, _queue_name(options, conf))],
            _now(),
            conf.midas_ledger_grace,
        )
    except Exception as exc:
        log.warning("ledger: could not record the publish of %s[%s]: %s", name, getattr(message, "headers", {}), exc)


def _on_prerun(task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    try:
        request = getattr(task, "request", None)
        if not task_id or not is_ledgered(getattr(task, "name", None)) or request is None:
            return
        if getattr(request, "is_eager", False) or getattr(request, "called_directly", False):
            return
        conf = task.app.conf
        if not conf.get("midas_ledger"):
            return
        info = getattr(request, "delivery_info", None) or {}
        queue = info.get("routing_key") or info.get("queue")
        worker = getattr(request, "hostname", None) or f"pid-{os.getpid()}"
        url = conf.midas_database_url
        submission = Submission(task_id, task.name, list(args or ()), dict(kwargs or {}), queue)
        leases.begin(url, ledger_store.Started(submission, worker, float(conf.midas_ledger_lease), _now()))
    except Exception as exc:
        log.warning("ledger: could not lease %s: %s", task_id, exc)


def outcome_hook(task: Any) -> Callable[[Any, int, str], object] | None:
    """For the store's ``in_transaction``: the entry learns its document in the recording transaction."""
    request = getattr(task, "request", None)
    task_id = getattr(request, "id", None)
    if not task_id or getattr(request, "is_eager", False) or getattr(request, "called_directly", False):
        return None
    if not task.app.conf.get("midas_ledger") or not is_ledgered(getattr(task, "name", None)):
        return None

    def record(session: Any, document_id: int, status: str) -> None:
        ledger_store.record_outcome_in(session, task_id, document_id, status)

    return record


def _close(conf: Any, task_id: str | None, state: LedgerState, error: str | None) -> None:
    if not task_id:
        return
    if conf.get("midas_ledger"):
        leases.end(conf.midas_database_url, ledger_store.Finished(task_id, state, _now(), error))
    else:
        leases.remove(task_id)


def _on_process_shutdown(**_: Any) -> None:
    """A pool process that exits (replaced, or the worker stops) writes what it still holds."""
    try:
        leases.flush()
    except Exception as exc:
        log.warning("ledger: could not write the last events: %s", exc)


def _on_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, retval: Any = None, **_: Any):
    try:
        if not is_ledgered(getattr(task, "name", None)):
            return
        request = getattr(task, "request", None)
        if getattr(request, "is_eager", False) or getattr(request, "called_directly", False):
            return
        if state == "SUCCESS":
            _close(task.app.conf, task_id, LedgerState.DONE, None)
        elif state == "FAILURE":
            _close(task.app.conf, task_id, LedgerState.FAILED, f"{type(retval).__name__}: {retval}"[:4000])
        else:
            # RETRY: its message re-opened the entry as queued; interrupted (no state): the lease runs out
            leases.remove(task_id or "")
    except Exception as exc:
        log.warning("ledger: could not close %s: %s", task_id, exc)


def _on_revoked(
    sender: Any = None, request: Any = None, terminated: bool = False, expired: bool = False, **_: Any
) -> None:
    try:
        name = getattr(request, "task", None) or getattr(request, "name", None)
        app = getattr(sender, "app", None)
        if is_ledgered(name) and app is not None:
            reason = "expired" if expired else ("terminated" if terminated else "revoked")
            _close(app.conf, getattr(request, "id", None), LedgerState.FAILED, f"task {reason}")
    except Exception as exc:
        log.warning("ledger: could not close a revoked task: %s", exc)


#: (Celery signal, handler) pairs, connected by ``background_tasks.worker_signals.wire_signals``
SIGNAL_HANDLERS: tuple[tuple[signals.Signal, Any], ...] = (
    (signals.task_prerun, _on_prerun),
    (signals.task_postrun, _on_postrun),
    (signals.task_revoked, _on_revoked),
    (signals.worker_process_shutdown, _on_process_shutdown),
)
