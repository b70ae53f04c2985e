"""Task history: one ``task_history`` row per task, filled from Celery's signals.

The parts live beside this module: ``history_signals`` (the signal handlers and
the process's ``recorder``), ``history_recorder`` (the queue and its writer
thread), ``history_summaries`` (arguments, results and errors in short), and
``storage.task_history`` (the upsert that keeps a row's newest word). This
module keeps the names callers have always imported from here.
"""

from __future__ import annotations

from background_tasks.ops.history_recorder import BATCH_MAX, QUEUE_MAX, Recorder
from background_tasks.ops.history_signals import (
    FINAL_SEQ,
    PHASE,
    SENT_HEADER,
    SIGNAL_HANDLERS,
    STATES,
    _on_failure,
    _on_postrun,
    _on_prerun,
    _on_publish,
    _on_received,
    _on_retry,
    _on_revoked,
    failure_hooks,
    recorder,
)
from background_tasks.ops.history_summaries import (
    ARGS_SUMMARY_MAX,
    ERROR_MESSAGE_MAX,
    RESULT_SUMMARY_MAX,
    TRACEBACK_MAX,
    summarize_args,
    summarize_result,
)
from background_tasks.storage.models import TaskRecord
from background_tasks.storage.task_history import TaskEvent, epoch, utc

_Event = TaskEvent  # the name tests and the bench have used

__all__ = [
    "ARGS_SUMMARY_MAX",
    "BATCH_MAX",
    "ERROR_MESSAGE_MAX",
    "FINAL_SEQ",
    "PHASE",
    "QUEUE_MAX",
    "RESULT_SUMMARY_MAX",
    "SENT_HEADER",
    "SIGNAL_HANDLERS",
    "STATES",
    "TRACEBACK_MAX",
    "Recorder",
    "TaskEvent",
    "TaskRecord",
    "_Event",
    "_on_failure",
    "_on_postrun",
    "_on_prerun",
    "_on_publish",
    "_on_received",
    "_on_retry",
    "_on_revoked",
    "epoch",
    "failure_hooks",
    "recorder",
    "summarize_args",
    "summarize_result",
    "utc",
]
