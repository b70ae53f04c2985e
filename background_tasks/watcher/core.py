"""The file watcher's logic as plain classes, free of watchdog and Celery.

Everything that decides *whether* and *when* a file becomes a task lives in ``watcher/``,
with an injectable clock, so it can be tested quickly and exactly; this module ties it
together and re-exports the names:

* ``PathFilter``       - supported types only; temporary, partial, system and hidden names
  ignored (``filters``).
* ``StabilityTracker`` - a file is ready once its size and mtime stood still for the window and
  nothing holds it open; a file that keeps growing is waited for, never given up on (``stability``).
* ``Batcher``          - ready files grouped until the batch is full or its oldest file waited long enough.
* ``History``          - what was enqueued, persisted in the MIDAS database: unchanged content is
  skipped (also after a restart), changed content goes again, copies and renames are
  recognised by their SHA-256 (``history``, table ``watcher_history``).
* ``PendingQueue``     - messages wait here while the broker is down and are retried with backoff
  (``pending``; kept in memory).
* ``Watcher``          - ties them together; ``file_watcher`` feeds it events and calls ``tick``.

Nothing here writes to a watched folder: files are only ever stat'ed and read.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from background_tasks.logging_setup import escape_control
from background_tasks.watcher.filters import (
    IGNORED_DIR_PATTERNS,
    IGNORED_FILE_PATTERNS,
    PathFilter,
    walk_files,
)
from background_tasks.watcher.history import Decision, History, HistoryEntry, WatchedFile, sha256_of
from background_tasks.watcher.pending import BATCH_TASK, FILE_TASK, FileJob, Outgoing, PendingQueue
from background_tasks.watcher.stability import Clock, StabilityTracker, lock_reason

__all__ = [
    "BATCH_TASK",
    "FILE_TASK",
    "IGNORED_DIR_PATTERNS",
    "IGNORED_FILE_PATTERNS",
    "Batcher",
    "Decision",
    "FileJob",
    "History",
    "HistoryEntry",
    "Outgoing",
    "PathFilter",
    "PendingQueue",
    "StabilityTracker",
    "WatchedFile",
    "Watcher",
    "lock_reason",
    "sha256_of",
    "walk_files",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# --------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------


class Batcher(Generic[T]):
    """Collects items into batches of ``size``; a partial batch goes once its oldest item waited ``timeout``."""

    def __init__(self, size: int, timeout: float, clock: Clock = time.monotonic) -> None:
        if size < 1:
            raise ValueError("batch size must be at least 1")
        self.size = size
        self.timeout = max(0.0, float(timeout))
        self.clock = clock
        self._items: deque[tuple[T, float]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> None:
        self._items.append((item, self.clock()))

    def _take(self, count: int) -> list[T]:
        return [self._items.popleft()[0] for _ in range(min(count, len(self._items)))]

    def due(self) -> list[list[T]]:
        """Full batches, then the partial one if its oldest item has waited long enough."""
        batches = []
        while len(self._items) >= self.size:
            batches.append(self._take(self.size))
        if self._items and self.clock() - self._items[0][1] >= self.timeout:
            batches.append(self._take(len(self._items)))
        return batches

    def next_deadline(self) -> float | None:
        return self._items[0][1] + self.timeout if self._items else None

    def drain(self) -> list[list[T]]:
        """Everything left, in batches (for shutdown)."""
        batches = []
        while self._items:
            batches.append(self._take(self.size))
        return batches


# --------------------------------------------------------------------------
# The watcher
# --------------------------------------------------------------------------


@dataclass
class Counters:
    seen: int = 0  # distinct files that reached the tracker
    enqueued: int = 0  # files whose task reached the broker
    skipped: int = 0  # stable files not enqueued: unchanged, touched only, copies
    ignored: int = 0  # events for ignored names
    errors: int = 0  # stable files that could not be read
    last_event: float | None = None  # wall-clock time of the last accepted event
    last_event_path: str | None = None
    scans: int = 0


class Watcher:
    """Events and scans in, tasks out. Single-threaded except ``notify``, which any thread may call."""

    def __init__(
        self,
        roots: Iterable[Path],
        path_filter: PathFilter,
        tracker: StabilityTracker,
        history: History,
        pending: PendingQueue,
        batcher: Batcher[FileJob] | None = None,
        recursive: bool = True,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.roots = [Path(os.path.abspath(r)) for r in roots]
        self.filter = path_filter
        self.tracker = tracker
        self.history = history
        self.pending = pending
        self.batcher = batcher
        self.recursive = recursive
        self.clock = clock
        self.wall_clock = wall_clock
        self.counters = Counters()
        self._events: queue.SimpleQueue[tuple[str, bool, bool]] = queue.SimpleQueue()

    # -- input ---------------------------------------------------------------

    def notify(self, path: str, is_dir: bool = False, gone: bool = False) -> None:
        """Called from the observer thread: only queues, the main loop does the work."""
        self._events.put((path, is_dir, gone))

    def _handle_event(self, raw: str, is_dir: bool, gone: bool) -> None:
        path = Path(os.path.abspath(raw))
        if gone:
            self.tracker.forget(path)
            return
        if is_dir:  # a folder created or moved in: its files may have no events of their own
            if not self.filter.is_excluded_dir(path) and self._dir_allowed(path):
                self.scan_dir(path)
            return
        why = self.filter.reason(path)
        if why is not None:
            self.counters.ignored += 1
            log.debug("ignored %s: %s", path, why)
            return
        self.counters.last_event = self.wall_clock()
        self.counters.last_event_path = str(path)
        if self.tracker.touch(path):
            self.counters.seen += 1

    def _dir_allowed(self, path: Path) -> bool:
        for root in self.roots:
            if path == root or path.is_relative_to(root):
                parts = path.relative_to(root).parts
                if not self.recursive and parts:
                    return False
                return all(self.filter.dir_reason(p) is None for p in parts)
        return False

    def scan_dir(self, folder: Path, initial: bool = False) -> int:
        """Track files under ``folder`` that history does not know in their current state."""
        added = 0
        for path in walk_files(folder, self.filter, self.recursive):
            if path in self.tracker:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            if self.history.is_unchanged(path, st.st_size, st.st_mtime_ns):
                if initial:
                    self.counters.skipped += 1
                continue
            if self.tracker.touch(path):
                self.counters.seen += 1
                added += 1
        return added

    def scan(self, initial: bool = False) -> int:
        """Look at every watched folder (start-up and periodic rescans)."""
        started = self.clock()
        added = sum(self.scan_dir(root, initial) for root in self.roots if root.is_dir())
        self.counters.scans += 1
        log.info(
            "%s scan: %d new or changed file(s) found in %.2f s",
            "initial" if initial else "periodic",
            added,
            self.clock() - started,
        )
        return added

    # -- the loop body -------------------------------------------------------

    def tick(self) -> None:
        """Handle queued events, promote stable files, send what is due, save history."""
        for _ in range(100_000):
            try:
                raw, is_dir, gone = self._events.get_nowait()
            except queue.Empty:
                break
            self._handle_event(raw, is_dir, gone)
        for path, st in self.tracker.ready():
            self._stable(path, st)
        if self.batcher is not None:
            for jobs in self.batcher.due():
                self.pending.add(Outgoing.batch(jobs))
        self._send()

    def _stable(self, path: Path, st: os.stat_result) -> None:
        try:
            decision = self.history.decide(path, st)
        except OSError as exc:
            self.counters.errors += 1
            log.warning("cannot read %s (%s); not enqueued", path, exc.strerror or exc)
            return
        if not decision.process:
            self.counters.skipped += 1
            log.info("skipped %s: %s", path, decision.reason)
            return
        job = FileJob(path, st, decision.sha256, str(uuid.uuid4()), self.clock())
        self.history.reserve(path, st, decision.sha256)
        log.debug("%s is complete (%s)", path, decision.reason)
        if self.batcher is not None:
            self.batcher.add(job)
        else:
            self.pending.add(Outgoing.single(job))

    def _send(self, force: bool = False) -> None:
        for item in self.pending.flush(force=force):
            for job in item.jobs:
                self.history.mark_sent(job.path, job.st, item.task_id)
            self.counters.enqueued += len(item.jobs)
            if item.task_name == BATCH_TASK:
                log.info("enqueued batch %s of %d file(s)", item.task_id, len(item.jobs))
            else:
                log.info("enqueued %s as task %s", item.jobs[0].path, item.task_id)
        if self.history.unsaved:
            self.history.flush()

    # -- shutdown --------------------------------------------------------------

    def shutdown(self, timeout: float, sleep: Callable[[float], None] = time.sleep) -> int:
        """Send the open batch and anything waiting (for up to ``timeout`` s), save history.

        Returns the number of files that could not be sent; they are not in the
        history, so the next start's initial scan enqueues them.
        """
        if self.batcher is not None:
            for jobs in self.batcher.drain():
                self.pending.add(Outgoing.batch(jobs))
        deadline = self.clock() + timeout
        self._send(force=True)
        while len(self.pending) and self.clock() < deadline:
            sleep(min(0.5, max(0.0, deadline - self.clock())))
            self._send(force=True)
        unsent = self.pending.files
        if unsent:
            log.warning("%d file(s) could not be sent before exit; the next start's scan will enqueue them", unsent)
        if not self.history.flush(force=True):
            log.error("history could not be saved; files sent in this run may be enqueued again after a restart")
        return unsent

    def stats(self) -> dict[str, Any]:
        """The figures the heartbeat publishes."""
        in_batch = len(self.batcher) if self.batcher is not None else 0
        return {
            "last_event": self.counters.last_event,
            # shown by the dashboard: a name with a newline or undecodable bytes, escaped
            "last_event_path": escape_control(path) if (path := self.counters.last_event_path) else None,
            "seen": self.counters.seen,
            "enqueued": self.counters.enqueued,
            "skipped": self.counters.skipped,
            "ignored": self.counters.ignored,
            "errors": self.counters.errors,
            "waiting": len(self.tracker),  # not yet stable
            "pending": in_batch + self.pending.files,  # stable, not yet sent
            "broker_down": self.pending.broker_down,
            "scans": self.counters.scans,
        }
