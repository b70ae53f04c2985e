"""Copying a document's bytes into its working copy, hashed on the way and capped.

Shared by the local intake (from the descriptor it opened) and the object store's fetch
(from the response body), so both refuse content that grew past the limit the same way.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO, Protocol

from background_tasks.errors import FileTooLarge

COPY_BUFFER = 1024 * 1024


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def copy_hashed(src: Readable, dst: BinaryIO, max_bytes: int, label: str) -> tuple[str, int]:
    """Copy ``src`` to ``dst``; the SHA-256 and size of what was copied. Reads at most ``max_bytes + 1`` bytes."""
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(COPY_BUFFER):
        size += len(chunk)
        if size > max_bytes:
            raise FileTooLarge(f"{label} grew beyond the {max_bytes / 1024 / 1024:g} MB limit")
        digest.update(chunk)
        dst.write(chunk)
    return digest.hexdigest(), size
