"""Submit a local file for processing from Python, on one host or many.

from background_tasks.submit import submit
submit("local/file.pdf").get(timeout=60)

With MIDAS_OBJECT_STORE set the file is staged first (uploaded once under its SHA-256) and
the task carries its ``s3://`` URI, so a worker on another host can read it; without it the
task carries the local path, as ``process_document_file.delay`` does. Either way the message
goes through the app's publish, so it is in the intake ledger.
"""

from __future__ import annotations

import os
from typing import Any

from background_tasks import keys
from background_tasks.settings import Settings, get_settings
from background_tasks.sources.s3.staging import stage


def submit(
    path: str | os.PathLike[str], *, settings: Settings | None = None, app: Any = None, task_id: str | None = None
) -> Any:
    """Send ``process_document_file`` for ``path``; returns the task's AsyncResult. S3 errors raise MidasError."""
    settings = settings or get_settings()
    if app is None:
        from celery_config import app
    target = stage(path, settings).target
    return app.send_task(keys.PROCESS_DOCUMENT_FILE, args=[target], task_id=task_id)
