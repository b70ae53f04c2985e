"""The watcher's history: which files were enqueued, persisted in the MIDAS database.

Split out of ``watcher_core`` (which re-exports these names). ``History`` is held
in memory for speed and written through after each send; it decides whether a
stable file is new, changed, merely touched, or a copy of known content.

Records are loaded and saved by ``storage.watcher_history`` (which also stores
a name that is not UTF-8 so that it comes back exactly). They are saved
together, and one by one when that fails, so a record the database refuses
never costs the others theirs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from background_tasks.logging_setup import escape_control
from background_tasks.processing.intake import open_without_links
from background_tasks.storage.models import WatchedFile  # re-exported by watcher.core
from background_tasks.storage.schema import create_schema
from background_tasks.storage.watcher_history import (
    ESCAPED_PREFIX,
    HistoryEntry,
    is_database_unavailable,
    load_records,
    path_from_db,
    path_to_db,
    save_records,
)

__all__ = [
    "ESCAPED_PREFIX",
    "Decision",
    "History",
    "HistoryEntry",
    "WatchedFile",
    "path_from_db",
    "path_to_db",
    "sha256_of",
]

log = logging.getLogger("background_tasks.watcher.core")  # the name its lines had before the split


@dataclass(frozen=True)
class Decision:
    """What to do with a stable file. ``process`` False means skip, for ``reason``."""

    process: bool
    reason: str
    sha256: str | None = None
    same_as: str | None = None


#: Bytes read at a time when hashing.
HASH_BUFFER = 1024 * 1024


def sha256_of(path: Path, max_bytes: int | None = None) -> str | None:
    """SHA-256 of a regular file, read-only; None when it is larger than ``max_bytes``.

    Opened without following links (a file swapped for a link to a file
    elsewhere is never read), non-blocking and checked with fstat, so a FIFO
    or device that replaced the file after it was stat'ed is never read.
    """
    fd = open_without_links(path)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            return None
        digest = hashlib.sha256()
        read = 0
        while chunk := handle.read(HASH_BUFFER):
            read += len(chunk)
            if max_bytes is not None and read > max_bytes:
                return None
            digest.update(chunk)
    return digest.hexdigest()


class History:
    """Files already enqueued, persisted in the MIDAS database (table ``watcher_history``).

    Held in memory for speed and written through after each send. A path whose
    size and mtime match its record is skipped without reading it; otherwise
    the content is hashed: same hash as the record -> only touched, skipped;
    hash known from another path -> a copy or rename, recorded and skipped;
    anything else is new or changed content and is enqueued.
    Content counts as known only once a task was actually sent for it.
    """

    def __init__(
        self,
        database_url: str,
        max_hash_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff_start: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.url = database_url
        self.max_hash_bytes = max_hash_bytes
        self.clock = clock
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        create_schema(database_url)
        self._by_path: dict[str, HistoryEntry] = {}
        self._by_hash: dict[str, str] = {}
        self._unsaved: dict[str, HistoryEntry] = {}
        self._failures = 0  # consecutive flushes the database refused
        self._retry_at = 0.0
        self._down_since: float | None = None
        self._last_warning = 0.0
        self.load()

    def load(self) -> None:
        for entry in load_records(self.url):
            self._by_path[entry.path] = entry
            if entry.sha256 and entry.task_id:
                self._by_hash.setdefault(entry.sha256, entry.path)
        log.info("history: %d files known", len(self._by_path))

    def __len__(self) -> int:
        return len(self._by_path)

    def get(self, path: str | Path) -> HistoryEntry | None:
        return self._by_path.get(str(path))

    def is_unchanged(self, path: str | Path, size: int, mtime_ns: int) -> bool:
        entry = self._by_path.get(str(path))
        return entry is not None and entry.size == size and entry.mtime_ns == mtime_ns

    def decide(self, path: Path, st: os.stat_result) -> Decision:
        """Process or skip a stable file. Raises OSError if it cannot be read."""
        key = str(path)
        entry = self._by_path.get(key)
        if entry is not None and entry.size == st.st_size and entry.mtime_ns == st.st_mtime_ns:
            return Decision(False, "unchanged since it was enqueued", entry.sha256)
        sha = sha256_of(path, self.max_hash_bytes)
        if sha is None:  # too large to be processed; the worker refuses it with a clear error
            return Decision(True, "changed (too large to hash)" if entry else "new (too large to hash)")
        if entry is not None and entry.sha256 == sha:
            # Saved only once its task was sent: an unsent record must not hide the file after a restart.
            touched = HistoryEntry(key, st.st_size, st.st_mtime_ns, sha, entry.task_id, entry.same_as)
            self._put(touched, save=entry.task_id is not None)
            return Decision(False, "touched but content unchanged", sha)
        other = self._by_hash.get(sha)
        if other is not None and other != key:
            source = self._by_path.get(other)
            task_id = source.task_id if source else None
            self._put(HistoryEntry(key, st.st_size, st.st_mtime_ns, sha, task_id, other), save=task_id is not None)
            return Decision(False, f"same content as {other} (copy or rename)", sha, same_as=other)
        return Decision(True, "changed" if entry is not None else "new", sha)

    def reserve(self, path: Path, st: os.stat_result, sha256: str | None) -> None:
        """Remember a file chosen for a task not sent yet, so copies arriving meanwhile are recognised."""
        self._put(HistoryEntry(str(path), st.st_size, st.st_mtime_ns, sha256), save=False)

    def mark_sent(self, path: str | Path, st: os.stat_result, task_id: str) -> None:
        """The task for ``path`` as it was at ``st`` reached the broker: persist the record.

        If the file changed again meanwhile, its newer record waits for its own task.
        """
        entry = self._by_path.get(str(path))
        if entry is None or (entry.size, entry.mtime_ns) != (st.st_size, st.st_mtime_ns):
            return
        entry = replace(entry, task_id=task_id, enqueued_at=datetime.now(UTC))
        self._by_path[entry.path] = self._unsaved[entry.path] = entry

    def _put(self, entry: HistoryEntry, save: bool) -> None:
        if entry.enqueued_at is None:
            entry = replace(entry, enqueued_at=datetime.now(UTC))
        self._by_path[entry.path] = entry
        if entry.sha256:
            self._by_hash.setdefault(entry.sha256, entry.path)
        if save:
            self._unsaved[entry.path] = entry

    @property
    def unsaved(self) -> int:
        return len(self._unsaved)

    def flush(self, force: bool = False) -> bool:
        """Write unsaved records; True when none is left waiting.

        All records go in one transaction. If that fails because the database is
        unavailable, every record is kept and saving waits with exponential
        backoff (``force`` skips the wait, for shutdown). If it fails for another
        reason, the records are saved one by one, so a record the database refuses
        costs only itself: it is logged once, with the file's name escaped, and
        dropped from the save list (the watcher still knows it until it stops).
        """
        if not self._unsaved:
            return True
        now = self.clock()
        if now < self._retry_at and not force:
            return False
        entries = list(self._unsaved.values())
        try:
            self._save(entries)
        except Exception as error:
            if is_database_unavailable(error):
                self._unavailable(len(entries), error, now)
                return False
            self._save_one_by_one(entries, now)
        else:
            self._saved(entries, now)
        return not self._unsaved

    def _save(self, entries: Sequence[HistoryEntry]) -> None:
        save_records(self.url, entries)

    def _save_one_by_one(self, entries: Sequence[HistoryEntry], now: float) -> None:
        saved: list[HistoryEntry] = []
        for entry in entries:
            try:
                self._save([entry])
            except Exception as error:
                if is_database_unavailable(error):  # the database went away meanwhile: keep the rest
                    self._saved(saved, now)
                    self._unavailable(len(entries) - len(saved), error, now)
                    return
                log.warning(
                    "history: the record of %s cannot be saved (%s); it is not enqueued again while the "
                    "watcher runs, but may be after a restart",
                    escape_control(entry.path),
                    escape_control(str(error).splitlines()[0] if str(error) else type(error).__name__),
                )
                if self._unsaved.get(entry.path) is entry:
                    del self._unsaved[entry.path]
                continue
            saved.append(entry)
        self._saved(saved, now)

    def _saved(self, entries: Sequence[HistoryEntry], now: float) -> None:
        for entry in entries:
            if self._unsaved.get(entry.path) is entry:
                del self._unsaved[entry.path]
        if self._down_since is not None:
            log.warning("history: saved again after %.1f s", now - self._down_since)
        self._failures, self._retry_at, self._down_since = 0, 0.0, None

    def _unavailable(self, count: int, error: BaseException, now: float) -> None:
        """Keep everything and back off; warn when it starts and then at most once a minute."""
        self._failures += 1
        delay = min(self.backoff_max, self.backoff_start * 2 ** (self._failures - 1))
        self._retry_at = now + delay
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        if self._down_since is None:
            self._down_since = self._last_warning = now
            log.warning("history: could not save %d records (%s); will retry in %.1f s", count, detail, delay)
        elif now - self._last_warning >= 60:
            self._last_warning = now
            log.warning(
                "history: still cannot save %d records after %.0f s (%s)", count, now - self._down_since, detail
            )
        else:
            log.debug("history: still cannot save %d records; retry in %.1f s", count, delay)
