"""The file watcher's logic as plain classes, free of watchdog and Celery.

Everything that decides *whether* and *when* a file becomes a task lives here,
with an injectable clock, so it can be tested quickly and exactly:

* ``PathFilter``       - supported types only; temporary, partial, system and hidden names ignored.
* ``StabilityTracker`` - a file is ready once its size and mtime stood still for the window and
  nothing holds it open; a file that keeps growing is waited for, never given up on.
* ``Batcher``          - ready files grouped until the batch is full or its oldest file waited long enough.
* ``History``          - what was enqueued, persisted in the MIDAS database: unchanged content is
  skipped (also after a restart), changed content goes again, copies and renames are
  recognised by their SHA-256 (``watcher_history``).
* ``PendingQueue``     - messages wait here while the broker is down and are retried with backoff
  (``watcher_queue``).
* ``Watcher``          - ties them together; ``file_watcher`` feeds it events and calls ``tick``.

Nothing here writes to a watched folder: files are only ever stat'ed and read.
"""

from __future__ import annotations

import fnmatch
import heapq
import logging
import os
import queue
import stat
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from background_tasks.extraction.extractors import SUPPORTED_EXTENSIONS
from background_tasks.logging_setup import escape_control
from background_tasks.watcher.history import Decision, History, HistoryEntry, WatchedFile, sha256_of
from background_tasks.watcher.pending import BATCH_TASK, FILE_TASK, FileJob, Outgoing, PendingQueue

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

Clock = Callable[[], float]
T = TypeVar("T")

#: Temporary, partial and system files (matched case-insensitively against the file name).
IGNORED_FILE_PATTERNS: tuple[str, ...] = (
    "~$*",
    ".~lock*",
    "*.tmp",
    "*.part",
    "*.crdownload",
    "*.download",
    ".ds_store",
    "thumbs.db",
    "desktop.ini",
)
#: Folders whose contents are never enqueued (matched case-insensitively against each folder name).
IGNORED_DIR_PATTERNS: tuple[str, ...] = (".git", "__macosx", "$recycle.bin", ".trash*", "@eadir")

_WIN_HIDDEN = 0x2  # FILE_ATTRIBUTE_HIDDEN


# --------------------------------------------------------------------------
# Filter
# --------------------------------------------------------------------------


class PathFilter:
    """Decides from a path alone whether a file may become a task.

    Ignored: unsupported extensions, the temporary/partial/system names of the
    issue, hidden files and folders (a leading dot), the ignored folders, MIDAS's
    own data and log folders (so a watched folder containing them cannot feed
    itself), and the extra glob patterns, which are matched against the file
    name, each folder name below the watched root, and the path relative to it.
    """

    def __init__(
        self,
        roots: Iterable[Path] = (),
        extensions: Iterable[str] = SUPPORTED_EXTENSIONS,
        extra_patterns: Iterable[str] = (),
        exclude_dirs: Iterable[Path] = (),
    ) -> None:
        self.roots = tuple(sorted((Path(os.path.abspath(r)) for r in roots), key=lambda p: len(p.parts), reverse=True))
        self.extensions = frozenset(e.lower() for e in extensions)
        self.extra_patterns = tuple(p.strip().lower() for p in extra_patterns if p.strip())
        self.exclude_dirs = tuple(Path(os.path.abspath(d)) for d in exclude_dirs)

    def _relative(self, path: Path) -> tuple[str, ...]:
        for root in self.roots:
            if path.is_relative_to(root):
                return path.relative_to(root).parts
        return path.parts[1:]  # outside every root: judge all components but the anchor

    def dir_reason(self, name: str) -> str | None:
        """Why a folder (by name) is skipped, or None."""
        lowered = name.lower()
        for pattern in IGNORED_DIR_PATTERNS:
            if fnmatch.fnmatchcase(lowered, pattern):
                return f"folder {name!r} is ignored ({pattern})"
        if lowered.startswith("."):
            return f"folder {name!r} is hidden"
        for pattern in self.extra_patterns:
            if fnmatch.fnmatchcase(lowered, pattern):
                return f"folder {name!r} matches the ignore pattern {pattern!r}"
        return None

    def is_excluded_dir(self, path: Path) -> bool:
        """MIDAS's own folders (data, logs): never scanned."""
        absolute = Path(os.path.abspath(path))
        return any(absolute == d or absolute.is_relative_to(d) for d in self.exclude_dirs)

    def reason(self, path: str | os.PathLike[str]) -> str | None:
        """Why ``path`` is ignored, or None when it may be enqueued."""
        absolute = Path(os.path.abspath(path))
        if self.is_excluded_dir(absolute):
            return "inside MIDAS's own data or log folder"
        parts = self._relative(absolute)
        for folder in parts[:-1]:
            why = self.dir_reason(folder)
            if why:
                return why
        name = absolute.name
        lowered = name.lower()
        for pattern in IGNORED_FILE_PATTERNS:
            if fnmatch.fnmatchcase(lowered, pattern):
                return f"temporary or system file ({pattern})"
        if lowered.startswith("."):
            return "hidden file"
        relative = "/".join(parts).lower()
        for pattern in self.extra_patterns:
            if fnmatch.fnmatchcase(lowered, pattern) or fnmatch.fnmatchcase(relative, pattern):
                return f"matches the ignore pattern {pattern!r}"
        if absolute.suffix.lower() not in self.extensions:
            return f"unsupported type {absolute.suffix.lower() or '(no extension)'}"
        return None

    def accepts(self, path: str | os.PathLike[str]) -> bool:
        return self.reason(path) is None


def hidden_by_attribute(st: os.stat_result) -> bool:
    """Windows' hidden attribute (POSIX has only the leading dot, which PathFilter handles)."""
    return bool(getattr(st, "st_file_attributes", 0) & _WIN_HIDDEN)


def walk_files(root: Path, path_filter: PathFilter, recursive: bool = True) -> Iterator[Path]:
    """Accepted files under ``root``; ignored, hidden and symlinked folders are not entered."""
    stack = [Path(os.path.abspath(root))]
    while stack:
        folder = stack.pop()
        if path_filter.is_excluded_dir(folder):
            continue
        try:
            with os.scandir(folder) as entries:
                items = list(entries)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            continue
        for entry in items:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive and path_filter.dir_reason(entry.name) is None:
                        stack.append(Path(entry.path))
                    continue
            except OSError:
                continue
            path = Path(entry.path)
            if path_filter.accepts(path):
                yield path


# --------------------------------------------------------------------------
# Stability
# --------------------------------------------------------------------------


def lock_reason(path: Path) -> str | None:
    """Why ``path`` is held by a program that may still write it, or None.

    Signals that work everywhere: a LibreOffice lock file (``.~lock.NAME#``), a
    Microsoft Office owner file (``~$NAME``), or a browser's partial download
    (``NAME.part``, ``.crdownload``, ``.download``) beside it. On Windows also a
    sharing violation when opening for writing (the file is not changed).
    """
    name = path.name
    siblings = [f".~lock.{name}#", f"~${name}", f"~${name[2:]}", f"{name}.part", f"{name}.crdownload"]
    siblings.append(f"{name}.download")
    for sibling in siblings:
        if len(sibling) > 2 and os.path.lexists(path.with_name(sibling)):
            return f"{sibling} exists beside it"
    if os.name == "nt" and os.access(path, os.W_OK):
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        except PermissionError:
            return "another program has it open"
        except OSError:
            return None
        os.close(fd)
    return None


@dataclass
class _Watch:
    size: int
    mtime_ns: int
    since: float  # when size/mtime were last seen to change (or first seen)
    check_at: float  # next time to look again
    first_seen: float
    waiting_logged: bool = False


class StabilityTracker:
    """Files become ready when their size and mtime stood still for ``window`` seconds and none is locked.

    ``touch`` is called for every event (and by scans); ``ready`` returns the
    files that are complete and stops tracking them. Each tracked file is
    stat'ed about once per window, so thousands of waiting files cost little.
    An empty file is not ready (browsers create the final name empty first);
    a file that keeps changing or stays locked is waited for indefinitely.
    """

    def __init__(
        self,
        window: float,
        clock: Clock = time.monotonic,
        locked: Callable[[Path], str | None] = lock_reason,
        stat_fn: Callable[[Path], os.stat_result] = os.stat,
    ) -> None:
        self.window = max(0.0, float(window))
        self.clock = clock
        self.locked = locked
        self.stat_fn = stat_fn
        self._entries: dict[Path, _Watch] = {}
        self._heap: list[tuple[float, int, Path]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def _stat(self, path: Path) -> os.stat_result | None:
        try:
            st = self.stat_fn(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or hidden_by_attribute(st):
            return None
        return st

    def _schedule(self, path: Path, at: float) -> None:
        self._entries[path].check_at = at
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, path))

    def touch(self, path: Path) -> bool:
        """Note that ``path`` may have changed. True if it was not tracked before."""
        st = self._stat(path)
        if st is None:
            self._entries.pop(path, None)
            return False
        now = self.clock()
        entry = self._entries.get(path)
        if entry is None:
            self._entries[path] = _Watch(st.st_size, st.st_mtime_ns, now, now + self.window, now)
            self._schedule(path, now + self.window)
            return True
        if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
            entry.size, entry.mtime_ns, entry.since = st.st_size, st.st_mtime_ns, now
            self._schedule(path, now + self.window)
        return False

    def forget(self, path: Path) -> None:
        self._entries.pop(path, None)

    def next_check(self) -> float | None:
        """When ``ready`` may next return something (for sleeping), or None when nothing is tracked."""
        while self._heap:
            at, _, path = self._heap[0]
            entry = self._entries.get(path)
            if entry is not None and entry.check_at == at:
                return at
            heapq.heappop(self._heap)
        return None

    def ready(self) -> list[tuple[Path, os.stat_result]]:
        """Files that are complete now; they are no longer tracked."""
        now = self.clock()
        out: list[tuple[Path, os.stat_result]] = []
        while self._heap and self._heap[0][0] <= now:
            at, _, path = heapq.heappop(self._heap)
            entry = self._entries.get(path)
            if entry is None or entry.check_at != at:
                continue  # stale heap entry
            st = self._stat(path)
            if st is None:
                del self._entries[path]  # vanished, or replaced by something that is not a file
                continue
            if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
                entry.size, entry.mtime_ns, entry.since = st.st_size, st.st_mtime_ns, now
                self._schedule(path, now + self.window)
                continue
            if now - entry.since < self.window:
                self._schedule(path, entry.since + self.window)
                continue
            recheck = now + max(self.window, 1.0)
            if st.st_size == 0:
                self._note_waiting(path, entry, "it is empty")
                self._schedule(path, recheck)
                continue
            why = self.locked(path)
            if why:
                self._note_waiting(path, entry, f"it is locked ({why})")
                self._schedule(path, recheck)
                continue
            del self._entries[path]
            out.append((path, st))
        return out

    def _note_waiting(self, path: Path, entry: _Watch, why: str) -> None:
        if not entry.waiting_logged:
            entry.waiting_logged = True
            log.info("waiting for %s: %s", path, why)


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

    def next_wakeup(self) -> float | None:
        """The earliest time something becomes due (stability, batch timeout, retry)."""
        times = [self.tracker.next_check(), self.pending.next_attempt()]
        if self.batcher is not None:
            times.append(self.batcher.next_deadline())
        due = [t for t in times if t is not None]
        return min(due) if due else None

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
