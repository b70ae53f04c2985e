"""Intake: everything done to a user's file before its content is parsed.

A document is opened exactly once. Its path is resolved and checked against
the allowed folders, then opened component by component without following any
symbolic link, so a file swapped for a link between the check and the open
(time-of-check/time-of-use) is refused instead of read. Size, type of file and
stability come from that descriptor (``fstat``), and the private working copy
is hashed and copied from the same descriptor. The user's original is only
ever opened for reading; everything after intake works on the copy, starting
with ``Intake.identify`` (what the content really is) and ``file_facts``.
"""

from __future__ import annotations

import errno
import mimetypes
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from background_tasks.errors import (
    EmptyDocument,
    FileNotReady,
    FileTooLarge,
    InvalidArgument,
    NoSuchFile,
    PathNotAllowed,
)
from background_tasks.extraction import detect
from background_tasks.processing.copying import copy_hashed
from background_tasks.settings import PROJECT_ROOT, Settings
from background_tasks.sources.s3 import fetch as s3_fetch
from background_tasks.sources.s3.uri import is_s3_uri, parse_object

#: The bundled sample documents (``make run`` submits them); read-only examples, never secrets.
SAMPLES_DIR = PROJECT_ROOT / "samples"

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: Directory components are opened for lookup only (O_PATH needs search, not read, permission).
_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
#: The document itself: read-only, never a link, never blocking on a FIFO, never a controlling tty.
_FILE_FLAGS = (
    os.O_RDONLY
    | _NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
    | _CLOEXEC
)
#: POSIX systems where every component can be opened relative to its parent without following links.
WALK_WITHOUT_LINKS = bool(_NOFOLLOW) and os.open in os.supports_dir_fd


def default_watch_dirs(settings: Settings) -> tuple[Path, ...]:
    """The watcher's folders: MIDAS_WATCH_DIRS, or MIDAS_Uploads plus Downloads and Desktop."""
    if settings.watch_dirs:
        return tuple(settings.watch_dirs)
    home = Path.home()
    return (home / "Documents" / "MIDAS_Uploads", home / "Downloads", home / "Desktop")


def _real(paths: Iterable[Path]) -> tuple[Path, ...]:
    resolved = []
    for path in paths:
        try:
            resolved.append(Path(os.path.realpath(Path(path).expanduser())))
        except (OSError, ValueError):
            continue
    return tuple(dict.fromkeys(resolved))


def allowed_roots(settings: Settings, extra: Iterable[Path] = ()) -> tuple[Path, ...]:
    """Folders documents may be read from: configured roots, watched folders, the inbox, the samples.

    The current directory is not among them: a worker started in the project
    folder would otherwise read its ``.env``, its logs and the Redis files.
    """
    return _real([*settings.allowed_roots, *default_watch_dirs(settings), settings.inbox_dir, SAMPLES_DIR, *extra])


def denied_folders(settings: Settings) -> tuple[Path, ...]:
    """MIDAS's own files, refused even when an allowed root contains them (a root of ``~`` or ``/``)."""
    return _real([settings.data_dir, settings.log_dir])


def _within(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _hidden_below(path: Path, roots: Iterable[Path]) -> str | None:
    """The first dot-file or dot-folder name between the deepest root holding ``path`` and the file."""
    holding = [root for root in roots if path == root or path.is_relative_to(root)]
    if not holding:
        return None
    deepest = max(holding, key=lambda root: len(root.parts))
    return next((part for part in path.relative_to(deepest).parts if part.startswith(".")), None)


def path_argument(raw_path: object) -> str:
    """The path a task was given, or ``InvalidArgument``: JSON can carry ``None``, numbers and lists too."""
    if isinstance(raw_path, os.PathLike):
        raw_path = os.fspath(raw_path)
    if not isinstance(raw_path, str):
        raise InvalidArgument(f"a file path must be a string, not {type(raw_path).__name__} ({raw_path!r:.80})")
    if "\x00" in raw_path:
        raise InvalidArgument(f"{raw_path!r:.200} contains a NUL byte; no file can have that name")
    if not raw_path.strip():
        raise InvalidArgument("empty path")
    return raw_path


def anchor_path(value: object) -> object:
    """A relative path made absolute against this process's directory, for a sender to send.

    The worker's directory is not the sender's: ``.delay("report.pdf")`` means the sender's
    ``report.pdf``. Not normalised (``..`` after a link means what the system says); anything
    that is not a usable path string is returned as it is, for the worker to refuse.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip() or "\x00" in value or is_s3_uri(value):
        return value  # an s3:// URI names an object, the same from every host
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return expanded
    try:
        return os.path.join(os.getcwd(), expanded)
    except OSError:  # the sender's directory was removed: leave it to the worker to say
        return value


def _said(text: str, resolved: Path) -> str:
    """The path as given, and where it was resolved to when that differs: every path error says where it looked."""
    return text if text == str(resolved) else f"{text} (resolved to {resolved})"


def check_path(raw_path: object, settings: Settings, extra_roots: Iterable[Path] = ()) -> Path:
    """Resolve and vet a path; return the real path of a file we may read.

    The root is checked before anything about the file is said, so a sender
    cannot learn whether a path outside the allowed folders exists: outside them
    the error names the path resolved by name only (never following a link).
    This is the check by name; ``open_document`` repeats it on the descriptor.
    """
    text = path_argument(raw_path)
    given = Path(text).expanduser()
    if not given.is_absolute():
        given = Path.cwd() / given
    by_name = Path(os.path.normpath(given))
    try:
        real = Path(os.path.realpath(given))  # non-strict: a missing file still gets its root checked
    except (OSError, ValueError) as exc:
        raise PathNotAllowed(f"{_said(text, by_name)}: cannot resolve path ({exc})") from None
    roots = allowed_roots(settings, extra_roots)
    own_files = _within(real, denied_folders(settings)) and not _within(real, _real([settings.inbox_dir]))
    if own_files or not _within(real, roots):
        raise PathNotAllowed(
            f"{_said(text, by_name)} is outside the allowed folders; add its folder to MIDAS_ALLOWED_ROOTS to allow it"
        )
    label = _said(text, real)
    hidden = _hidden_below(real, roots)
    if hidden is not None:
        raise PathNotAllowed(f"{label}: hidden files and folders ({hidden}) are not read")
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise NoSuchFile(f"{label}: no such file") from None
    except NotADirectoryError:
        raise NoSuchFile(f"{label}: no such file (a part of its path is a file, not a folder)") from None
    except OSError as exc:
        raise PathNotAllowed(f"{label}: cannot read it ({exc.strerror})") from None
    _refuse_special(label, mode)
    return real


def _refuse_special(label: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise PathNotAllowed(f"{label} is a directory; use process_document_batch for many files")
    if not stat.S_ISREG(mode):
        if stat.S_ISFIFO(mode):
            kind = "FIFO"
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = "device"
        else:
            kind = "special file"
        raise PathNotAllowed(f"{label} is a {kind}, not a regular file")


def _link_on_path(real: Path) -> bool:
    """Whether the file or a folder above it is a symbolic link now (it was checked link-free)."""
    return any(os.path.islink(part) for part in (real, *real.parents))


def _open_without_links(real: Path) -> int:
    """Open an already resolved path from ``/`` down, refusing a symbolic link at any component."""
    parts = real.parts
    fd = os.open(parts[0], _DIR_FLAGS)
    try:
        for part in parts[1:-1]:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)


def _open_checked_by_handle(real: Path) -> int:
    """Where components cannot be walked (Windows): open, then prove the handle is the file we checked."""
    fd = os.open(real, _FILE_FLAGS)
    try:
        by_name = os.stat(real, follow_symlinks=False)
        by_handle = os.fstat(fd)
        if stat.S_ISLNK(by_name.st_mode) or (by_name.st_dev, by_name.st_ino) != (by_handle.st_dev, by_handle.st_ino):
            raise OSError(errno.ELOOP, "the file was replaced while it was opened")
        if Path(os.path.realpath(real)) != real:
            raise OSError(errno.ELOOP, "a folder on the path was replaced while it was opened")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_without_links(path: Path) -> int:
    """A read-only descriptor of ``path``, refusing a link as the file or on the way to it (its folder may be one).

    For code that reads files in watched folders without the full check (the watcher's hashing).
    """
    real = Path(os.path.realpath(Path(path).parent)) / Path(path).name
    return _open_without_links(real) if WALK_WITHOUT_LINKS else _open_checked_by_handle(real)


@dataclass(frozen=True)
class OpenedFile:
    """A document opened once: its real path inside an allowed root, the descriptor and its ``fstat``."""

    path: Path
    fd: int
    stat: os.stat_result


@contextmanager
def open_document(raw_path: object, settings: Settings, extra_roots: Iterable[Path] = ()) -> Iterator[OpenedFile]:
    """Check the path, open it without following links, and vet what was opened; close it afterwards."""
    real = check_path(raw_path, settings, extra_roots)
    label = _said(str(raw_path), real)
    try:
        fd = _open_without_links(real) if WALK_WITHOUT_LINKS else _open_checked_by_handle(real)
    except OSError as exc:
        # O_NOFOLLOW gives ELOOP on a link, and ENOTDIR with O_DIRECTORY: say "link" only when one is there.
        if exc.errno in (errno.ELOOP, errno.EMLINK) or (exc.errno == errno.ENOTDIR and _link_on_path(real)):
            raise PathNotAllowed(
                f"{label}: a symbolic link appeared on its path while it was being opened; not read"
            ) from None
        if exc.errno == errno.ENOTDIR:
            raise PathNotAllowed(
                f"{label}: a folder on its path was replaced while it was being opened; not read"
            ) from None
        if exc.errno == errno.ENOENT:
            raise NoSuchFile(f"{label}: no such file (it went away while it was being opened)") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EBUSY):
            raise FileNotReady(f"{real.name} cannot be read now ({exc.strerror})") from None
        raise
    try:
        st = os.fstat(fd)
        _refuse_special(label, st.st_mode)
        yield OpenedFile(real, fd, st)
    finally:
        os.close(fd)


def check_size(opened: OpenedFile, settings: Settings) -> int:
    """Reject a file larger than MIDAS_MAX_FILE_MB before reading any of it."""
    size = opened.stat.st_size
    if size > settings.max_file_bytes:
        raise FileTooLarge(
            f"{opened.path.name} is {size / 1024 / 1024:.1f} MB; "
            f"the limit is {settings.max_file_mb:g} MB (MIDAS_MAX_FILE_MB)"
        )
    return size


def _locked_on_windows(path: Path) -> bool:
    """A sharing violation means another program still holds the file open for writing."""
    if os.name != "nt":
        return False
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    except PermissionError:
        return True
    except OSError:
        return False
    os.close(fd)
    return False


def ensure_complete(opened: OpenedFile, stability_seconds: float) -> None:
    """Raise FileNotReady while the file may still be being written.

    POSIX has no mandatory locks, so "complete" means: size and mtime did not
    change for ``stability_seconds``. A file older than the window passes at
    once; a fresh one is watched (on its descriptor) for the rest of the window.
    """
    if _locked_on_windows(opened.path):
        raise FileNotReady(f"{opened.path.name} is locked by another program")
    if stability_seconds <= 0:
        return
    before = opened.stat
    age = time.time() - before.st_mtime
    if age >= stability_seconds:
        return
    time.sleep(min(stability_seconds - age, stability_seconds))
    after = os.fstat(opened.fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise FileNotReady(f"{opened.path.name} is still being written (size or time changed)")


@dataclass(frozen=True)
class WorkingCopy:
    path: Path
    sha256: str
    size: int


@contextmanager
def working_copy(opened: OpenedFile, settings: Settings, max_bytes: int) -> Iterator[WorkingCopy]:
    """Copy the opened file into a private folder, hashing on the way; remove the copy afterwards.

    Reads at most ``max_bytes + 1`` bytes, so a file that grew past the limit
    after the size check is still refused.
    """
    settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(tempfile.mkdtemp(prefix="doc-", dir=settings.work_dir))
    # Same name as the original, so parsers' messages name the user's file.
    target = folder / opened.path.name
    try:
        try:
            os.lseek(opened.fd, 0, os.SEEK_SET)
            with open(opened.fd, "rb", closefd=False) as src, target.open("wb") as dst:
                sha256, size = copy_hashed(src, dst, max_bytes, opened.path.name)
        except PermissionError as exc:
            raise FileNotReady(f"{opened.path.name} cannot be read now ({exc.strerror})") from None
        yield WorkingCopy(target, sha256, size)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class FileKind:
    """What a document is processed as: the extension its content agrees with, and its MIME type."""

    extension: str
    mime_type: str

    @property
    def file_type(self) -> str:
        return self.extension.lstrip(".")


@dataclass(frozen=True)
class Intake:
    """A vetted document: where it really is, what ``fstat`` said of it, and its private copy.

    An object from a store has ``source`` (its ``s3://`` URI), an ``original`` of just its
    safe file name, a ``stat`` made from its head, and ``facts`` (ETag, version) for its metadata.
    """

    original: Path
    stat: os.stat_result
    copy: Path
    sha256: str
    size: int
    source: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """What results and the paths table record: the real local path, or the object's URI."""
        return self.source or str(self.original)

    def identify(self, *, refuse_empty: bool = False) -> FileKind:
        """The copy's real type (``TypeMismatch``, ``EncryptedDocument``... when it cannot be processed).

        A separate step rather than part of ``take_in``: a file refused here is
        recorded with what intake already knows of it (real path, hash, size).
        ``refuse_empty`` refuses a 0-byte file before its content is looked at.
        """
        if refuse_empty and self.size == 0:
            raise EmptyDocument(f"{self.original.name} is empty (0 bytes)")
        extension, mime_type = detect.resolve_extension(self.copy, self.original.suffix.lower())
        return FileKind(extension, mime_type)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def file_facts(intake: Intake, mime_type: str | None) -> dict[str, Any]:
    """Metadata every file has, whatever its format (times from the descriptor intake opened)."""
    original, st, sha256, size = intake.original, intake.stat, intake.sha256, intake.size
    return {
        "file_name": original.name,
        "extension": original.suffix.lower(),
        "mime_type": mime_type or mimetypes.guess_type(original.name)[0] or "application/octet-stream",
        "size_bytes": size,
        "sha256": sha256,
        "modified_at": _iso(st.st_mtime),
        "created_at": _iso(getattr(st, "st_birthtime", st.st_ctime)),
        **intake.facts,
    }


@contextmanager
def take_in(
    raw_path: object, settings: Settings, *, wait_until_complete: bool = True, extra_roots: Iterable[Path] = ()
) -> Iterator[Intake]:
    """The one intake step of every task that reads a user's file: check, open once, size, stability, copy.

    An ``s3://`` URI is streamed from the object store instead (``take_in_object``). The stability
    wait is skipped when the caller vouches the file is complete (``wait_until_complete=False``)
    and for files in the inbox: MIDAS writes those itself (uploads, mail attachments) and closes
    them before their task is sent.
    """
    if is_s3_uri(raw_path):
        with take_in_object(str(raw_path), settings) as intake:
            yield intake
        return
    with open_document(raw_path, settings, extra_roots) as opened:
        check_size(opened, settings)
        if wait_until_complete and not _within(opened.path, _real([settings.inbox_dir])):
            ensure_complete(opened, settings.stability_seconds)
        with working_copy(opened, settings, settings.max_file_bytes) as copy:
            yield Intake(opened.path, opened.stat, copy.path, copy.sha256, copy.size)


@contextmanager
def take_in_object(uri: str, settings: Settings) -> Iterator[Intake]:
    """An object of a store, streamed into a private folder (size checked from its head first); removed afterwards.

    Objects are written whole, so there is no stability wait; the object's own time stands in for the file's.
    """
    location = parse_object(path_argument(uri))
    settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(tempfile.mkdtemp(prefix="obj-", dir=settings.work_dir))
    try:
        got = s3_fetch.fetch(location, settings, folder, settings.max_file_bytes)
        when = got.last_modified.timestamp()
        st = os.stat_result((stat.S_IFREG | 0o400, 0, 0, 1, 0, 0, got.size, when, when, when))
        yield Intake(Path(got.path.name), st, got.path, got.sha256, got.size, location.uri, got.facts(location))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
