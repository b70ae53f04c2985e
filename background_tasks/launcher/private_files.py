"""Folders and files only their owner can read (POSIX): MIDAS's data, logs, PID files and secrets.

The data folder holds task messages (Redis's append-only file), documents'
text, results and the generated Redis password; logs hold task arguments. So
MIDAS creates its folders 0700 and its files 0600, tightens folders it finds
looser, and starts its services with umask 077 so that what they write (Redis's
files, logs, Celery's schedule) is private too. On Windows files inherit the
ACL of the user's profile folders; nothing here changes them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

POSIX = os.name == "posix"
DIR_MODE = 0o700
FILE_MODE = 0o600
SERVICE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make ``path`` itself 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if POSIX:
        os.chmod(path, DIR_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` that creates the file 0600 and makes an existing one 0600 too."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    if POSIX:
        with contextlib.suppress(OSError):
            os.fchmod(fd, FILE_MODE)
    return fd


def write_private_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text`` in a 0600 file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def append_private_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path``, which is (or becomes) 0600."""
    fd = open_private(path, os.O_WRONLY | os.O_APPEND)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(text)


def read_or_create_secret(path: Path) -> str:
    """The secret stored in ``path``; on first use a new random one, written 0600 (exclusive create)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
        raise ValueError(f"{path} is empty; delete it to have a new secret generated") from None
    value = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    return value


def service_spawn_kwargs() -> dict[str, Any]:
    """``subprocess.Popen`` arguments that make a service's own files private (umask 077 on POSIX)."""
    return {"umask": SERVICE_UMASK} if POSIX else {}
