"""Every Celery signal handler MIDAS uses, connected in one place.

``create_app`` calls ``wire_signals``; nothing is connected as a side effect of importing a module,
so what runs around each task can be read here. Celery's signals are process-wide, so wiring is
idempotent (each handler has a ``dispatch_uid``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from background_tasks import keys
from background_tasks.logging_setup import install_task_context, quiet_routine_tasks
from background_tasks.ops import alerts, ledger, task_history
from background_tasks.processing import worker_process
from background_tasks.storage import db


def _task_id_on_every_line(logger: logging.Logger, **_: Any) -> None:
    """Worker and Beat logs in the MIDAS format: the task id on each line, logged values escaped
    (a file name with a newline cannot forge a record). Celery configures the root, task and
    multiprocessing loggers; these signals come after it did."""
    install_task_context(logger)
    if logger is logging.getLogger():
        from celery.utils.log import get_multiprocessing_logger

        mp_logger = get_multiprocessing_logger()
        if mp_logger is not None:
            install_task_context(mp_logger)


def _guard_forks(sender: Any = None, **_: Any) -> None:
    """Before a prefork pool forks its children from this process, make SQLite safe to fork
    (``storage.fork_guard``): without it a child forked while a thread here writes finds the
    database locked for good."""
    from celery import concurrency
    from celery.concurrency.prefork import TaskPool

    try:
        pool_cls = concurrency.get_implementation(getattr(sender, "pool_cls", None) or "prefork")
    except Exception:  # an unknown pool name is Celery's to report
        return
    if isinstance(pool_cls, type) and issubclass(pool_cls, TaskPool):
        db.guard_forks()


def _preload(sender: Any = None, **_: Any) -> None:
    try:
        consumed = set(sender.app.amqp.queues.consume_from)
    except AttributeError:
        consumed = {"analysis"}
    worker_process.preload_worker(consumed)


def _after_task(sender: Any = None, **_: Any) -> None:
    worker_process.return_freed_memory(getattr(sender, "name", "") or "")


#: Beat's every-minute checks: their "received" and "succeeded" lines (with a ~1 KB result) go to DEBUG
ROUTINE_TASKS = (keys.CHECK_TASK_QUEUE, keys.SYSTEM_HEALTH_CHECK, keys.REAP_LEDGER)


def wire_signals(app: Celery) -> None:
    """Connect the log format, worker preloading, memory return, task history, the ledger and failure alerts;
    quiet the routine checks' task lines."""
    del app  # Celery's signals are global; the parameter says which app this is done for
    handlers: list[tuple[signals.Signal, Any]] = [
        (signals.after_setup_logger, _task_id_on_every_line),
        (signals.after_setup_task_logger, _task_id_on_every_line),
        (signals.worker_init, _guard_forks),  # first: before anything here opens the database
        (signals.worker_init, _preload),
        (signals.task_postrun, _after_task),
        *task_history.SIGNAL_HANDLERS,
        *ledger.SIGNAL_HANDLERS,
    ]
    for signal, handler in handlers:
        signal.connect(handler, weak=False, dispatch_uid=f"midas:{handler.__module__}.{handler.__name__}")
    quiet_routine_tasks(ROUTINE_TASKS)
    if alerts.on_task_failure not in task_history.failure_hooks:
        task_history.failure_hooks.append(alerts.on_task_failure)
