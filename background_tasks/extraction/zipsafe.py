"""Zip-bomb protection for ZIP-based formats (DOCX, XLSX, ODT, ...).

``check_zip`` looks at the central directory *before* anything is inflated:
the sum of declared member sizes and each member's compression ratio. Python's
``zipfile`` never returns more bytes than a member's declared size (a member
that inflates to more fails its CRC check), so once the declared sizes pass the
check, libraries that read the archive themselves (python-docx, openpyxl) are
bounded too. ``read_member`` adds a hard cap on the bytes really read for the
parts MIDAS parses itself, in case a declared size lies.
"""

from __future__ import annotations

import logging
import struct
import zipfile
import zlib
from pathlib import Path

from background_tasks.errors import CorruptDocument, EncryptedDocument, ResourceLimitExceeded

logger = logging.getLogger(__name__)

#: members smaller than this are not ratio-checked: tiny XML parts compress very well legitimately
RATIO_GRACE_BYTES = 1024 * 1024
DEFAULT_MAX_MEMBERS = 20_000
_CHUNK = 64 * 1024

__all__ = [
    "DEFAULT_MAX_MEMBERS",
    "RATIO_GRACE_BYTES",
    "check_zip",
    "open_zip",
    "read_member",
]


def open_zip(path: Path | str) -> zipfile.ZipFile:
    """Open a ZIP archive read-only; a file that is not one (or is truncated) is a ``CorruptDocument``."""
    name = Path(path).name
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise CorruptDocument(f"{name}: not a valid ZIP container ({exc})") from exc
    except (OSError, ValueError, EOFError, NotImplementedError, RuntimeError, zlib.error, struct.error) as exc:
        raise CorruptDocument(f"{name}: cannot read ZIP container ({type(exc).__name__}: {exc})") from exc


def check_zip(
    path: Path | str | zipfile.ZipFile,
    max_total_uncompressed: int,
    max_ratio: float = 200.0,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> list[zipfile.ZipInfo]:
    """Reject an archive whose declared sizes or compression ratios look like a bomb.

    Returns the member list. Raises ``ResourceLimitExceeded`` naming the member
    that breaks a limit, ``CorruptDocument`` if ``path`` is not a ZIP archive.
    """
    if isinstance(path, zipfile.ZipFile):
        return _check_infos(
            path.infolist(), str(path.filename or "archive"), max_total_uncompressed, max_ratio, max_members
        )
    with open_zip(path) as zf:
        return _check_infos(zf.infolist(), Path(path).name, max_total_uncompressed, max_ratio, max_members)


def _check_infos(
    infos: list[zipfile.ZipInfo], label: str, max_total: int, max_ratio: float, max_members: int
) -> list[zipfile.ZipInfo]:
    label = Path(label).name
    if len(infos) > max_members:
        raise ResourceLimitExceeded(f"{label}: archive has {len(infos)} members (limit {max_members})")
    total = 0
    for info in infos:
        size = info.file_size
        if size < 0 or info.compress_size < 0:
            raise CorruptDocument(f"{label}: member {info.filename!r} has a negative size")
        total += size
        if size > max_total:
            raise ResourceLimitExceeded(
                f"{label}: member {info.filename!r} declares {size} bytes uncompressed (limit {max_total})"
            )
        if total > max_total:
            raise ResourceLimitExceeded(
                f"{label}: members up to {info.filename!r} declare {total} bytes uncompressed (limit {max_total})"
            )
        if size > RATIO_GRACE_BYTES:
            ratio = size / max(info.compress_size, 1)
            if ratio > max_ratio:
                raise ResourceLimitExceeded(
                    f"{label}: member {info.filename!r} has compression ratio {ratio:.0f}:1 (limit {max_ratio:.0f}:1)"
                )
    return infos


def read_member(zf: zipfile.ZipFile, name: str | zipfile.ZipInfo, max_bytes: int) -> bytes:
    """Read one member, stopping with ``ResourceLimitExceeded`` once more than ``max_bytes`` real bytes came out.

    A missing member raises ``KeyError`` (callers decide whether it is optional);
    damaged data (bad CRC, broken deflate stream) raises ``CorruptDocument``;
    an encrypted member raises ``EncryptedDocument``.
    """
    info = name if isinstance(name, zipfile.ZipInfo) else zf.getinfo(name)
    label = Path(str(zf.filename or "archive")).name
    if info.flag_bits & 0x1:
        raise EncryptedDocument(f"{label}: member {info.filename!r} is encrypted")
    if info.file_size > max_bytes:
        raise ResourceLimitExceeded(
            f"{label}: member {info.filename!r} declares {info.file_size} bytes (limit {max_bytes})"
        )
    chunks: list[bytes] = []
    got = 0
    try:
        with zf.open(info) as stream:
            while True:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    break
                got += len(chunk)
                if got > max_bytes:
                    raise ResourceLimitExceeded(f"{label}: member {info.filename!r} inflates past {max_bytes} bytes")
                chunks.append(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise CorruptDocument(f"{label}: member {info.filename!r} is damaged ({exc})") from exc
    return b"".join(chunks)
