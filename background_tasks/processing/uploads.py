"""Uploaded files into the inbox: a safe name, a fresh file, never more than MIDAS_MAX_FILE_MB.

Shared by the dashboard's upload and the HTTP API's ``POST /documents``, so a file
sent either way lands the same: under ``data/inbox`` (an allowed folder of every
worker), mode 0600, under the name the sender gave made plain (no folders, no
control characters, no leading dots) and never over an existing file.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import BinaryIO

from background_tasks.errors import FileTooLarge
from background_tasks.settings import Settings

_UNSAFE_NAME = re.compile(r"[^\w.\- ()+,]+", re.UNICODE)
#: bytes copied at a time from an upload into its inbox file
COPY_BLOCK = 1024 * 1024
#: names tried (``name``, ``name-1``, ...) before giving up
MAX_NAME_TRIES = 1000


def safe_upload_name(filename: str) -> str:
    """A plain file name from what a browser sent: no folders, no control characters, no leading dots."""
    name = Path(str(filename).replace("\\", "/")).name
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    stem, suffix = os.path.splitext(name)
    stem, suffix = stem[:150], suffix[:20]
    return (stem or "upload") + suffix


def _too_large(settings: Settings, name: str, size: str) -> FileTooLarge:
    return FileTooLarge(f"{name} is {size}; the limit is {settings.max_file_mb:g} MB (MIDAS_MAX_FILE_MB)")


def _create_fresh(inbox: Path, name: str) -> tuple[Path, int]:
    """A new 0600 file in ``inbox`` under ``name`` or ``stem-N.suffix`` (never an existing one)."""
    stem, suffix = os.path.splitext(name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for attempt in range(MAX_NAME_TRIES):
        candidate = inbox / (name if attempt == 0 else f"{stem}-{attempt}{suffix}")
        try:
            return candidate, os.open(candidate, flags, 0o600)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for {name} in {inbox}")


def save_upload_stream(settings: Settings, filename: str, source: BinaryIO) -> Path:
    """Copy ``source`` into a fresh inbox file, counting bytes; over the limit it is removed and ``FileTooLarge``.

    Returns the file's resolved path.
    """
    inbox = settings.inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    name = safe_upload_name(filename)
    path, fd = _create_fresh(inbox, name)
    written = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            while block := source.read(COPY_BLOCK):
                written += len(block)
                if written > settings.max_file_bytes:
                    raise _too_large(settings, name, f"over {settings.max_file_mb:g} MB")
                handle.write(block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path.resolve()


def save_upload(settings: Settings, filename: str, data: bytes) -> Path:
    """Write an uploaded file into the inbox under a fresh name (never overwriting); returns its path."""
    if len(data) > settings.max_file_bytes:
        raise _too_large(settings, safe_upload_name(filename), f"{len(data) / (1024 * 1024):.1f} MB")
    return save_upload_stream(settings, filename, io.BytesIO(data))
