"""Keeps a worker's main process writing to the store, as its history writer does under load.

Loaded into a test worker through MIDAS_EXTRA_TASK_MODULES (``test_fork_guard``): from
``worker_init`` on, a thread of the main process holds the store's write lock most of the time,
so Celery's pool forks its processes in the middle of write transactions.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import signals
from sqlalchemy import text

from background_tasks.settings import get_settings
from background_tasks.storage import db

_stop = threading.Event()


def _write_forever() -> None:
    url = get_settings().database_url_resolved
    with db.session_scope(url) as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS busy_main (id INTEGER PRIMARY KEY, at REAL)"))
    while not _stop.is_set():
        with db.session_scope(url) as session:
            session.execute(text("INSERT INTO busy_main (at) VALUES (:at)"), {"at": time.time()})
            time.sleep(0.02)
        time.sleep(0.005)


def _start(**_: Any) -> None:
    threading.Thread(target=_write_forever, name="busy-main-writer", daemon=True).start()


def _stop_writing(**_: Any) -> None:
    _stop.set()


signals.worker_init.connect(_start, weak=False, dispatch_uid="tests.busy_main_process.start")
signals.worker_shutdown.connect(_stop_writing, weak=False, dispatch_uid="tests.busy_main_process.stop")
