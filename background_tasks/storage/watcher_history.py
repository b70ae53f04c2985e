"""Load and save of the watcher's history (table ``watcher_history``): which files were enqueued.

File names need not be UTF-8 on POSIX: Python hands them over with the
undecodable bytes as lone surrogates (``surrogateescape``), which no database
text column accepts. ``path_to_db`` stores such a path in a reversible escaped
form and ``path_from_db`` restores it, so the record matches the file again
after a restart. Callers see and give only the paths as Python has them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import exc, select

from background_tasks.storage.db import is_transient, read_scope, session_scope
from background_tasks.storage.models import WatchedFile

#: Records looked up and written per statement (an IN list of paths).
SAVE_CHUNK = 500


@dataclass(frozen=True)
class HistoryEntry:
    """One file's record: as it was when its task was sent, and the content it had."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    task_id: str | None = None
    same_as: str | None = None
    enqueued_at: datetime | None = None


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


def is_database_unavailable(error: BaseException) -> bool:
    """True when the failure is the database's (down, locked, schema missing), not one record's."""
    database_errors = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError, OSError)
    return isinstance(error, database_errors) or is_transient(error)


def load_records(url: str) -> list[HistoryEntry]:
    """Every record, with its paths as they were before storing."""
    with read_scope(url) as session:
        return [
            HistoryEntry(
                path_from_db(row.path),
                row.size,
                row.mtime_ns,
                row.sha256,
                row.task_id,
                path_from_db(row.same_as) if row.same_as else row.same_as,
                row.enqueued_at,
            )
            for row in session.execute(select(WatchedFile)).scalars()
        ]


def save_records(url: str, entries: Sequence[HistoryEntry]) -> None:
    """Insert or update ``entries`` in one transaction (all or none)."""
    with session_scope(url) as session:
        for start in range(0, len(entries), SAVE_CHUNK):
            chunk = {path_to_db(e.path): e for e in entries[start : start + SAVE_CHUNK]}
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
