"""Task history: one ``task_history`` row per task, filled from Celery's signals.

Every MIDAS process imports this module (``celery_config`` does), so the
client that sends a task records it as *pending* and the worker records
*received*, *started*, *retry*, *success*, *failure* or *revoked* with the
times in between.

Recording must never fail or slow a task. The signal handlers only build a
small dict and put it on an in-memory queue (a few microseconds); a daemon
thread per process writes the queue to the database in batches, waits out a
busy SQLite file, and logs a warning instead of raising when the database is
gone. Queued events are flushed when a pool process or the interpreter exits.

Events for one task can arrive out of order (client and worker are different
processes, each with its own writer thread). Each event carries a sequence
number ``attempt * 10 + phase``; a row's state only moves forward, while
columns an earlier event knows better (send time, arguments) are filled in
whenever they are still empty. The client also stamps every message with a
``midas_sent_at`` header, so the worker computes the wait time even when the
client could not write.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import traceback as tb_module
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import signals
from sqlalchemy import case, func

from background_tasks.storage.db import get_engine, is_transient
from background_tasks.storage.models import TaskRecord
from background_tasks.storage.schema import create_schema

log = logging.getLogger(__name__)

#: Message header with the client's send time (epoch seconds).
SENT_HEADER = "midas_sent_at"

ARGS_SUMMARY_MAX = 500
RESULT_SUMMARY_MAX = 500
ERROR_MESSAGE_MAX = 2000
TRACEBACK_MAX = 8000
#: Events kept in memory while the database is unavailable; older ones are dropped beyond this.
QUEUE_MAX = 20000
BATCH_MAX = 500

# Phases within one attempt; ``seq = attempt * 10 + phase``.
PHASE = {"pending": 0, "received": 1, "started": 2, "retry": 4, "success": 5, "failure": 5, "revoked": 6}
#: Sequence of final events whose attempt number is unknown (time limit, lost worker, revoke): they win.
FINAL_SEQ = 10**6
STATES = ("pending", "received", "started", "retry", "success", "failure", "revoked")


#: Columns an event sets only when it is the newest word on the task.
_GUARDED = (
    "state",
    "retries",
    "worker",
    "received_at",
    "started_at",
    "finished_at",
    "wait_s",
    "runtime_s",
    "result_summary",
    "error_type",
    "error_message",
    "traceback",
)
#: Columns filled in by whichever event knows them, never overwritten.
_FILL = ("name", "queue", "args_summary", "parent_id", "sent_at")
#: Guarded columns that an older event may still fill while they are empty: the worker's
#: main process (received) and its pool process (started) write independently, either first.
_FILL_WHEN_EMPTY = ("received_at", "worker")


def utc(ts: float | None) -> datetime | None:
    """Epoch seconds -> aware UTC datetime (as the document store stores them)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC)


def epoch(value: datetime | None) -> float | None:
    """Datetime from the database (aware, or naive UTC from SQLite) -> epoch seconds."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC).timestamp() if value.tzinfo is None else value.timestamp()


# --------------------------------------------------------------------------
# Summaries: short, never file contents.
# --------------------------------------------------------------------------


def _short(value: Any, depth: int = 0) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):  # a path or a short option; a long string may be content: only its length
        return repr(value) if len(value) <= 200 else f"<{len(value)} characters>"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, Mapping):
        if depth >= 1:
            return f"{{{len(value)} keys}}"
        items = [f"{k!s}={_short(v, depth + 1)}" for k, v in list(value.items())[:8]]
        more = ", …" if len(value) > 8 else ""
        return "{" + ", ".join(items) + more + "}"
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        if depth >= 1:
            return f"[{len(seq)} items]"
        items = [_short(v, depth + 1) for v in seq[:5]]
        more = f", … ({len(seq)} items)" if len(seq) > 5 else ""
        return "[" + ", ".join(items) + more + "]"
    return f"<{type(value).__name__}>"


def _truncate(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize_args(args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None) -> str:
    """``'report.pdf', hours=24`` style, at most ARGS_SUMMARY_MAX characters; bytes are only counted."""
    parts = [_short(a) for a in (args or ())]
    parts += [f"{k}={_short(v)}" for k, v in (kwargs or {}).items()]
    return _truncate(", ".join(parts), ARGS_SUMMARY_MAX) or ""


def summarize_result(value: Any) -> str | None:
    """Scalars and short strings of a result; long text (extracted content) is left out."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        kept = {
            str(k): v
            for k, v in value.items()
            if v is None or isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) <= 120)
        }
        skipped = len(value) - len(kept)
        text = ", ".join(f"{k}={v!r}" for k, v in kept.items())
        if skipped:
            text += f"{' ' if text else ''}(+{skipped} fields)"
        return _truncate(text, RESULT_SUMMARY_MAX)
    return _truncate(_short(value), RESULT_SUMMARY_MAX)


def _error_fields(exc: BaseException | None, tb_text: str | None) -> dict[str, Any]:
    if exc is None:
        return {}
    error_type = getattr(exc, "error_type", None)
    type_name = type(exc).__name__
    return {
        "error_type": _truncate(f"{type_name} ({error_type})" if error_type else type_name, 200),
        "error_message": _truncate(str(exc) or type_name, ERROR_MESSAGE_MAX),
        # keep the end of a long traceback: that is where the error is
        "traceback": tb_text[-TRACEBACK_MAX:] if tb_text else None,
    }


# --------------------------------------------------------------------------
# The writer: events go on a queue, a daemon thread writes them.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    task_id: str
    seq: int
    fields: dict[str, Any]


class _Marker:
    def __init__(self) -> None:
        self.done = threading.Event()


class Recorder:
    """Process-local, thread-backed writer of task history events."""

    def __init__(self, url: str | Callable[[], str]) -> None:
        self._url_source = url
        self._url: str | None = url if isinstance(url, str) else None
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._dropped = 0
        self.written = 0
        self.failed_batches = 0

    @property
    def url(self) -> str:
        if self._url is None:
            source = self._url_source
            self._url = source() if callable(source) else source
        return self._url

    # -- producer side (signal handlers) ------------------------------------

    def record(self, task_id: str | None, seq: int, **fields: Any) -> None:
        """Queue one event; never blocks, never raises."""
        if not task_id:
            return
        self._put(_Event(str(task_id), seq, fields))

    def call_soon(self, job: Callable[[], Any]) -> None:
        """Run ``job`` on the writer thread after the events queued before it (e.g. an alert)."""
        self._put(job)

    def _put(self, item: Any) -> None:
        try:
            self._ensure_thread()
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("task history: %d events dropped (database unavailable too long)", self._dropped)
        except Exception as exc:  # recording must never fail a task
            log.warning("task history: could not queue an event: %s", exc)

    def _ensure_thread(self) -> None:
        if os.getpid() != self._pid:  # forked without the at-fork hook (should not happen)
            self._reset()
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="midas-task-history", daemon=True)
                self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (or given up). True if it finished in time."""
        if self._thread is None or not self._thread.is_alive() or os.getpid() != self._pid:
            return self._queue.empty()
        marker = _Marker()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    # -- consumer side (writer thread) --------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._process(batch)

    def _process(self, batch: list[Any]) -> None:
        events: list[_Event] = []
        for item in batch:
            if isinstance(item, _Event):
                events.append(item)
                continue
            if events:
                self._write_with_retries(events)
                events = []
            if isinstance(item, _Marker):
                item.done.set()
            else:
                try:
                    item()
                except Exception as exc:
                    log.warning("task history: background job %r failed: %s", item, exc)
        if events:
            self._write_with_retries(events)

    def _write_with_retries(self, events: list[_Event], attempts: int = 3) -> None:
        error: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                self.write(events)
                self.written += len(events)
                return
            except Exception as exc:
                error = exc
                if attempt < attempts:
                    log.debug("task history: write failed (%s), retrying", exc)
                    time.sleep(0.5 * attempt)
        lost = len(events)
        if len(events) > 1 and not is_transient(error):
            # the database refuses some event (not a lock or a lost connection): keep the others
            lost = 0
            for event in events:
                try:
                    self.write([event])
                    self.written += 1
                except Exception as exc:
                    lost, error = lost + 1, exc
        if lost:
            self.failed_batches += 1
            log.warning("task history: %d events not recorded (%s: %s)", lost, type(error).__name__, error)

    def prepare(self) -> None:
        """Start the writer and create the tables now, so the first task does not race a slow first write."""
        self.call_soon(lambda: create_schema(self.url))

    def write(self, events: list[_Event]) -> None:
        """Upsert ``events`` in one transaction (synchronously; the thread calls this)."""
        create_schema(self.url)
        engine = get_engine(self.url)
        with engine.begin() as conn:
            for event in events:
                conn.execute(_upsert_statement(conn.dialect.name, frozenset(event.fields)), _event_params(event))


_statements: dict[tuple[str, frozenset[str]], Any] = {}


def _upsert_statement(dialect: str, columns: frozenset[str]) -> Any:
    """The upsert for events carrying ``columns``; built once per column set (building costs more than running)."""
    key = (dialect, columns)
    stmt = _statements.get(key)
    if stmt is not None:
        return stmt
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - MIDAS supports SQLite and PostgreSQL
        raise NotImplementedError(f"task history needs SQLite or PostgreSQL, not {dialect}")
    table = TaskRecord.__table__
    base = insert(table)
    newer = base.excluded.seq >= table.c.seq
    set_: dict[str, Any] = {"seq": case((newer, base.excluded.seq), else_=table.c.seq)}
    for column in columns:
        if column in _FILL_WHEN_EMPTY:
            set_[column] = case((newer | table.c[column].is_(None), base.excluded[column]), else_=table.c[column])
        elif column in _GUARDED:
            set_[column] = case((newer, base.excluded[column]), else_=table.c[column])
        elif column in _FILL:
            set_[column] = func.coalesce(table.c[column], base.excluded[column])
    stmt = base.on_conflict_do_update(index_elements=[table.c.task_id], set_=set_)
    _statements[key] = stmt
    return stmt


_LENGTHS = {"name": 200, "queue": 100, "worker": 255, "error_type": 200, "parent_id": 155}


def _event_params(event: _Event) -> dict[str, Any]:
    # a row first created by an event without a state (a retry's receipt) starts as pending
    params = {"task_id": event.task_id, "seq": event.seq, "state": "pending", **event.fields}
    for column, limit in _LENGTHS.items():
        value = params.get(column)
        if isinstance(value, str) and len(value) > limit:
            params[column] = value[:limit]
    return params


def _default_url() -> str:
    from background_tasks.settings import get_settings

    return get_settings().database_url_resolved


recorder = Recorder(_default_url)


def _after_fork_in_child() -> None:
    # The parent's queue lock may be held by its writer thread at fork time; start clean.
    recorder._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------
# Signal handlers. Each catches everything: recording must never fail a task.
# --------------------------------------------------------------------------

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
        fields = _error_fields(exc, getattr(einfo, "traceback", None))
        if exc is None and reason is not None:
            fields = {"error_type": "Retry", "error_message": _truncate(str(reason), ERROR_MESSAGE_MAX)}
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
        fields = _error_fields(exception, tb_text)
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
