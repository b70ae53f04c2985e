"""Objects embedded in a legacy .doc: the storages of its ``ObjectPool``.

Word keeps every embedded object (an Excel chart or sheet, a Word document,
a PDF, a file dropped in as a package, a PowerPoint slide) as a storage of
the compound file, ``ObjectPool/_<id>/``. A Word 97-2003 document in there
is read with the built-in reader; the other files are unwrapped
(``ole_objects.storage_payload``) and read through the registry; formats
without a reader are listed only. ``EmbeddedFiles`` holds the limits.
"""

from __future__ import annotations

import logging
from typing import Any

from background_tasks.errors import MidasError
from background_tasks.extraction.extractors.embedded import EmbeddedFiles
from background_tasks.extraction.extractors.ole_objects import class_name, storage_payload
from background_tasks.extraction.extractors.word.common import tidy
from background_tasks.extraction.extractors.word.word97 import Word97Reader

logger = logging.getLogger(__name__)

OBJECT_POOL = "ObjectPool"


class _Storage:
    """One storage of a compound file seen as a file of its own, as ``Word97Reader`` reads one."""

    def __init__(self, ole: Any, prefix: str) -> None:
        self.ole = ole
        self.prefix = prefix

    def exists(self, name: str) -> bool:
        return bool(self.ole.exists(self.prefix + name))

    def openstream(self, name: str) -> Any:
        return self.ole.openstream(self.prefix + name)


def object_storages(ole: Any) -> list[str]:
    """``ObjectPool/_<id>/`` of every object the document embeds, in the order they were added."""
    names = {
        entry[1] for entry in ole.listdir(streams=True, storages=True) if len(entry) > 2 and entry[0] == OBJECT_POOL
    }
    return [f"{OBJECT_POOL}/{name}/" for name in sorted(names)]


def read_objects(ole: Any, embedded: EmbeddedFiles) -> None:
    """Read every object of the ObjectPool of an open ``olefile.OleFileIO`` into ``embedded``."""
    limit = embedded.limits.max_decompressed_bytes
    for storage in object_storages(ole):
        name = class_name(ole, storage) or storage.rstrip("/").rsplit("/", 1)[-1]
        try:
            if ole.exists(storage + "WordDocument"):
                size = ole.get_size(storage + "WordDocument")
                if embedded.room_for(name, size):
                    embedded.add_text(name, tidy(Word97Reader(_Storage(ole, storage)).text()))
                continue
            payload = storage_payload(ole, storage, name, limit)
        except OverflowError:
            embedded.room_for(name, limit + 1)  # says it is too large
            continue
        except MidasError as exc:
            embedded.warnings.append(f"embedded object {name!r} not read: {exc.message}")
            continue
        except Exception as exc:  # a damaged object costs itself only
            logger.info("embedded object %r unreadable: %s", name, exc)
            embedded.warnings.append(f"embedded object {name!r} not read: {type(exc).__name__}: {exc}")
            continue
        if payload is None:
            embedded.names.append(name)  # PowerPoint, pictures, equations: listed
            continue
        embedded.add_file(payload.name, payload.data, payload.extension, filename=payload.name)
