"""The health check's storage probe: a real write to the document store and to the results database.

A worker whose storage has turned read-only still answers pings, and the disk
still has room, so only writing tells. ``probe_storage`` upserts one row in
the store (``storage_probes``) and stores one result through the Celery app's
own result backend, the way every task does; a write that fails makes health
``critical`` (``storage_failures``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

from background_tasks.settings import Settings
from background_tasks.storage.db import session_scope, sqlite_path, transient_db_errors
from background_tasks.storage.models import StorageProbe
from background_tasks.storage.schema import create_schema

log = logging.getLogger(__name__)

#: the state of the results database's probe row (not a task state; nothing waits for it)
PROBE_STATE = "PROBE"


def _probe_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def _error(exc: BaseException) -> str:
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else type(cause).__name__}"


def _write_store(url: str) -> None:
    with transient_db_errors():
        create_schema(url)
    now = datetime.now(UTC)
    with transient_db_errors(), session_scope(url) as session:
        session.merge(StorageProbe(name=_probe_name(), written_at=now))


def _write_results(app: Any) -> None:
    backend = app.backend
    probe_id = f"midas-storage-probe:{_probe_name()}"
    backend.store_result(probe_id, {"written_at": time.time()}, PROBE_STATE)


def _timed(write: Any, *args: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        write(*args)
    except Exception as exc:  # whatever it is, the storage cannot be written: report it, never raise
        log.warning("storage probe failed: %s", _error(exc))
        return {"ok": False, "error": _error(exc), "ms": round((time.perf_counter() - started) * 1000, 1)}
    return {"ok": True, "error": None, "ms": round((time.perf_counter() - started) * 1000, 1)}


def probe_storage(settings: Settings, app: Any) -> dict[str, dict[str, Any]]:
    """Write to the document store and to the results database now; ok, error and time of each."""
    url = settings.database_url_resolved
    store = _timed(_write_store, url)
    store["where"] = str(sqlite_path(url) or "the PostgreSQL store")
    results = _timed(_write_results, app)
    results["where"] = "the results database"
    return {"store": store, "results": results}


def storage_failures(storage: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(store name, reason) of each write that failed: the health check makes each one critical."""
    return [
        (name, f"{name} ({probe.get('where')}) cannot be written: {probe.get('error')}")
        for name, probe in storage.items()
        if not probe.get("ok")
    ]
