"""The watcher's history: which files were enqueued, persisted in the MIDAS database.

Split out of ``watcher_core`` (which re-exports these names). ``History`` is held
in memory for speed and written through after each send; it decides whether a
stable file is new, changed, merely touched, or a copy of known content.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import BigInteger, DateTime, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from background_tasks.db import Base, create_all, read_scope, session_scope

log = logging.getLogger("background_tasks.watcher_core")  # the name its lines had before the split


class WatchedFile(Base):
    """One file the watcher has handled: what it looked like and which task it went to."""

    __tablename__ = "watcher_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    task_id: Mapped[str | None] = mapped_column(String(64))
    same_as: Mapped[str | None] = mapped_column(Text)  # a copy/rename: the path whose content was processed
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


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


def sha256_of(path: Path, max_bytes: int | None = None) -> str | None:
    """``watcher_core.sha256_of``, looked up when called (it lives there, with the other file reading)."""
    from background_tasks import watcher_core

    return watcher_core.sha256_of(path, max_bytes)


class History:
    """Files already enqueued, persisted in the MIDAS database (table ``watcher_history``).

    Held in memory for speed and written through after each send. A path whose
    size and mtime match its record is skipped without reading it; otherwise
    the content is hashed: same hash as the record -> only touched, skipped;
    hash known from another path -> a copy or rename, recorded and skipped;
    anything else is new or changed content and is enqueued.
    Content counts as known only once a task was actually sent for it.
    """

    def __init__(self, database_url: str, max_hash_bytes: int | None = None) -> None:
        self.url = database_url
        self.max_hash_bytes = max_hash_bytes
        create_all(database_url)
        self._by_path: dict[str, HistoryEntry] = {}
        self._by_hash: dict[str, str] = {}
        self._unsaved: dict[str, HistoryEntry] = {}
        self.load()

    def load(self) -> None:
        with read_scope(self.url) as session:
            rows = session.execute(select(WatchedFile)).scalars().all()
            for row in rows:
                entry = HistoryEntry(
                    row.path, row.size, row.mtime_ns, row.sha256, row.task_id, row.same_as, row.enqueued_at
                )
                self._by_path[row.path] = entry
                if row.sha256 and row.task_id:
                    self._by_hash.setdefault(row.sha256, row.path)
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

    def flush(self) -> bool:
        """Write unsaved records. False (and kept for later) if the database is unavailable."""
        if not self._unsaved:
            return True
        entries = list(self._unsaved.values())
        try:
            with session_scope(self.url) as session:
                for start in range(0, len(entries), 500):
                    chunk = entries[start : start + 500]
                    existing = {
                        row.path: row
                        for row in session.execute(
                            select(WatchedFile).where(WatchedFile.path.in_([e.path for e in chunk]))
                        ).scalars()
                    }
                    for entry in chunk:
                        row = existing.get(entry.path)
                        if row is None:
                            row = WatchedFile(path=entry.path)
                            session.add(row)
                        row.size, row.mtime_ns, row.sha256 = entry.size, entry.mtime_ns, entry.sha256
                        row.task_id, row.same_as = entry.task_id, entry.same_as
                        row.enqueued_at = entry.enqueued_at or datetime.now(UTC)
        except Exception as exc:  # database down or locked: keep the records and try again later
            log.warning("history: could not save %d records (%s); will retry", len(entries), exc)
            return False
        for entry in entries:
            if self._unsaved.get(entry.path) is entry:
                del self._unsaved[entry.path]
        return True
