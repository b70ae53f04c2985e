"""Task history from Celery's signals: each handler turns one signal into an event for the recorder.

Every MIDAS process wires these (``background_tasks.worker_signals.wire_signals``),
so the client that sends a task records it as *pending* and the worker records
*received*, *started*, *retry*, *success*, *failure* or *revoked* with the times
in between. Each handler catches everything: recording must never fail a task.

Each event carries a sequence number ``attempt * 10 + phase`` (the store keeps
the newest word on a task). The client also stamps every message with a
``midas_sent_at`` header, so the worker computes the wait time even when the
client could not write. Queued events are flushed when a pool process or the
interpreter exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import traceback as tb_module
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import signals

from background_tasks.ops.history_recorder import Recorder
from background_tasks.ops.history_summaries import (
    ERROR_MESSAGE_MAX,
    error_fields,
    summarize_args,
    summarize_result,
    truncate,
)
from background_tasks.storage.task_history import utc

log = logging.getLogger("background_tasks.ops.task_history")  # the name its lines had before the split

#: Message header with the client's send time (epoch seconds).
SENT_HEADER = "midas_sent_at"

# Phases within one attempt; ``seq = attempt * 10 + phase``.
PHASE = {"pending": 0, "received": 1, "started": 2, "retry": 4, "success": 5, "failure": 5, "revoked": 6}
#: Sequence of final events whose attempt number is unknown (time limit, lost worker, revoke): they win.
FINAL_SEQ = 10**6
STATES = ("pending", "received", "started", "retry", "success", "failure", "revoked")


def _default_url() -> str:
    from background_tasks.settings import get_settings

    return get_settings().database_url_resolved


#: the recorder of this process, which every handler writes to
recorder = Recorder(_default_url)


def _after_fork_in_child() -> None:
    # The parent's queue lock may be held by its writer thread at fork time; start clean.
    recorder._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


#: started time (epoch) per task id in this process, for run times
_started: dict[str, float] = {}
#: failure time per task id, so postrun (which follows) reports the same finish as the failure alert
_failed: dict[str, float] = {}


#: called on the writer thread after a failure row is written (``wire_signals`` adds the failure alert)
failure_hooks: list[Callable[[dict[str, Any]], None]] = []


def _alert_failure(info: dict[str, Any]) -> None:
    for hook in list(failure_hooks):
        hook(info)


def _attempt(request: Any) -> int:
    try:
        return int(getattr(request, "retries", 0) or 0)
    except (TypeError, ValueError):
        return 0


def _final_seq(request: Any, task_id: str | None, phase: int) -> int:
    """The sequence of a final event; FINAL_SEQ when the request of ``task_id`` is not at hand."""
    if request is None or getattr(request, "id", None) != task_id:
        return FINAL_SEQ
    return _attempt(request) * 10 + phase


def _header_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp()
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo else parsed.replace(tzinfo=UTC).timestamp()


def _queue_of(request: Any) -> str | None:
    info = getattr(request, "delivery_info", None) or {}
    return info.get("routing_key") or info.get("queue")


def _on_publish(
    sender: str | None = None,
    body: Any = None,
    routing_key: str | None = None,
    headers: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    try:
        now = time.time()
        if headers is None:
            return
        headers[SENT_HEADER] = now
        task_id = headers.get("id")
        if int(headers.get("retries") or 0) > 0:
            return  # a retry's own message: the retry event already tells the story
        args, kwargs = (body[0], body[1]) if isinstance(body, list | tuple) and len(body) >= 2 else ((), {})
        recorder.record(
            task_id,
            0,
            state="pending",
            name=headers.get("task") or sender,
            queue=routing_key,
            args_summary=summarize_args(args, kwargs),
            parent_id=headers.get("parent_id"),
            sent_at=utc(now),
        )
    except Exception as exc:
        log.warning("task history: publish hook failed: %s", exc)


def _on_received(request: Any = None, **_: Any) -> None:
    try:
        headers = getattr(request, "request_dict", None) or {}
        attempt = int(headers.get("retries") or 0)
        fields: dict[str, Any] = {
            "state": "received",
            "name": request.name,
            "queue": _queue_of(request),
            "worker": getattr(request, "hostname", None),
            "received_at": utc(time.time()),
            "retries": attempt,
        }
        seq = attempt * 10 + PHASE["received"]
        if attempt == 0:
            fields["sent_at"] = utc(_header_time(headers.get(SENT_HEADER)))
        else:
            # A retry's message is often received (held for its countdown) before the failed
            # attempt's pool process has recorded "retry": order it before that, and let the
            # row say "retry" until the new attempt starts.
            del fields["state"]
            seq = (attempt - 1) * 10 + PHASE["retry"] - 1
        recorder.record(request.id, seq, **fields)
    except Exception as exc:
        log.warning("task history: received hook failed: %s", exc)


def _on_prerun(task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    try:
        now = time.time()
        request = task.request
        if getattr(request, "is_eager", False) or getattr(request, "called_directly", False):
            return
        _started[task_id] = now
        sent = _header_time(getattr(request, SENT_HEADER, None))
        eta = _header_time(getattr(request, "eta", None))
        ready = max(t for t in (sent, eta) if t is not None) if (sent or eta) else None
        attempt = _attempt(request)
        fields: dict[str, Any] = {
            "state": "started",
            "name": task.name,
            "queue": _queue_of(request),
            "worker": getattr(request, "hostname", None),
            "started_at": utc(now),
            "retries": attempt,
            "wait_s": round(max(0.0, now - ready), 6) if ready else None,
            # a new attempt: clear what the previous one left
            "finished_at": None,
            "runtime_s": None,
            "result_summary": None,
            "error_type": None,
            "error_message": None,
            "traceback": None,
        }
        if attempt == 0:
            fields["args_summary"] = summarize_args(args, kwargs)
            fields["sent_at"] = utc(sent)
            fields["parent_id"] = getattr(request, "parent_id", None)
        recorder.record(task_id, attempt * 10 + PHASE["started"], **fields)
    except Exception as exc:
        log.warning("task history: prerun hook failed: %s", exc)


def _on_retry(sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **_: Any) -> None:
    try:
        # ``reason`` is Celery's Retry; the error that caused it is its ``exc``
        cause = getattr(reason, "exc", None)
        exc = cause if isinstance(cause, BaseException) else reason if isinstance(reason, BaseException) else None
        fields = error_fields(exc, getattr(einfo, "traceback", None))
        if exc is None and reason is not None:
            fields = {"error_type": "Retry", "error_message": truncate(str(reason), ERROR_MESSAGE_MAX)}
        attempt = _attempt(request)
        recorder.record(
            getattr(request, "id", None),
            attempt * 10 + PHASE["retry"],
            state="retry",
            retries=attempt + 1,
            **fields,
        )
    except Exception as exc:
        log.warning("task history: retry hook failed: %s", exc)


def _on_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    """Fires in the pool process for errors, in the main process for time limits and lost workers."""
    try:
        now = time.time()
        request = getattr(sender, "request", None)
        if getattr(request, "id", None) != task_id:
            request = None  # main process (time limit, lost worker): the request context is not at hand
        attempt = _attempt(request)
        started = _started.get(task_id)
        if request is not None:
            _failed[task_id] = now
        tb_text = getattr(einfo, "traceback", None)
        if tb_text is None and exception is not None and exception.__traceback__ is not None:
            tb_text = "".join(tb_module.format_exception(exception))
        fields = error_fields(exception, tb_text)
        recorder.record(
            task_id,
            _final_seq(request, task_id, PHASE["failure"]),
            state="failure",
            finished_at=utc(now),
            runtime_s=round(now - started, 6) if started else None,
            **fields,
        )
        # task_failure fires only when the task fails for good (a retry is not a failure)
        info = {
            "task_id": task_id,
            "name": getattr(sender, "name", None),
            "worker": getattr(request, "hostname", None),
            "retries": attempt,
            "finished_at": now,
            **fields,
        }
        recorder.call_soon(lambda: _alert_failure(info))
    except Exception as exc:
        log.warning("task history: failure hook failed: %s", exc)


def _on_postrun(
    task_id: str | None = None, task: Any = None, retval: Any = None, state: str | None = None, **_: Any
) -> None:
    try:
        now = _failed.pop(task_id, None) or time.time()
        started = _started.pop(task_id, None)
        request = task.request
        if getattr(request, "is_eager", False) or getattr(request, "called_directly", False):
            return
        attempt = _attempt(request)
        fields: dict[str, Any] = {"finished_at": utc(now), "runtime_s": round(now - started, 6) if started else None}
        if state is None:
            # Interrupted (terminated by a revoke, worker shutting down): no verdict. The revoke
            # or a redelivery says what happened; keep the sequence of "started" so both win.
            recorder.record(task_id, attempt * 10 + PHASE["started"], **fields)
            return
        name = state.lower()
        fields["state"] = name
        if name == "success":
            fields["result_summary"] = summarize_result(retval)
        recorder.record(task_id, attempt * 10 + PHASE.get(name, 5), **fields)
    except Exception as exc:
        log.warning("task history: postrun hook failed: %s", exc)


def _on_revoked(
    request: Any = None, terminated: bool = False, signum: Any = None, expired: bool = False, **_: Any
) -> None:
    try:
        reason = "expired" if expired else ("terminated" if terminated else "revoked")
        if signum and terminated:
            reason += f" (signal {signum})"
        task_id = getattr(request, "id", None)
        recorder.record(
            task_id,
            _final_seq(request, task_id, PHASE["revoked"]),
            state="revoked",
            name=getattr(request, "task", None) or getattr(request, "name", None),
            finished_at=utc(time.time()),
            error_type="Revoked",
            error_message=reason,
        )
    except Exception as exc:
        log.warning("task history: revoked hook failed: %s", exc)


def _flush_at_exit(**_: Any) -> None:
    try:
        recorder.flush(timeout=5.0)
    except Exception as exc:
        log.warning("task history: flush at exit failed: %s", exc)


def _prepare(**_: Any) -> None:
    recorder.prepare()


#: (Celery signal, handler) pairs, connected by ``background_tasks.worker_signals.wire_signals``
SIGNAL_HANDLERS: tuple[tuple[signals.Signal, Callable[..., None]], ...] = (
    (signals.before_task_publish, _on_publish),
    (signals.task_received, _on_received),
    (signals.task_prerun, _on_prerun),
    (signals.task_retry, _on_retry),
    (signals.task_failure, _on_failure),
    (signals.task_postrun, _on_postrun),
    (signals.task_revoked, _on_revoked),
    (signals.worker_init, _prepare),
    (signals.worker_process_init, _prepare),
    (signals.worker_process_shutdown, _flush_at_exit),
    (signals.worker_shutdown, _flush_at_exit),
)
atexit.register(_flush_at_exit)
