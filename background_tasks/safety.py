"""Checks made before a document's content is read, and the private working copy.

The user's original file is only ever opened for reading, once, to copy it.
Everything after that works on the copy in the data dir.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from background_tasks.errors import FileNotReady, FileTooLarge, PathNotAllowed
from background_tasks.settings import Settings

COPY_BUFFER = 1024 * 1024


def default_watch_dirs(settings: Settings) -> tuple[Path, ...]:
    """The watcher's folders: MIDAS_WATCH_DIRS, or MIDAS_Uploads plus Downloads and Desktop."""
    if settings.watch_dirs:
        return tuple(settings.watch_dirs)
    home = Path.home()
    return (home / "Documents" / "MIDAS_Uploads", home / "Downloads", home / "Desktop")


def allowed_roots(settings: Settings, extra: Iterable[Path] = ()) -> tuple[Path, ...]:
    """Folders documents may be read from: configured roots, watched folders, the inbox, the cwd."""
    roots = [*settings.allowed_roots, *default_watch_dirs(settings), settings.inbox_dir, Path.cwd(), *extra]
    resolved = []
    for root in roots:
        try:
            resolved.append(Path(root).resolve())
        except OSError:
            continue
    return tuple(dict.fromkeys(resolved))


def _within(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_path(raw_path: str | os.PathLike[str], settings: Settings, extra_roots: Iterable[Path] = ()) -> Path:
    """Resolve and vet a path; return the real path of a regular file we may read.

    Rejected: missing files, anything outside the allowed roots (also through a
    symlink that escapes them), directories, devices, FIFOs and sockets.
    """
    if not str(raw_path).strip():
        raise PathNotAllowed("empty path")
    given = Path(raw_path).expanduser()
    if not given.is_absolute():
        given = Path.cwd() / given
    try:
        real = given.resolve(strict=True)
    except FileNotFoundError:
        raise PathNotAllowed(f"{raw_path}: no such file") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
        raise PathNotAllowed(f"{raw_path}: cannot resolve path ({exc})") from None
    roots = allowed_roots(settings, extra_roots)
    if not _within(real, roots):
        via = f" (a link to {real})" if real != given.absolute() else ""
        raise PathNotAllowed(
            f"{raw_path}{via} is outside the allowed folders; add its folder to MIDAS_ALLOWED_ROOTS to allow it"
        )
    mode = real.stat().st_mode
    if stat.S_ISDIR(mode):
        raise PathNotAllowed(f"{raw_path} is a directory; use process_document_batch for many files")
    if not stat.S_ISREG(mode):
        if stat.S_ISFIFO(mode):
            kind = "FIFO"
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = "device"
        else:
            kind = "special file"
        raise PathNotAllowed(f"{raw_path} is a {kind}, not a regular file")
    return real


def check_size(path: Path, settings: Settings) -> int:
    """Reject a file larger than MIDAS_MAX_FILE_MB before reading any of it."""
    size = path.stat().st_size
    limit = int(settings.max_file_mb * 1024 * 1024)
    if size > limit:
        raise FileTooLarge(
            f"{path.name} is {size / 1024 / 1024:.1f} MB; the limit is {settings.max_file_mb:g} MB (MIDAS_MAX_FILE_MB)"
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


def ensure_complete(path: Path, stability_seconds: float) -> None:
    """Raise FileNotReady while the file may still be being written.

    POSIX has no mandatory locks, so "complete" means: size and mtime did not
    change for ``stability_seconds``. A file older than the window passes at
    once; a fresh one is watched for the rest of the window (at most that long).
    """
    if _locked_on_windows(path):
        raise FileNotReady(f"{path.name} is locked by another program")
    if stability_seconds <= 0:
        return
    before = path.stat()
    age = time.time() - before.st_mtime
    if age >= stability_seconds:
        return
    time.sleep(min(stability_seconds - age, stability_seconds))
    after = path.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise FileNotReady(f"{path.name} is still being written (size or time changed)")


@dataclass(frozen=True)
class WorkingCopy:
    path: Path
    sha256: str
    size: int


@contextmanager
def working_copy(original: Path, settings: Settings, max_bytes: int) -> Iterator[WorkingCopy]:
    """Copy ``original`` into a private folder, hashing on the way; remove the copy afterwards.

    Reads at most ``max_bytes + 1`` bytes, so a file that grew past the limit
    after the size check is still refused.
    """
    settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(tempfile.mkdtemp(prefix="doc-", dir=settings.work_dir))
    # Same name as the original, so parsers' messages name the user's file.
    target = folder / original.name
    digest = hashlib.sha256()
    size = 0
    try:
        try:
            with original.open("rb") as src, target.open("wb") as dst:
                while chunk := src.read(COPY_BUFFER):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FileTooLarge(f"{original.name} grew beyond the {max_bytes / 1024 / 1024:g} MB limit")
                    digest.update(chunk)
                    dst.write(chunk)
        except PermissionError as exc:
            raise FileNotReady(f"{original.name} cannot be read now ({exc.strerror})") from None
        yield WorkingCopy(target, digest.hexdigest(), size)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_BUFFER):
            digest.update(chunk)
    return digest.hexdigest()
