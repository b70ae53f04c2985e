"""The watcher's history: which files were enqueued, persisted in the MIDAS database.

Split out of ``watcher_core`` (which re-exports these names). ``History`` is held
in memory for speed and written through after each send; it decides whether a
stable file is new, changed, merely touched, or a copy of known content.

File names need not be UTF-8 on POSIX: Python hands them over with the
undecodable bytes as lone surrogates (``surrogateescape``), which no database
text column accepts. ``path_to_db`` stores such a path in a reversible escaped
form and ``path_from_db`` restores it, so the record matches the file again
after a restart. Records are saved together, and one by one when that fails, so
a record the database refuses never costs the others theirs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import exc, select

from background_tasks.logging_setup import escape_control
from background_tasks.processing.intake import open_without_links
from background_tasks.storage.db import is_transient, read_scope, session_scope
from background_tasks.storage.models import WatchedFile
from background_tasks.storage.schema import create_schema

log = logging.getLogger("background_tasks.watcher.core")  # the name its lines had before the split


@dataclass
class HistoryEntry:
    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    task_id: str | None = None
    same_as: str | None = None
    enqueued_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    """What to do with a stable file. ``process`` False means skip, for ``reason``."""

    process: bool
    reason: str
    sha256: str | None = None
    same_as: str | None = None


#: Marks a stored path that was escaped; no absolute path starts like this (POSIX "/", Windows "C:" or "\\\\").
ESCAPED_PREFIX = "escaped:"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_TO_ESCAPE = re.compile("[\\\\\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x5C:
        return "\\\\"
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def _unescape(match: re.Match[str]) -> str:
    body = match.group(1)
    if body == "\\":
        return "\\"
    return chr(0xDC00 + int(body[1:], 16)) if body[0] == "x" else chr(int(body[1:], 16))


def path_to_db(path: str) -> str:
    """``path`` as the database stores it: unchanged when it is valid Unicode (nearly always).

    A name with undecodable bytes (lone surrogates) is stored as ``escaped:`` and
    the path with each byte as ``\\xNN`` (and ``\\`` doubled): readable, and exactly
    reversible by ``path_from_db``.
    """
    if not _LONE_SURROGATE.search(path):
        return path
    return ESCAPED_PREFIX + _TO_ESCAPE.sub(_escape, path)


def path_from_db(stored: str) -> str:
    """The path ``path_to_db`` stored, with its undecodable bytes back as surrogate escapes."""
    if not stored.startswith(ESCAPED_PREFIX):
        return stored
    return _ESCAPE.sub(_unescape, stored[len(ESCAPED_PREFIX) :])


def _database_unavailable(error: BaseException) -> bool:
    """True when the failure is the database's (down, locked, schema missing), not one record's."""
    database_errors = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError, OSError)
    return isinstance(error, database_errors) or is_transient(error)


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
        with read_scope(self.url) as session:
            rows = session.execute(select(WatchedFile)).scalars().all()
            for row in rows:
                path = path_from_db(row.path)
                same_as = path_from_db(row.same_as) if row.same_as else row.same_as
                entry = HistoryEntry(path, row.size, row.mtime_ns, row.sha256, row.task_id, same_as, row.enqueued_at)
                self._by_path[path] = entry
                if row.sha256 and row.task_id:
                    self._by_hash.setdefault(row.sha256, path)
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
        entry.task_id = task_id
        entry.enqueued_at = datetime.now(UTC)
        self._unsaved[entry.path] = entry

    def _put(self, entry: HistoryEntry, save: bool) -> None:
        entry.enqueued_at = entry.enqueued_at or datetime.now(UTC)
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
            if _database_unavailable(error):
                self._unavailable(len(entries), error, now)
                return False
            self._save_one_by_one(entries, now)
        else:
            self._saved(entries, now)
        return not self._unsaved

    def _save(self, entries: Sequence[HistoryEntry]) -> None:
        with session_scope(self.url) as session:
            for start in range(0, len(entries), 500):
                chunk = {path_to_db(e.path): e for e in entries[start : start + 500]}
                existing = {
                    row.path: row
                    for row in session.execute(select(WatchedFile).where(WatchedFile.path.in_(list(chunk)))).scalars()
                }
                for stored, entry in chunk.items():
                    row = existing.get(stored)
                    if row is None:
                        row = WatchedFile(path=stored)
                        session.add(row)
                    row.size, row.mtime_ns, row.sha256 = entry.size, entry.mtime_ns, entry.sha256
                    row.task_id = entry.task_id
                    row.same_as = path_to_db(entry.same_as) if entry.same_as else entry.same_as
                    row.enqueued_at = entry.enqueued_at or datetime.now(UTC)

    def _save_one_by_one(self, entries: Sequence[HistoryEntry], now: float) -> None:
        saved: list[HistoryEntry] = []
        for entry in entries:
            try:
                self._save([entry])
            except Exception as error:
                if _database_unavailable(error):  # the database went away meanwhile: keep the rest
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
