"""The task history's writer: events go on an in-memory queue, a daemon thread per process writes them.

Recording must never fail or slow a task. ``record`` only puts a small event on
the queue (a few microseconds); the thread writes the queue to the database in
batches, waits out a busy SQLite file, and logs a warning instead of raising
when the database is gone.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from background_tasks.storage.db import is_transient
from background_tasks.storage.schema import create_schema
from background_tasks.storage.task_history import TaskEvent, write_events

log = logging.getLogger("background_tasks.ops.task_history")  # the name its lines had before the split

#: Events kept in memory while the database is unavailable; older ones are dropped beyond this.
QUEUE_MAX = 20000
BATCH_MAX = 500


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
        self._put(TaskEvent(str(task_id), seq, fields))

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
        events: list[TaskEvent] = []
        for item in batch:
            if isinstance(item, TaskEvent):
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

    def _write_with_retries(self, events: list[TaskEvent], attempts: int = 3) -> None:
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

    def write(self, events: list[TaskEvent]) -> None:
        """Upsert ``events`` in one transaction (synchronously; the thread calls this)."""
        write_events(self.url, events)
