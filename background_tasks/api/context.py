"""What every route of one API app shares: its settings, the document store, and the Celery app it sends with.

One ``ApiContext`` per app (``app.state.midas``), built by ``create_app``; the store is
kept for the app's life so its search caches (the embedding model, the vector matrix)
are loaded once, not per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fastapi import Request

from background_tasks.settings import Settings
from background_tasks.storage.store import DocumentStore


@dataclass
class ApiContext:
    """Settings, store and Celery app of one API app (the Celery app is made on first use when not given)."""

    settings: Settings
    celery_app: Any = None

    @property
    def url(self) -> str:
        """The store's (and the ledger's, and the task history's) database."""
        return self.settings.database_url_resolved

    @cached_property
    def store(self) -> DocumentStore:
        store = DocumentStore(self.url)
        store.create_schema()
        return store

    @property
    def app(self) -> Any:
        """The Celery app tasks are sent with (publishing through it writes the intake ledger)."""
        if self.celery_app is None:
            import celery_config

            self.celery_app = celery_config.create_app(self.settings)
        return self.celery_app


def get_context(request: Request) -> ApiContext:
    """FastAPI dependency: the context of the app serving ``request``."""
    return request.app.state.midas
