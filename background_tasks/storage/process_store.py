"""The document store of this process: one engine and pool per worker process, created on first use."""

from __future__ import annotations

from functools import lru_cache

from background_tasks.settings import get_settings
from background_tasks.storage.store import DocumentStore


@lru_cache(maxsize=1)
def process_store() -> DocumentStore:
    settings = get_settings()
    # A row still "processing" is taken over only after the broker would have redelivered its task.
    store = DocumentStore(settings.database_url_resolved, stale_after_s=settings.visibility_timeout)
    store.create_schema()
    return store
