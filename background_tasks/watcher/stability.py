"""When a file is complete: its size and mtime stood still for the window and no program holds it.

Split out of ``watcher.core`` (which re-exports these names).
"""

from __future__ import annotations

import heapq
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from background_tasks.watcher.filters import hidden_by_attribute

log = logging.getLogger("background_tasks.watcher.core")  # the name its lines had before the split

Clock = Callable[[], float]


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
