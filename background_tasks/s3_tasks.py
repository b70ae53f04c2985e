"""S3 tasks (queue ``default``): the Beat task that lists MIDAS_S3_SOURCES and submits what is new.

from background_tasks.s3_tasks import list_s3_sources
list_s3_sources.delay().get(timeout=60)
"""

from __future__ import annotations

from typing import Any

from background_tasks import keys
from background_tasks.settings import get_settings
from background_tasks.sources.s3.source import list_source
from celery_config import app


def _send(uri: str, task_id: str) -> Any:
    """Through the app's publish, so every submission is in the ledger; routed to ``documents``."""
    return app.send_task(keys.PROCESS_DOCUMENT_FILE, args=[uri], task_id=task_id)


@app.task(name=keys.LIST_S3_SOURCES)
def list_s3_sources() -> dict[str, Any]:
    """List every configured prefix once; per prefix what was listed, submitted, failed and deleted."""
    settings = get_settings()
    return {"sources": [list_source(source, settings, _send).as_dict() for source in settings.s3_sources]}
