"""What a worker process does around its tasks: load the parsers before the pool forks, hand freed
memory back after a document.

Plain functions; ``background_tasks.worker_signals`` connects them to Celery's signals.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
from typing import Any

from background_tasks import keys
from background_tasks.processing import extract

log = logging.getLogger(__name__)

#: task names whose runs may leave a large freed heap behind (documents up to the size limit)
DOCUMENT_TASK_PREFIX = keys.DOCUMENT_TASKS + "."


def preload_modules(with_pandas: bool = True) -> list[str]:
    """Import the image library (and pandas, for the analysis queue) once, so parser processes inherit them.

    Data profiles and OCR run in parser processes; without this each would import pandas on its first file.
    The PDF renderer (pypdfium2) is among the parsers ``extract.preload_parsers`` loads. Returns
    what could not be imported.
    """
    names = ["PIL.Image"]  # OCR also runs inside document tasks
    if with_pandas:
        names = ["numpy", "pandas", *names]
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def preload_worker(consumed_queues: set[str]) -> None:
    """In the worker's main process, before the pool forks: parsers load once, not per task."""
    missing = preload_modules(with_pandas="analysis" in consumed_queues) + extract.preload_parsers()
    if missing:
        log.warning("optional libraries not available: %s", ", ".join(missing))
    # Keep the garbage collector off the preloaded objects: otherwise every pool process soon
    # holds a private copy of pages it could share with the main process (copy-on-write).
    gc.collect()
    gc.freeze()


_LIBC: Any = None


def return_freed_memory(task_name: str) -> None:
    """After a document task, hand freed heap pages back to the OS (glibc keeps them otherwise),
    so a worker that just processed a 90 MB file drops back to its idle size."""
    global _LIBC
    if not task_name.startswith(DOCUMENT_TASK_PREFIX) or _LIBC is False:
        return
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        _LIBC = False
